//! The admin's endpoints for orgs, spaces and security groups (`/v1/orgs`, `/v1/spaces`,
//! `/v1/security_groups`). A change to a group or a binding bumps the revision: every cell's
//! watch wakes and enforces it on running containers without a restart.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tracing::info;

use c2c_api::asg::{validate, Lifecycle};
use c2c_api::endpoints::Endpoint;
use c2c_api::types::{
    BindingChanged, BindingRequest, NewOrg, NewSecurityGroup, NewSpace, OrgList, SecurityGroupList,
    SetSpaceQuota, SpaceList, SpaceQuotaList,
};

use crate::ctx::Ctx;
use crate::http::{error, json_body, query, state_error, typed, ReqBody};
use crate::state::StateError;

/// Answers one of these endpoints (the caller is the admin: [`crate::authz`]).
pub(crate) async fn answer<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    ep: &Endpoint,
) -> Response<Full<Bytes>> {
    match ep {
        Endpoint::ListOrgs => match ctx.with_state(|s| s.orgs()).await {
            Ok(orgs) => typed(StatusCode::OK, &OrgList { orgs }),
            Err(e) => state_error(e),
        },
        Endpoint::CreateOrg => {
            let n: NewOrg = match json_body(req, "{\"name\": \"...\"}").await {
                Ok(n) => n,
                Err(r) => return r,
            };
            match ctx.with_state(move |s| s.create_org(&n.name)).await {
                Ok(o) => {
                    info!(org = %o.name, guid = %o.guid, "org created");
                    typed(StatusCode::CREATED, &o)
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListSpaces => {
            let org = query(&req).get("org").cloned();
            match ctx.with_state(move |s| s.spaces(org.as_deref())).await {
                Ok(spaces) => typed(StatusCode::OK, &SpaceList { spaces }),
                Err(e) => state_error(e),
            }
        }
        Endpoint::CreateSpace => {
            let n: NewSpace = match json_body(req, "{\"org\": \"...\", \"name\": \"...\"}").await {
                Ok(n) => n,
                Err(r) => return r,
            };
            match ctx
                .with_state(move |s| s.create_space(&n.org, &n.name))
                .await
            {
                Ok(sp) => {
                    info!(org = %sp.org, space = %sp.name, guid = %sp.guid, "space created");
                    typed(StatusCode::CREATED, &sp)
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListSpaceQuotas => match ctx.with_state(|s| s.space_quotas()).await {
            Ok(quotas) => typed(StatusCode::OK, &SpaceQuotaList { quotas }),
            Err(e) => state_error(e),
        },
        Endpoint::SetSpaceQuota => {
            let q: SetSpaceQuota = match json_body(
                req,
                "{\"org\": \"...\", \"space\": \"...\", \"max_apps\": N, \"max_instances\": N, \"max_routes\": N}",
            )
            .await
            {
                Ok(q) => q,
                Err(r) => return r,
            };
            match ctx
                .with_state(move |s| {
                    s.set_space_quota(&q.org, &q.space, q.max_apps, q.max_instances, q.max_routes)
                })
                .await
            {
                Ok(q) => {
                    info!(org = %q.org, space = %q.space, max_apps = q.max_apps, max_instances = q.max_instances, max_routes = q.max_routes, "space quota set");
                    typed(StatusCode::OK, &q)
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListSecurityGroups => match ctx.with_state(|s| s.security_groups()).await {
            Ok(security_groups) => typed(StatusCode::OK, &SecurityGroupList { security_groups }),
            Err(e) => state_error(e),
        },
        Endpoint::GetSecurityGroup(name) => {
            let name = name.to_string();
            match ctx.with_state(move |s| s.security_group(&name)).await {
                Ok(g) => typed(StatusCode::OK, &g),
                Err(e) => state_error(e),
            }
        }
        Endpoint::CreateSecurityGroup | Endpoint::UpdateSecurityGroup(_) => {
            let (create, path_name) = match ep {
                Endpoint::UpdateSecurityGroup(n) => (false, Some(n.clone())),
                _ => (true, None),
            };
            let n: NewSecurityGroup =
                match json_body(req, "{\"name\": \"...\", \"rules\": [...]}").await {
                    Ok(n) => n,
                    Err(r) => return r,
                };
            let rules = match validate(&n.rules) {
                Ok(r) => r,
                // CF answers 422 with every message.
                Err(msgs) => return error(StatusCode::UNPROCESSABLE_ENTITY, msgs.join(", ")),
            };
            let name = path_name.unwrap_or(n.name);
            let result = ctx
                .with_state(move |s| {
                    if create {
                        s.create_security_group(&name, &rules)
                    } else {
                        s.update_security_group(&name, &rules)?;
                        s.security_group(&name)
                    }
                })
                .await;
            match result {
                Ok(g) => {
                    info!(group = %g.name, rules = g.rules.len(), create, "security group written");
                    typed(
                        if create {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        &g,
                    )
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::DeleteSecurityGroup(name) => {
            let n = name.to_string();
            match ctx.with_state(move |s| s.delete_security_group(&n)).await {
                Ok(true) => {
                    info!(group = %name, "security group deleted");
                    typed(StatusCode::OK, &c2c_api::types::Empty {})
                }
                Ok(false) => state_error(StateError::NotFound(format!(
                    "Security group '{name}' not found."
                ))),
                Err(e) => state_error(e),
            }
        }
        Endpoint::BindSecurityGroup(name) | Endpoint::UnbindSecurityGroup(name) => {
            let bind = matches!(ep, Endpoint::BindSecurityGroup(_));
            let b: BindingRequest = match json_body(
                req,
                "{\"lifecycle\": \"running\", \"org\": \"...\", \"space\": \"...\"}",
            )
            .await
            {
                Ok(b) => b,
                Err(r) => return r,
            };
            if b.space.is_some() && b.org.is_none() {
                return error(StatusCode::BAD_REQUEST, "a space needs its org");
            }
            let name = name.to_string();
            match ctx.with_state(move |s| binding(s, &name, &b, bind)).await {
                Ok(c) => {
                    info!(changed = ?c.changed, bind, "security group bindings");
                    typed(StatusCode::OK, &c)
                }
                Err(e) => state_error(e),
            }
        }
        other => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {}", other.method(), other.path()),
        ),
    }
}

/// Binds or unbinds `name` where `b` says, in one write per space.
fn binding(
    s: &mut crate::state::State,
    name: &str,
    b: &BindingRequest,
    bind: bool,
) -> Result<BindingChanged, StateError> {
    let mut out = BindingChanged::default();
    let lifecycle: Lifecycle = b.lifecycle;
    let spaces: Vec<(Option<String>, String)> = match (&b.org, &b.space) {
        (None, _) => vec![(None, "*".into())],
        (Some(org), Some(space)) => {
            let sp = s.space(org, space)?;
            vec![(Some(sp.guid), format!("{}/{}", sp.org, sp.name))]
        }
        (Some(org), None) => s
            .spaces(Some(org))?
            .into_iter()
            .map(|sp| (Some(sp.guid), format!("{}/{}", sp.org, sp.name)))
            .collect(),
    };
    // The group must exist even when an org has no spaces.
    s.security_group(name)?;
    for (guid, label) in spaces {
        let changed = if bind {
            s.bind_security_group(name, guid.as_deref(), lifecycle)?
        } else {
            s.unbind_security_group(name, guid.as_deref(), lifecycle)?
        };
        if changed {
            out.changed.push(label.clone());
        }
        out.named.push(label);
    }
    Ok(out)
}
