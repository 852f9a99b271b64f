//! The cell API (`/v1/cells/NAME/...`, on the registered cell's client certificate: lease,
//! instance confirmation, certificates and identities, the watch) and the join of a new cell
//! (`POST /v1/join`, on a join token's secret).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, info, warn};

use c2c_api::types::{Confirm, CsrRequest, Empty, LeaseRequest, Signed};

use crate::ctx::{fingerprint, Ctx, Peer, MAX_WATCH, WATCH_PROTOCOL};
use crate::http::{error, json_body, query, settle, state_error, typed, Answer, ApiError, ReqBody};
use crate::state::{Revision, StateError};
use crate::views::view;

/// Signs a cell's CSR with the cell issuer: CN = `name`, clientAuth only. Returns the chain and
/// the leaf's fingerprint (what the registry records).
pub(crate) fn sign_cell(
    ctx: &Ctx,
    name: &str,
    csr: &str,
) -> Result<(String, String), Box<Response<Full<Bytes>>>> {
    let Some(signers) = ctx.signers.clone() else {
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this control plane has no issuers to sign with",
        )));
    };
    let sans = c2c_certs::SanSet::new([name], [])
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))?;
    let chain = match signers.cells.sign_csr(
        csr,
        name,
        &sans,
        Duration::from_secs(365 * 24 * 3600),
        c2c_certs::Usage::Client,
    ) {
        Ok(c) => c,
        Err(e @ c2c_certs::CaError::BadCsr(_)) => {
            return Err(Box::new(error(StatusCode::BAD_REQUEST, e)))
        }
        Err(e) => {
            warn!(error = %e, "signing a cell certificate failed");
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing failed",
            )));
        }
    };
    let der = c2c_certs::info::first_der_from_pem(chain.as_bytes())
        .map_err(|e| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, e)))?;
    ctx.metrics.signed("cell");
    Ok((chain, fingerprint(&der)))
}

/// `POST /v1/join`: a new cell with a join token's secret gets its certificate.
pub(crate) async fn join<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let j: c2c_api::types::JoinRequest = match json_body(
        req,
        "{\"secret\": \"...\", \"name\": \"...\", \"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}",
    )
    .await
    {
        Ok(j) => j,
        Err(r) => return r,
    };
    if let Err(e) = crate::state::validate_cell_name(&j.name) {
        return state_error(e);
    }
    let Some(control_ca_pem) = ctx.control_ca_pem.clone() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this control plane has no control issuer to hand out",
        );
    };
    // A token that cannot be used is refused before anything is signed.
    let (secret, name) = (j.secret.clone(), j.name.clone());
    if let Err(e) = ctx
        .with_state(move |s| s.check_join_token(&secret, &name))
        .await
    {
        warn!(cell = %j.name, error = %e, "join refused");
        return state_error(e);
    }
    let (chain, fp) = match sign_cell(ctx, &j.name, &j.csr) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (secret, name) = (j.secret.clone(), j.name.clone());
    match ctx
        .with_state(move |s| s.join_cell(&secret, &name, &fp))
        .await
    {
        Ok(()) => {
            info!(cell = %j.name, "cell joined with a join token");
            typed(
                StatusCode::OK,
                &c2c_api::types::Joined {
                    cert_pem: chain,
                    control_ca_pem,
                    root_pem: ctx.signers.as_ref().map(|s| s.root_pem.clone()),
                },
            )
        }
        Err(e) => {
            warn!(cell = %j.name, error = %e, "join refused");
            state_error(e)
        }
    }
}

/// The cell API of `cell` (whose certificate the router verified): `rest` is the path after
/// `/v1/cells/NAME/`.
pub(crate) async fn cell_api<B: ReqBody>(
    req: Request<B>,
    ctx: &Arc<Ctx>,
    cell: &str,
    peer: Option<&Peer>,
    rest: &[String],
) -> Response<Full<Bytes>> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let cell = cell.to_string();
    let answer = match (req.method().clone(), rest.as_slice()) {
        (Method::POST, ["lease"]) => acquire_lease(req, ctx, cell).await,
        (Method::PUT, ["lease"]) => renew_lease(ctx, cell).await,
        (Method::DELETE, ["lease"]) => release_lease(ctx, cell).await,
        (Method::PUT, ["instances", guid]) => confirm(req, ctx, cell, guid.to_string()).await,
        (Method::POST, ["instances", guid, "certificate"]) => {
            sign_certificate(req, ctx, cell, guid.to_string()).await
        }
        (Method::POST, ["instances", guid, "identity"]) => {
            sign_identity(req, ctx, cell, guid.to_string()).await
        }
        (Method::DELETE, ["instances", guid]) => unconfirm(ctx, cell, guid.to_string()).await,
        (Method::GET, ["watch"]) => watch(req, ctx, cell, peer).await,
        (Method::POST, ["flows"]) => push_flows(req, ctx, cell).await,
        _ => Ok(error(
            StatusCode::NOT_FOUND,
            format!("no such cell endpoint: {}", rest.join("/")),
        )),
    };
    settle(answer)
}

/// `POST flows`: the cell's traffic-log records since its last report, kept under its own
/// name (the certificate's).
async fn push_flows<B: ReqBody>(req: Request<B>, ctx: &Ctx, cell: String) -> Answer {
    let batch: c2c_api::types::FlowBatch =
        json_body(req, "{\"flows\": [...], \"dropped\": N}").await?;
    match ctx.flows.push(&cell, batch, std::time::Instant::now()) {
        Ok(n) => Ok(typed(StatusCode::OK, &serde_json::json!({ "kept": n }))),
        Err(e @ crate::flows::Refused::TooMany(_)) => {
            Ok(error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
        }
        Err(e) => Ok(error(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// `POST lease`: the cell's subnet (the one it asks for, if free).
async fn acquire_lease<B: ReqBody>(req: Request<B>, ctx: &Ctx, cell: String) -> Answer {
    let a: LeaseRequest = json_body(req, "{\"underlay_ip\": \"A.B.C.D\"}").await?;
    let l = ctx
        .with_state(move |s| s.acquire_lease_preferring(&cell, a.underlay_ip, a.prefer))
        .await?;
    info!(cell = %l.cell, subnet = %l.subnet, underlay_ip = %l.underlay_ip, "lease acquired");
    Ok(typed(StatusCode::OK, &l))
}

/// `PUT lease`: renewed.
async fn renew_lease(ctx: &Ctx, cell: String) -> Answer {
    let l = ctx.with_state(move |s| s.renew_lease(&cell)).await?;
    Ok(typed(StatusCode::OK, &l))
}

/// `DELETE lease`: released.
async fn release_lease(ctx: &Ctx, cell: String) -> Answer {
    ctx.with_state(move |s| s.release_lease(&cell)).await?;
    Ok(typed(StatusCode::OK, &Empty {}))
}

/// `DELETE instances/GUID`: the instance is gone from the cell.
async fn unconfirm(ctx: &Ctx, cell: String, guid: String) -> Answer {
    ctx.with_state(move |s| s.unconfirm_instance(&cell, &guid))
        .await?;
    Ok(typed(StatusCode::OK, &Empty {}))
}

/// `PUT instances/GUID`: the cell confirms an instance placed on it, with its address.
async fn confirm<B: ReqBody>(req: Request<B>, ctx: &Ctx, cell: String, guid: String) -> Answer {
    let r: Confirm = json_body(req, "{\"app_guid\", \"index\", \"ip\"}").await?;
    let c = cell.clone();
    if let Err(e) = ctx
        .with_state(move |s| s.confirm_instance(&c, &guid, &r.app_guid, r.index, r.ip))
        .await
    {
        warn!(%cell, error = %e, "instance confirmation refused");
        return Err(e.into());
    }
    Ok(typed(StatusCode::OK, &Empty {}))
}

/// The instance `guid`, if it is placed on `cell` and the cell confirmed it: the only
/// instances a cell may have certificates signed for.
fn confirmed_on(
    s: &crate::state::State,
    cell: &str,
    guid: &str,
) -> Result<c2c_api::Instance, StateError> {
    s.instances(Some(cell))?
        .into_iter()
        .find(|i| i.guid == guid)
        .ok_or_else(|| {
            StateError::Forbidden(format!(
                "instance {guid} is not placed on cell {cell} and confirmed"
            ))
        })
}

/// The issuers, or the 500 of a control plane that has none.
fn signers(ctx: &Ctx) -> Result<Arc<crate::ctx::Signers>, ApiError> {
    ctx.signers.clone().ok_or_else(|| {
        ApiError::from(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this control plane has no issuers to sign with",
        ))
    })
}

/// A signing failure: the CSR's fault (400) or the issuer's (500, logged).
fn signing_failed(e: c2c_certs::CaError, what: &str) -> ApiError {
    match e {
        e @ c2c_certs::CaError::BadCsr(_) => ApiError::from(error(StatusCode::BAD_REQUEST, e)),
        e => {
            warn!(error = %e, "signing {what} failed");
            ApiError::from(error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed"))
        }
    }
}

/// `POST instances/GUID/certificate`: the cell sends a CSR; control decides every name from
/// its own tables: CN = the GUID it generated, DNS SANs = the routes of the instance's app, IP
/// SAN = the address the cell confirmed inside its own lease.
async fn sign_certificate<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    cell: String,
    guid: String,
) -> Answer {
    let CsrRequest { csr } =
        json_body(req, "{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}").await?;
    let signers = signers(ctx)?;
    let c = cell.clone();
    let (names, inst) = ctx
        .with_state(move |s| {
            let inst = confirmed_on(s, &c, &guid)?;
            Ok((c2c_api::instance_names(&s.routes()?, &inst), inst))
        })
        .await?;
    let sans = c2c_certs::SanSet::new(&names, [inst.ip.into()])
        .map_err(|e| ApiError::from(error(StatusCode::BAD_REQUEST, e)))?;
    let pem = signers
        .instances
        .sign_csr(
            &csr,
            &inst.guid,
            &sans,
            ctx.cert_ttl,
            c2c_certs::Usage::Server,
        )
        .map_err(|e| signing_failed(e, "an instance certificate"))?;
    note_expiry(ctx, &inst.guid, false, ctx.cert_ttl).await;
    ctx.metrics.signed("route");
    info!(%cell, instance = %inst.guid, names = ?names, "certificate signed");
    Ok(typed(
        StatusCode::OK,
        &Signed {
            cert_pem: pem,
            names,
            root_pem: None,
        },
    ))
}

/// Notes when what was just signed for `guid` expires (the console shows it). A failure to note
/// it costs the cell nothing: it is logged, and the certificate goes out all the same.
async fn note_expiry(ctx: &Ctx, guid: &str, identity: bool, ttl: std::time::Duration) {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs() as i64;
    let g = guid.to_string();
    if let Err(error) = ctx
        .with_state(move |s| s.record_expiry(&g, identity, at))
        .await
    {
        tracing::warn!(instance = %guid, %error, "noting the certificate's expiry failed");
    }
}

/// `POST instances/GUID/identity`: the instance's identity (CF_INSTANCE_CERT); as for the
/// route certificate, the cell sends only a key (in a CSR) and control decides every name.
async fn sign_identity<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    cell: String,
    guid: String,
) -> Answer {
    let CsrRequest { csr } =
        json_body(req, "{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}").await?;
    let signers = signers(ctx)?;
    let c = cell.clone();
    let (inst, space, org) = ctx
        .with_state(move |s| {
            let inst = confirmed_on(s, &c, &guid)?;
            let (space, org) = s.app_space_and_org(inst.app_guid.as_str())?;
            Ok((inst, space, org))
        })
        .await?;
    let id = c2c_certs::Identity::new(
        &ctx.trust_domain,
        &inst.guid,
        inst.app_guid.as_str(),
        &space,
        &org,
    );
    let pem = signers
        .instances
        .sign_identity_csr(&csr, &id, inst.ip.into(), ctx.identity_ttl)
        .map_err(|e| signing_failed(e, "an instance identity"))?;
    note_expiry(ctx, &inst.guid, true, ctx.identity_ttl).await;
    ctx.metrics.signed("identity");
    info!(%cell, instance = %inst.guid, spiffe_id = %id.spiffe_id, "identity signed");
    Ok(typed(
        StatusCode::OK,
        &Signed {
            cert_pem: pem,
            names: vec![inst.guid.clone()],
            root_pem: Some(signers.root_pem.clone()),
        },
    ))
}

/// 503 with `Retry-After` for a stream past [`Budget::max_streams`](crate::ctx::Budget): the
/// cell opens it on another replica, or here once the wait is over.
fn streams_full(ctx: &Ctx) -> Response<Full<Bytes>> {
    let budget = ctx.budget();
    ctx.metrics.shed("streams");
    let wait = budget.stream_retry_after.as_secs().max(1);
    debug!(
        max = budget.max_streams,
        "watch stream budget reached; answering 503"
    );
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this replica holds its most watch streams ({}); open the stream on another replica, or here after {wait} s",
            budget.max_streams
        ),
    );
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(wait),
    );
    r
}

/// `GET watch?after=REV[&timeout=S][&delta=1]`: the cell's view once the state is past REV
/// (a long poll), or, with `Upgrade: c2c-watch`, a stream of them.
async fn watch<B: ReqBody>(
    mut req: Request<B>,
    ctx: &Arc<Ctx>,
    cell: String,
    peer: Option<&Peer>,
) -> Answer {
    let q = query(&req);
    let after = Revision(q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0));
    let timeout = q
        .get("timeout")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
        .min(MAX_WATCH);
    let delta = q.get("delta").is_some_and(|d| d == "1");
    // A stream: the connection leaves HTTP after the 101, and a task of its own writes a line
    // per change until the cell goes (or is revoked).
    if req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(WATCH_PROTOCOL.as_bytes()))
    {
        let Some(peer) = peer.cloned() else {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "a watch needs a cell certificate",
            ));
        };
        let Some(place) = ctx.streams.reserve(ctx.budget().max_streams) else {
            return Ok(streams_full(ctx));
        };
        let upgrade = hyper::upgrade::on(&mut req);
        drop((q, req));
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _place = place;
            match upgrade.await {
                Ok(io) => crate::watch_stream::run(io, ctx, peer, after).await,
                Err(error) => debug!(%error, "watch upgrade failed"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static(WATCH_PROTOCOL),
        );
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        return Ok(r);
    }
    // The request's head points into the connection's read buffer: holding it while parked
    // would make the connection allocate another for its next read.
    drop((q, req));
    let mut rx = ctx.revision.subscribe();
    // Returns at once if the state is already past `after`; else on the next change.
    let _ = tokio::time::timeout(timeout, rx.wait_for(|rev| *rev > after)).await;
    if ctx.per_watcher_views {
        let v = ctx.with_state(move |s| view(s, &cell)).await?;
        return Ok(typed(StatusCode::OK, &v));
    }
    let current = *ctx.revision.borrow();
    let shared = ctx
        .views
        .at_least(current, |prev| ctx.read_shared(prev))
        .await;
    // Changes only, when the cell asked for them and this replica built the revision it has
    // (else the whole view).
    let since = delta.then(|| ctx.views.hashes_at(after)).flatten();
    let json = shared.and_then(|s| s.view_json(&cell, since))?;
    let mut r = Response::new(Full::new(Bytes::from(json)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
