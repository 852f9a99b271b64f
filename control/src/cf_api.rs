//! Cloud Foundry's policy-server API, endpoint for endpoint: the external API (v1, and v0 with
//! `port` for `ports`) on a user's token with CF's scopes, policy guard and quota; the internal
//! API (policies with hex tags, `policies_last_updated`, tags) on a registered cell's client
//! certificate; uptime and health without either. Sources: `cmd/policy-server/main.go` and
//! `cmd/policy-server-internal/main.go` (routes), `handlers/` (answers) of
//! cloudfoundry/cf-networking-release.

use std::collections::{BTreeSet, HashMap};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tracing::info;

use crate::auth::scope_refused;
use crate::ctx::Ctx;
use crate::http::{body, error, query, reply, state_error, typed, ReqBody};
use crate::state::{Policy, StateError};
use crate::tokens::Caller;
use c2c_api::policy::{self as wire, PolicyList, PolicyListV0, WirePolicy};
use c2c_api::types::{Scope, Tag, TagList, WhoAmI};

/// `GET /` and `GET /networking`: `Network policy server, up for 1h2m3.5s` and a newline.
pub(crate) fn uptime(ctx: &Ctx) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "Network policy server, up for {}\n",
        go_duration(ctx.started.elapsed())
    ))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /health`: 200 with an empty body when the store answers, else CF's 500.
pub(crate) async fn health(ctx: &Ctx) -> Response<Full<Bytes>> {
    match ctx.with_state(|s| s.revision()).await {
        Ok(_) => Response::new(Full::new(Bytes::new())),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the store did not answer");
            error(StatusCode::INTERNAL_SERVER_ERROR, "check database failed")
        }
    }
}

/// The external routes of CF's policy server (`cmd/policy-server/main.go`), in its order.
const EXTERNAL_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/networking"),
    ("GET", "/health"),
    ("GET", "/networking/:version/external/whoami"),
    ("POST", "/networking/:version/external/policies"),
    ("POST", "/networking/:version/external/policies/delete"),
    ("GET", "/networking/:version/external/policies"),
    ("POST", "/networking/:version/external/policies/cleanup"),
    ("GET", "/networking/:version/external/tags"),
];

fn route_matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter().zip(&q).all(|(p, q)| match p.strip_prefix(':') {
            // rata's `:param` as CF's CORS wrapper matches it: `\w+`.
            Some(_) => !q.is_empty() && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            None => p == q,
        })
}

/// `OPTIONS` on an external route, as CF's CORS wrapper answers it (with no allowed origins
/// configured): the route's methods and `authorization` as the allowed header. `None` when
/// no external route has this path.
pub(crate) fn options(path: &str) -> Option<Response<Full<Bytes>>> {
    let mut methods: Vec<&str> = EXTERNAL_ROUTES
        .iter()
        .filter(|(_, p)| route_matches(p, path))
        .map(|(m, _)| *m)
        .collect();
    if methods.is_empty() {
        return None;
    }
    methods.push("OPTIONS");
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        hyper::header::HeaderValue::from_str(&methods.join(",")).ok()?,
    );
    h.insert(
        "access-control-allow-headers",
        hyper::header::HeaderValue::from_static("authorization"),
    );
    Some(r)
}

/// A duration as Go's `time.Duration.String` prints it: `1h2m3.5s`, `2.5s`, `350ms`.
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128| -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = frac(ns % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// CF's filters of `GET /policies`: `id` (source or destination), else `source_id` and/or
/// `dest_id`; each a comma list (CF splits the first value; an empty one matches nothing).
fn filtered(policies: Vec<Policy>, q: &HashMap<String, String>) -> Vec<Policy> {
    let list = |k: &str| -> Option<BTreeSet<&str>> { q.get(k).map(|v| v.split(',').collect()) };
    let (ids, src, dst) = (list("id"), list("source_id"), list("dest_id"));
    policies
        .into_iter()
        .filter(|p| {
            let (s, d) = (p.source.as_str(), p.destination.as_str());
            match (&ids, &src, &dst) {
                (Some(ids), _, _) => ids.contains(s) || ids.contains(d),
                (None, Some(src), Some(dst)) => src.contains(s) && dst.contains(d),
                (None, Some(src), None) => src.contains(s),
                (None, None, Some(dst)) => dst.contains(d),
                (None, None, None) => true,
            }
        })
        .collect()
}

/// A policies answer in the version asked for.
fn policies_answer(version: &str, ps: &[Policy]) -> Response<Full<Bytes>> {
    if version == "v0" {
        return typed(StatusCode::OK, &PolicyListV0::of(ps));
    }
    // CF's v1 always sends `total_policies`, and `policies` as a list, even an empty one.
    typed(
        StatusCode::OK,
        &PolicyList {
            total_policies: Some(ps.len()),
            policies: Some(ps.iter().map(WirePolicy::from).collect()),
        },
    )
}

/// `/networking/{v0,v1}/external/...` for an authenticated caller.
pub(crate) async fn external<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    version: &str,
    rest: &[&str],
) -> Response<Full<Bytes>> {
    let version = version.to_string();
    match (req.method().clone(), rest) {
        (Method::GET, ["policies"]) => {
            let q = query(&req);
            match ctx.with_state(|s| s.policies(None)).await {
                Ok(all) => {
                    // A `network.write` user sees the policies between apps it manages (CF:
                    // both ends in the user's spaces).
                    let ps: Vec<Policy> = filtered(all, &q)
                        .into_iter()
                        .filter(|p| {
                            caller.may_manage(p.source.as_str())
                                && caller.may_manage(p.destination.as_str())
                        })
                        .collect();
                    policies_answer(&version, &ps)
                }
                Err(e) => state_error(e),
            }
        }
        (Method::POST, ["policies", "cleanup"]) => {
            if !caller.is_admin() {
                return scope_refused(caller, &[Scope::Admin]);
            }
            match ctx.with_state(|s| s.delete_stale_policies()).await {
                Ok(stale) => {
                    info!(user = %caller.user, removed = stale.len(), "stale policies cleaned up");
                    // CF answers cleanup in v1 shape whatever the version.
                    policies_answer("v1", &stale)
                }
                Err(e) => state_error(e),
            }
        }
        (Method::POST, ["policies", tail @ ..]) if tail.is_empty() || tail == ["delete"] => {
            change_policies(req, ctx, caller, &version, tail == ["delete"]).await
        }
        (Method::GET, ["tags"]) => {
            if !caller.is_admin() {
                return scope_refused(caller, &[Scope::Admin]);
            }
            match ctx.with_state(|s| s.tags()).await {
                Ok(tags) => typed(StatusCode::OK, &TagList { tags }),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["whoami"]) => {
            if !caller.is_admin() {
                return scope_refused(caller, &[Scope::Admin]);
            }
            typed(
                StatusCode::OK,
                &WhoAmI {
                    subject: caller.user.clone(),
                },
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint: /networking/{version}/external/{}",
                rest.join("/")
            ),
        ),
    }
}

/// `POST /policies` and `POST /policies/delete`: CF's mapper, policy guard and (for creates)
/// quota guard, in that order.
async fn change_policies<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    version: &str,
    delete: bool,
) -> Response<Full<Bytes>> {
    let b = match body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = if version == "v0" {
        wire::parse_policies_v0(&b)
    } else {
        wire::parse_policies(&b)
    };
    let policies = match parsed {
        Ok(p) => p,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let n = policies.len();
    let (caller2, max) = (caller.clone(), ctx.max_policies);
    let r = ctx
        .with_state(move |s| {
            let guids: BTreeSet<&str> = policies
                .iter()
                .flat_map(|p| [p.source.as_str(), p.destination.as_str()])
                .collect();
            // Policy guard. An admin may name any app that exists, and, as with CF's server,
            // a GUID control has not seen: it becomes an app of Cloud Controller's with a tag
            // (within its budget; freed with its last policy). Another unknown id is CF's 403.
            if caller2.is_admin() && !delete {
                let names: Vec<&str> = guids.iter().copied().collect();
                s.adopt_external_apps(&names)?;
            }
            let known = s.apps_known(&guids.iter().copied().collect::<Vec<_>>())?;
            if !guids
                .iter()
                .all(|g| caller2.may_manage(g) && (delete || known.contains(*g)))
            {
                return Err(StateError::Forbidden(
                    "one or more applications cannot be found or accessed".into(),
                ));
            }
            if delete {
                let n = s.delete_policies(&policies)?;
                let names: Vec<&str> = guids.iter().copied().collect();
                s.release_external_apps(&names)?;
                return Ok(n);
            }
            // Quota guard (CF's `quota_guard.go`): per app named, the policies it is the source
            // of now plus those it is the source of in the request.
            if !caller2.is_admin() {
                let names: Vec<&str> = guids.iter().copied().collect();
                let now = s.policy_counts_by_source(&names)?;
                for g in &names {
                    let adding = policies.iter().filter(|p| p.source.as_str() == *g).count();
                    if now.get(*g).copied().unwrap_or(0) + adding > max {
                        return Err(StateError::Forbidden("policy quota exceeded".into()));
                    }
                }
            }
            let added = s.add_policies(&policies);
            if added.is_err() && caller2.is_admin() {
                // Apps adopted for this request hold no policy: their tags go back.
                let names: Vec<&str> = guids.iter().copied().collect();
                let _ = s.release_external_apps(&names);
            }
            added
        })
        .await;
    match r {
        Ok(changed) => {
            info!(user = %caller.user, delete, requested = n, changed, revision = ctx.revision.borrow().0, "policies updated");
            reply(StatusCode::OK, serde_json::json!({}))
        }
        Err(e) => state_error(e),
    }
}

/// `/networking/:version/internal/...` for a registered cell.
/// CF's internal security-group listing (`AsgsPayload`): the groups bound to any of
/// `space_guids` (running or staging) and the defaults, `per_page` (or `limit`) at a time from
/// position `from` (1-based; CF's is a row id, opaque to its clients), `next` the position after
/// the page or 0 at the end; `rules` as a JSON string, as CF's.
fn internal_security_groups(
    groups: Vec<c2c_api::asg::SecurityGroup>,
    q: &HashMap<String, String>,
) -> serde_json::Value {
    let spaces: Option<BTreeSet<&str>> = q
        .get("space_guids")
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').collect());
    let matching: Vec<_> = groups
        .into_iter()
        .filter(|g| {
            spaces.as_ref().is_none_or(|want| {
                g.running_default
                    || g.staging_default
                    || g.spaces
                        .iter()
                        .any(|b| want.contains(b.space_guid.as_str()))
            })
        })
        .collect();
    let per_page = q
        .get("per_page")
        .or_else(|| q.get("limit"))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(usize::MAX);
    let from = q
        .get("from")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let page: Vec<serde_json::Value> = matching
        .iter()
        .skip(from - 1)
        .take(per_page)
        .map(|g| {
            let on = |l: c2c_api::asg::Lifecycle| -> Vec<&str> {
                g.spaces
                    .iter()
                    .filter(|b| b.lifecycle == l)
                    .map(|b| b.space_guid.as_str())
                    .collect()
            };
            serde_json::json!({
                "guid": g.guid,
                "name": g.name,
                "rules": serde_json::to_string(&g.rules).unwrap_or_default(),
                "staging_default": g.staging_default,
                "running_default": g.running_default,
                "staging_space_guids": on(c2c_api::asg::Lifecycle::Staging),
                "running_space_guids": on(c2c_api::asg::Lifecycle::Running),
            })
        })
        .collect();
    let end = (from - 1).saturating_add(page.len());
    let next = if end < matching.len() { end + 1 } else { 0 };
    serde_json::json!({ "next": next, "security_groups": page })
}

pub(crate) async fn internal<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    cell: &str,
    version: &str,
    rest: &[&str],
) -> Response<Full<Bytes>> {
    match (req.method().clone(), rest) {
        // CF routes `:version` here with no version check: every version gets v1.
        (Method::GET, ["policies"]) => {
            let q = query(&req);
            let ids: Option<BTreeSet<String>> = q
                .get("id")
                .map(|v| v.split(',').map(str::to_string).collect());
            match ctx.with_state(|s| Ok((s.policies(None)?, s.apps()?))).await {
                Ok((all, apps)) => {
                    let tags: HashMap<String, u16> = apps
                        .into_iter()
                        .map(|a| (a.guid.to_string(), a.tag))
                        .collect();
                    let ps: Vec<WirePolicy> = all
                        .iter()
                        .filter(|p| {
                            ids.as_ref().is_none_or(|ids| {
                                ids.contains(p.source.as_str())
                                    || ids.contains(p.destination.as_str())
                            })
                        })
                        .map(|p| {
                            let mut w = WirePolicy::from(p);
                            w.source.tag = tags.get(p.source.as_str()).map(|t| Tag::hex(*t));
                            w.destination.tag =
                                tags.get(p.destination.as_str()).map(|t| Tag::hex(*t));
                            w
                        })
                        .collect();
                    typed(
                        StatusCode::OK,
                        &PolicyList {
                            total_policies: Some(ps.len()),
                            policies: Some(ps),
                        },
                    )
                }
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["policies_last_updated"]) => {
            match ctx.with_state(|s| s.policies_last_updated()).await {
                Ok(t) => Response::new(Full::new(Bytes::from(t.to_string()))),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["security_groups"]) => {
            let q = query(&req);
            match ctx.with_state(|s| s.security_groups()).await {
                Ok(groups) => typed(StatusCode::OK, &internal_security_groups(groups, &q)),
                Err(e) => state_error(e),
            }
        }
        (Method::PUT, ["tags"]) if version == "v1" => {
            #[derive(serde::Deserialize)]
            struct Group {
                #[serde(default)]
                id: String,
                #[serde(default, rename = "type")]
                kind: String,
            }
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Ok(g) = wire::go_json::<Group>(&b) else {
                return error(StatusCode::BAD_REQUEST, "failed parsing request body");
            };
            let cell = cell.to_string();
            match ctx
                .with_state(move |s| s.create_tag_by(&g.id, &g.kind, Some(&cell)))
                .await
            {
                Ok(t) => {
                    info!(id = %t.id, kind = %t.kind, tag = %t.tag, "tag created");
                    typed(StatusCode::OK, &t)
                }
                Err(e) => state_error(e),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint: /networking/{version}/internal/{}",
                rest.join("/")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn durations_print_as_go_prints_them() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_millis(350), "350ms"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_millis(3_723_450), "1h2m3.45s"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }
}
