//! The platform API's handlers for apps, routes, domains and tokens, and the dispatch of every
//! platform endpoint (after [`crate::authz::authorize`] let the caller through) to its handler.
//! Handlers return [`Answer`] and use `?`: a state error becomes its HTTP answer in one place.

use hyper::{Request, StatusCode};
use serde_json::json;
use tracing::info;

use c2c_api::endpoints::Endpoint;
use c2c_api::types::{
    AppList, Changed, DomainList, Empty, NewApp, Removed, RouteList, RouteRequest, TokenRequest,
    UserList,
};

use crate::auth::managed_app;
use crate::authz::Access;
use crate::ctx::Ctx;
use crate::http::{body, error, json_body, settle, typed, Answer, Reply, ReqBody};
use crate::placement_api;
use crate::state::StateError;
use crate::tokens::Caller;

/// Answers `ep`, which `caller` may call with `access`.
pub(crate) async fn dispatch<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    access: Access,
    ep: Endpoint,
) -> Reply {
    settle(answer(req, ctx, caller, access, ep).await)
}

async fn answer<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    access: Access,
    ep: Endpoint,
) -> Answer {
    use Endpoint::*;
    match ep {
        WhoAmI => Ok(typed(
            StatusCode::OK,
            &c2c_api::client::WhoAmIScope {
                who: c2c_api::types::WhoAmI {
                    subject: caller.user.clone(),
                },
                scope: caller.scope,
            },
        )),
        ListApps => list_apps(ctx, caller).await,
        GetApp(app) => get_app(ctx, caller, access, app).await,
        CreateApp => create_app(req, ctx, caller).await,
        DeleteApp(app) => delete_app(ctx, caller, app).await,
        UpdateAppSettings(app) => update_settings(req, ctx, caller, app).await,
        ListRoutes => Ok(typed(
            StatusCode::OK,
            &RouteList {
                routes: ctx.with_state(|s| s.routes()).await?,
            },
        )),
        MapRoute => route(req, ctx, caller, false).await,
        UnmapRoute => route(req, ctx, caller, true).await,
        ListDomains => Ok(typed(
            StatusCode::OK,
            &DomainList {
                domains: ctx.with_state(|s| s.domains()).await?,
            },
        )),
        CreateDomain => create_domain(req, ctx).await,
        ListTokens => Ok(typed(
            StatusCode::OK,
            &UserList {
                users: ctx.with_state(|s| s.users()).await?,
            },
        )),
        CreateToken => create_token(req, ctx).await,
        RevokeTokens(user) => revoke_tokens(ctx, user).await,
        ListJoinTokens => Ok(typed(
            StatusCode::OK,
            &c2c_api::types::JoinTokenList {
                join_tokens: ctx.with_state(|s| s.join_tokens()).await?,
            },
        )),
        CreateJoinToken => create_join_token(req, ctx).await,
        RevokeJoinToken(id) => revoke_join_token(ctx, id).await,
        ListInstances => placement_api::list_instances(ctx, caller).await,
        PlaceInstance(app) => placement_api::place(req, ctx, caller, app).await,
        RemoveInstance(guid) => placement_api::remove_instance(ctx, caller, guid).await,
        ListCells => placement_api::list_cells(ctx).await,
        RegisterCell => placement_api::register_cell(req, ctx).await,
        RemoveCell(name) => placement_api::remove_cell(ctx, name).await,
        ListLeases => placement_api::list_leases(ctx).await,
        ListFlows => list_flows(&req, ctx, caller),
        ListOrgs
        | CreateOrg
        | ListSpaces
        | CreateSpace
        | ListSpaceQuotas
        | SetSpaceQuota
        | ListSecurityGroups
        | CreateSecurityGroup
        | GetSecurityGroup(_)
        | UpdateSecurityGroup(_)
        | DeleteSecurityGroup(_)
        | BindSecurityGroup(_)
        | UnbindSecurityGroup(_) => crate::asg_api::answer(req, ctx, &ep).await,
    }
}

/// `GET /v1/flows`: the flows cells reported here, narrowed by the query; a user's only those
/// with an app it may read at either end.
fn list_flows<B>(req: &Request<B>, ctx: &Ctx, caller: &Caller) -> Answer {
    let q = crate::http::query(req);
    let num = |k: &str| -> Result<Option<u64>, crate::http::ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("{k} must be a whole number, not {v:?}"),
                    )
                    .into()
                })
            })
            .transpose()
    };
    let verdict = q.get("verdict").cloned();
    if let Some(v) = verdict
        .as_deref()
        .filter(|v| !matches!(*v, "accept" | "deny"))
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("verdict must be accept or deny, not {v:?}"),
        )
        .into());
    }
    let fq = c2c_api::types::FlowQuery {
        from: q.get("from").cloned(),
        to: q.get("to").cloned(),
        verdict,
        since_ms: num("since_ms")?,
        after: num("after")?,
        limit: num("limit")?.map(|n| n.min(usize::MAX as u64) as usize),
    };
    let (flows, dropped) = ctx
        .flows
        .query(&fq, std::time::Instant::now(), |g| caller.may_manage(g));
    Ok(typed(
        StatusCode::OK,
        &c2c_api::types::FlowList { flows, dropped },
    ))
}

/// `GET /v1/apps`: every app for the admin; a user's granted ones otherwise.
async fn list_apps(ctx: &Ctx, caller: &Caller) -> Answer {
    let mut apps = ctx.with_state(|s| s.apps()).await?;
    apps.retain(|a| caller.may_manage(a.guid.as_str()));
    Ok(typed(StatusCode::OK, &AppList { apps }))
}

/// `GET /v1/apps/APP`: an app a user may not manage is not found, as one that does not exist.
async fn get_app(ctx: &Ctx, caller: &Caller, access: Access, app: String) -> Answer {
    let name = app.clone();
    match ctx.with_state(move |s| s.app(&name)).await? {
        a if access == Access::All || caller.may_manage(a.guid.as_str()) => {
            Ok(typed(StatusCode::OK, &a))
        }
        _ => Err(StateError::UnknownApp(app).into()),
    }
}

/// `POST /v1/apps`: in the default space, or in the org and space named, if the caller may
/// develop there.
async fn create_app<B: ReqBody>(req: Request<B>, ctx: &Ctx, caller: &Caller) -> Answer {
    let new: NewApp = json_body(req, "{\"name\": \"...\"}").await?;
    let who = caller.clone();
    let app = ctx
        .with_state(move |s| {
            let space = match (&new.org, &new.space) {
                (None, None) => crate::state::DEFAULT_SPACE_GUID.to_string(),
                (Some(org), Some(space)) => s.space(org, space)?.guid,
                _ => {
                    return Err(StateError::Invalid(
                        "give both org and space, or neither (the default space)".into(),
                    ))
                }
            };
            if !who.may_develop_in(&space) {
                return Err(StateError::Forbidden(format!(
                    "{} may not create apps in that space (grant it with `c2c token create {} --space ORG/SPACE`)",
                    who.user, who.user
                )));
            }
            s.create_app_as(&new.name, &space, !who.is_admin())
        })
        .await?;
    info!(name = %app.name, guid = %app.guid, tag = app.tag, "app created");
    Ok(typed(StatusCode::CREATED, &app))
}

/// `DELETE /v1/apps/APP`, with its instances, routes and policies.
async fn delete_app(ctx: &Ctx, caller: &Caller, app: String) -> Answer {
    let who = caller.clone();
    ctx.with_state(move |s| {
        let a = managed_app(s, &who, &app)?;
        s.delete_app(&a.guid)
    })
    .await?;
    Ok(typed(StatusCode::OK, &Empty {}))
}

/// `PUT /v1/apps/APP/settings`: what its sidecars do.
async fn update_settings<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    app: String,
) -> Answer {
    let settings: c2c_api::types::AppSettings = json_body(
        req,
        "{\"client_identity\": \"required\"|\"off\", \"proxy_protocol\": \"v2\"|\"off\", \"app_protocol\": \"http1\"|\"http2\"|\"http1,http2\"}",
    )
    .await?;
    let who = caller.clone();
    let a = ctx
        .with_state(move |s| {
            let a = managed_app(s, &who, &app)?;
            s.update_app_settings(a.guid.as_str(), &settings)
        })
        .await?;
    info!(app = %a.name, client_identity = %a.client_identity, proxy_protocol = %a.proxy_protocol, app_protocol = %a.app_protocol, "app settings");
    Ok(typed(StatusCode::OK, &a))
}

/// `POST /v1/routes` (map) and `/v1/routes/delete` (unmap): a route another space's app holds
/// is not the caller's to take or drop.
async fn route<B: ReqBody>(req: Request<B>, ctx: &Ctx, caller: &Caller, unmap: bool) -> Answer {
    let r: RouteRequest = json_body(req, "{\"app\", \"domain\", \"hostname\"}").await?;
    let who = caller.clone();
    let (app, r, changed) = ctx
        .with_state(move |s| {
            let app = managed_app(s, &who, &r.app)?;
            if !who.is_admin()
                && s.routes()?.iter().any(|x| {
                    x.domain == r.domain
                        && x.host == r.hostname
                        && !who.may_manage(x.app_guid.as_str())
                })
            {
                return Err(StateError::Forbidden(format!(
                    "route {}.{} is mapped to an app {} may not manage",
                    r.hostname, r.domain, who.user
                )));
            }
            let changed = if unmap {
                s.unmap_route(&app.guid, &r.domain, &r.hostname)?
            } else {
                s.map_route_as(&app.guid, &r.domain, &r.hostname, !who.is_admin())?
            };
            Ok((app, r, changed))
        })
        .await?;
    info!(app = %app.name, route = %format!("{}.{}", r.hostname, r.domain), unmap, changed, "route updated");
    Ok(typed(StatusCode::OK, &Changed { changed }))
}

/// `POST /v1/domains`.
async fn create_domain<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Answer {
    let b = body(req).await?;
    let name = serde_json::from_slice::<serde_json::Value>(&b)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string));
    let Some(name) = name else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "body must be {\"name\": \"...\"}",
        ));
    };
    let d = ctx.with_state(move |s| s.create_domain(&name)).await?;
    Ok(typed(StatusCode::OK, &json!({ "name": d })))
}

/// `POST /v1/tokens`: spaces and cells granted first, so an unknown one refuses the request
/// before a token exists.
async fn create_token<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Answer {
    let t: TokenRequest = json_body(
        req,
        "{\"user\": \"...\", \"scope\": \"network.write\", \"apps\": [\"APP\", ...]}",
    )
    .await?;
    let made = ctx
        .with_state(move |s| {
            s.grant_spaces(&t.user, &t.spaces)?;
            s.grant_cells(&t.user, &t.cells)?;
            s.create_token(&t.user, t.scope, &t.apps)
        })
        .await?;
    info!(user = %made.user, scope = %made.scope, apps = made.apps.len(), "token created");
    Ok(typed(StatusCode::CREATED, &made))
}

/// `DELETE /v1/tokens/USER`: every token of the user.
async fn revoke_tokens(ctx: &Ctx, user: String) -> Answer {
    let u = user.clone();
    match ctx.with_state(move |s| s.revoke_user(&u)).await? {
        0 => Ok(error(
            StatusCode::NOT_FOUND,
            format!("user {user} has no tokens"),
        )),
        n => {
            info!(%user, tokens = n, "tokens revoked");
            Ok(typed(StatusCode::OK, &Removed { removed: true }))
        }
    }
}

/// `POST /v1/join-tokens`.
async fn create_join_token<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Answer {
    let t: c2c_api::types::JoinTokenRequest = json_body(req, "{\"ttl_secs\": N}").await?;
    let made = ctx
        .with_state(move |s| s.create_join_token(t.ttl_secs, t.cell.as_deref()))
        .await?;
    info!(expires_at = made.expires_at, "join token created");
    Ok(typed(StatusCode::CREATED, &made))
}

/// `DELETE /v1/join-tokens/ID`: an unused one.
async fn revoke_join_token(ctx: &Ctx, id: String) -> Answer {
    let owned = id.clone();
    let removed = ctx.with_state(move |s| s.revoke_join_token(&owned)).await?;
    if removed {
        info!(%id, "join token revoked");
    }
    Ok(typed(StatusCode::OK, &Removed { removed }))
}
