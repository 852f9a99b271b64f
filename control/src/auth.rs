//! Who is calling: a user's bearer token (the admin's, or one control made), or a registered
//! cell's client certificate; and the refusals CF words.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use crate::ctx::{Ctx, Peer};
use crate::http::{error, state_error};
use crate::state::StateError;
use crate::tokens::Caller;
use c2c_api::types::Scope;
use tracing::warn;

/// The caller a request's token speaks for, or CF's 401.
pub(crate) async fn authenticate<B>(
    req: &Request<B>,
    ctx: &Ctx,
) -> Result<Caller, Response<Full<Bytes>>> {
    let unauthorized = |msg: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, msg);
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let Some(v) = req.headers().get(hyper::header::AUTHORIZATION) else {
        ctx.metrics.refused("missing_token");
        return Err(unauthorized("missing authorization header"));
    };
    // As Cloud Foundry's policy server: `Bearer T`, `bearer T` (the cf CLI sends UAA's
    // lower-case token type) or the bare token.
    let v = v.to_str().unwrap_or_default();
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v);
    match caller_of_token(ctx, token).await {
        Ok(Some(c)) => Ok(c),
        // CF's words: its tokens are UAA's.
        Ok(None) => {
            ctx.metrics.refused("unknown_token");
            Err(unauthorized("failed to verify token with uaa"))
        }
        Err(e) => Err(state_error(e)),
    }
}

/// Who `token` speaks for: the admin, a user, or nobody (`None`).
pub(crate) async fn caller_of_token(
    ctx: &Ctx,
    token: &str,
) -> Result<Option<Caller>, crate::state::StateError> {
    let hash = crate::tokens::sha256_hex(token.as_bytes());
    // Constant-time compare: the admin token is the one secret between a user and every app.
    if crate::state::constant_time_eq(hash.as_bytes(), ctx.admin_hash.as_bytes()) {
        return Ok(Some(Caller::admin()));
    }
    ctx.with_state(move |s| s.caller(&hash)).await
}

/// App `name` (or GUID), if `caller` may manage it; a 403 naming the app if it exists but
/// belongs to a space the caller does not hold.
pub(crate) fn managed_app(
    s: &crate::state::State,
    caller: &Caller,
    name: &str,
) -> Result<c2c_api::App, StateError> {
    let app = s.app(name)?;
    if caller.may_manage(app.guid.as_str()) {
        Ok(app)
    } else {
        Err(StateError::Forbidden(format!(
            "{} may not manage app {name}: it is in a space {} holds no grant for",
            caller.user, caller.user
        )))
    }
}

/// CF's 403 for a token without one of the scopes an endpoint allows.
pub(crate) fn scope_refused(caller: &Caller, allowed: &[Scope]) -> Response<Full<Bytes>> {
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    error(
        StatusCode::FORBIDDEN,
        format!(
            "provided scopes [{}] do not include allowed scopes [{}]",
            caller.scope,
            names.join(" ")
        ),
    )
}

/// The registered cell a verified client certificate belongs to (its CN, and the fingerprint
/// control signed for that cell last), or a 403 naming what is needed.
pub(crate) async fn registered_cell(
    ctx: &Ctx,
    peer: Option<&Peer>,
    what: &str,
) -> Result<String, Response<Full<Bytes>>> {
    let refused = || {
        error(
            StatusCode::FORBIDDEN,
            format!("{what} needs the client certificate control signed for a registered cell (from the cell issuer)"),
        )
    };
    let Some(peer) = peer else {
        return Err(refused());
    };
    // Verified before at this revision: every registration and revocation makes a new one
    // (on every replica, through the database's notification), so no lookup is needed.
    let rev = ctx.current_revision();
    // The whole registry as of a revision: `Some(true)` for a cell found there at the current
    // one, `Some(false)` not found, `None` not read at this revision.
    let cached = |ctx: &Ctx| -> Option<bool> {
        let c = ctx.registry.lock().ok()?;
        (c.0 == rev).then(|| {
            c.1.get(&peer.cn).is_some_and(|f| {
                crate::state::constant_time_eq(f.as_bytes(), peer.fingerprint.as_bytes())
            })
        })
    };
    if cached(ctx) == Some(true) {
        return Ok(peer.cn.clone());
    }
    if cached(ctx).is_none() {
        // Not read at this revision yet: the whole registry in one read, by one task (a change
        // wakes every cell's stream at once; a read each would queue a thousand behind the
        // state's lock).
        let _one = ctx.registry_refresh.lock().await;
        if cached(ctx).is_none() {
            match ctx.with_state(|s| s.cell_identities()).await {
                Ok(all) => {
                    if let Ok(mut c) = ctx.registry.lock() {
                        if c.0 <= rev {
                            *c = (rev, all);
                        }
                    }
                }
                Err(e) => return Err(state_error(e)),
            }
        }
        if cached(ctx) == Some(true) {
            return Ok(peer.cn.clone());
        }
    }
    // Not in the registry as read: read this one cell (registered through another replica
    // since, and this replica not yet notified; or refused).
    let (cn, fp) = (peer.cn.clone(), peer.fingerprint.clone());
    match ctx.with_state(move |s| s.cell_identity_ok(&cn, &fp)).await {
        Ok(true) => {
            if let Ok(mut c) = ctx.registry.lock() {
                if c.0 == rev {
                    c.1.insert(peer.cn.clone(), peer.fingerprint.clone());
                }
            }
            Ok(peer.cn.clone())
        }
        Ok(false) => {
            warn!(cell = %peer.cn, "refused a cell certificate that is not the registered one (revoked or replaced)");
            Err(refused())
        }
        Err(e) => Err(state_error(e)),
    }
}
