//! The admin's endpoints for orgs, spaces and security groups (`/v1/orgs`, `/v1/spaces`,
//! `/v1/security_groups`). A change to a group or a binding bumps the revision: every cell's
//! watch wakes and enforces it on running containers without a restart.

use hyper::{Request, StatusCode};
use tracing::info;

use c2c_api::asg::{validate, Lifecycle};
use c2c_api::endpoints::Endpoint;
use c2c_api::types::{
    BindingChanged, BindingRequest, NewOrg, NewSecurityGroup, NewSpace, OrgList, SecurityGroupList,
    SetSpaceQuota, SpaceList, SpaceQuotaList,
};

use crate::ctx::Ctx;
use crate::http::{error, json_body, query, typed, Answer, ReqBody};
use crate::state::StateError;

/// Answers one of these endpoints (the caller is the admin: [`crate::authz`]).
pub(crate) async fn answer<B: ReqBody>(req: Request<B>, ctx: &Ctx, ep: &Endpoint) -> Answer {
    match ep {
        Endpoint::ListOrgs => {
            let orgs = ctx.with_state(|s| s.orgs()).await?;
            Ok(typed(StatusCode::OK, &OrgList { orgs }))
        }
        Endpoint::CreateOrg => {
            let n: NewOrg = json_body(req, "{\"name\": \"...\"}").await?;
            let o = ctx.with_state(move |s| s.create_org(&n.name)).await?;
            info!(org = %o.name, guid = %o.guid, "org created");
            Ok(typed(StatusCode::CREATED, &o))
        }
        Endpoint::ListSpaces => {
            let org = query(&req).get("org").cloned();
            let spaces = ctx.with_state(move |s| s.spaces(org.as_deref())).await?;
            Ok(typed(StatusCode::OK, &SpaceList { spaces }))
        }
        Endpoint::CreateSpace => {
            let n: NewSpace = json_body(req, "{\"org\": \"...\", \"name\": \"...\"}").await?;
            let sp = ctx
                .with_state(move |s| s.create_space(&n.org, &n.name))
                .await?;
            info!(org = %sp.org, space = %sp.name, guid = %sp.guid, "space created");
            Ok(typed(StatusCode::CREATED, &sp))
        }
        Endpoint::ListSpaceQuotas => {
            let quotas = ctx.with_state(|s| s.space_quotas()).await?;
            Ok(typed(StatusCode::OK, &SpaceQuotaList { quotas }))
        }
        Endpoint::SetSpaceQuota => set_space_quota(req, ctx).await,
        Endpoint::ListSecurityGroups => {
            let security_groups = ctx.with_state(|s| s.security_groups()).await?;
            Ok(typed(
                StatusCode::OK,
                &SecurityGroupList { security_groups },
            ))
        }
        Endpoint::GetSecurityGroup(name) => {
            let name = name.clone();
            let g = ctx.with_state(move |s| s.security_group(&name)).await?;
            Ok(typed(StatusCode::OK, &g))
        }
        Endpoint::CreateSecurityGroup => write_group(req, ctx, None).await,
        Endpoint::UpdateSecurityGroup(name) => write_group(req, ctx, Some(name.clone())).await,
        Endpoint::DeleteSecurityGroup(name) => {
            let n = name.clone();
            if !ctx.with_state(move |s| s.delete_security_group(&n)).await? {
                return Err(
                    StateError::NotFound(format!("Security group '{name}' not found.")).into(),
                );
            }
            info!(group = %name, "security group deleted");
            Ok(typed(StatusCode::OK, &c2c_api::types::Empty {}))
        }
        Endpoint::BindSecurityGroup(name) => bind(req, ctx, name.clone(), true).await,
        Endpoint::UnbindSecurityGroup(name) => bind(req, ctx, name.clone(), false).await,
        other => Ok(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {}", other.method(), other.path()),
        )),
    }
}

/// `PUT /v1/space-quotas`.
async fn set_space_quota<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Answer {
    let q: SetSpaceQuota = json_body(
        req,
        "{\"org\": \"...\", \"space\": \"...\", \"max_apps\": N, \"max_instances\": N, \"max_routes\": N}",
    )
    .await?;
    let q = ctx
        .with_state(move |s| {
            s.set_space_quota(&q.org, &q.space, q.max_apps, q.max_instances, q.max_routes)
        })
        .await?;
    info!(org = %q.org, space = %q.space, max_apps = q.max_apps, max_instances = q.max_instances, max_routes = q.max_routes, "space quota set");
    Ok(typed(StatusCode::OK, &q))
}

/// `POST /v1/security_groups` (create; `path_name` None) or `PUT /v1/security_groups/NAME`
/// (replace its rules). CF answers 422 with every message of a bad rule set.
async fn write_group<B: ReqBody>(req: Request<B>, ctx: &Ctx, path_name: Option<String>) -> Answer {
    let create = path_name.is_none();
    let n: NewSecurityGroup = json_body(req, "{\"name\": \"...\", \"rules\": [...]}").await?;
    let rules = match validate(&n.rules) {
        Ok(r) => r,
        Err(msgs) => return Ok(error(StatusCode::UNPROCESSABLE_ENTITY, msgs.join(", "))),
    };
    let name = path_name.unwrap_or(n.name);
    let g = ctx
        .with_state(move |s| {
            if create {
                s.create_security_group(&name, &rules)
            } else {
                s.update_security_group(&name, &rules)?;
                s.security_group(&name)
            }
        })
        .await?;
    info!(group = %g.name, rules = g.rules.len(), create, "security group written");
    let status = if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(typed(status, &g))
}

/// `POST /v1/security_groups/NAME/bindings` (bind) and `.../bindings/delete` (unbind).
async fn bind<B: ReqBody>(req: Request<B>, ctx: &Ctx, name: String, bind: bool) -> Answer {
    let b: BindingRequest = json_body(
        req,
        "{\"lifecycle\": \"running\", \"org\": \"...\", \"space\": \"...\"}",
    )
    .await?;
    if b.space.is_some() && b.org.is_none() {
        return Ok(error(StatusCode::BAD_REQUEST, "a space needs its org"));
    }
    let c = ctx.with_state(move |s| binding(s, &name, &b, bind)).await?;
    info!(changed = ?c.changed, bind, "security group bindings");
    Ok(typed(StatusCode::OK, &c))
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
