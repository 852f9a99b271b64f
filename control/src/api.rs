//! The control API over TLS: the external API (CF policy server v1 shapes plus apps, cells and
//! placement), reached with the bearer token from the state dir, and the cell API (leases,
//! instance confirmation, certificates, watch), reached only with a client certificate from the
//! cell issuer whose CN is a registered cell's name and whose fingerprint is the one control
//! signed for it last (see `c2c_certs::pki`).
//!
//! Every connection has a budget: a handshake timeout, a header-read timeout (which also ends a
//! keep-alive connection idle between requests), a body-read timeout, and caps on open
//! connections and handshakes in progress, in total and per client address
//! ([`crate::admission`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use crate::ctx::{
    fingerprint, Budget, Ctx, Peer, Signers, DEFAULT_MAX_POLICIES, MAX_WATCH, WATCH_PROTOCOL,
};
pub use crate::http::ReqBody;
pub use crate::views::view;
pub use c2c_api::CellView;

use crate::auth::{authenticate, registered_cell, scope_refused};
use crate::cell_api::{cell_api, join};
use crate::http::error;
use c2c_api::endpoints::Endpoint;
use c2c_api::types::Scope;

/// Builds the TLS config: our server pair; client certificates optional, but one that is sent
/// must chain to `client_ca_pem` (the cell issuer) and carry clientAuth.
pub fn tls_config(
    client_ca_pem: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, Box<dyn std::error::Error + Send + Sync>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let provider = c2c_certs::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let budget = ctx.budget;
    let gate = Arc::new(crate::admission::Gate::new(budget));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let Some(admitted) = gate.admit(peer.ip(), &ctx.metrics) else {
            drop(tcp);
            continue;
        };
        // Requests and answers are small and interactive: no Nagle delay behind a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx, gate) = (acceptor.clone(), ctx.clone(), gate.clone());
        tokio::spawn(async move {
            let Some(tls) = gate
                .handshake(&admitted, &acceptor, tcp, &ctx.metrics)
                .await
            else {
                return;
            };
            let _admitted = admitted;
            let cell = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| Peer::from_der(der));
            let svc = hyper::service::service_fn(move |req| {
                let (ctx, cell) = (ctx.clone(), cell.clone());
                let span = tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    cell = cell.as_ref().map(|p| p.cn.as_str()),
                );
                async move {
                    Ok::<_, Infallible>(
                        tracing::Instrument::instrument(handle(req, &ctx, cell.as_ref()), span)
                            .await,
                    )
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(budget.header_read)
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                debug!(%error, %peer, "api connection error");
            }
        });
    }
}

/// Answers one request as the caller it comes from (`peer`: the verified client certificate,
/// if any): the whole API, with no TLS or sockets, so it is testable in-process. Every answer
/// carries CF's security headers.
pub async fn handle<B: ReqBody>(
    req: Request<B>,
    ctx: &Arc<Ctx>,
    peer: Option<&Peer>,
) -> Response<Full<Bytes>> {
    let endpoint = crate::metrics::endpoint_label(req.method().as_str(), req.uri().path());
    let began = std::time::Instant::now();
    let mut r = route(req, ctx, peer).await;
    ctx.metrics.answered(&endpoint, r.status(), began.elapsed());
    let h = r.headers_mut();
    use hyper::header::{HeaderValue, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS};
    h.insert(
        STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        "x-xss-protection",
        HeaderValue::from_static("1; mode=block"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("deny"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    r
}

async fn route<B: ReqBody>(
    req: Request<B>,
    ctx: &Arc<Ctx>,
    peer: Option<&Peer>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let decoded: Vec<String> = path
        .split('/')
        .skip(1)
        .map(c2c_api::decode_segment)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    debug!(%method, %path, cell = ?peer.map(|p| &p.cn), "request");
    // Without a token, as CF's: uptime, health and CORS preflights.
    if method == Method::OPTIONS {
        let raw = req.uri().path();
        if let Some(r) = crate::cf_api::options(if raw.is_empty() { "/" } else { raw }) {
            return r;
        }
    }
    match (&method, segs.as_slice()) {
        (&Method::GET, [] | ["networking"]) => return crate::cf_api::uptime(ctx),
        (&Method::GET, ["health"]) => return crate::cf_api::health(ctx).await,
        _ => {}
    }
    // `/v1/cells/NAME/...` is the cell API; `/v1/cells/NAME` itself is the operators' (below,
    // with the token).
    if let ["v1", "cells", name, rest @ ..] = segs.as_slice() {
        if !rest.is_empty() {
            let cell = match registered_cell(
                ctx,
                peer.filter(|p| p.cn == *name),
                &format!("the cell API of {name}"),
            )
            .await
            {
                Ok(c) => c,
                Err(r) => return r,
            };
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            return cell_api(req, ctx, &cell, peer, &rest).await;
        }
    }
    // CF's internal API (vxlan-policy-agent and other enforcers): on a cell's identity.
    if let ["networking", version, "internal", rest @ ..] = segs.as_slice() {
        let cell = match registered_cell(ctx, peer, "the internal API").await {
            Ok(cell) => cell,
            Err(r) => return r,
        };
        return crate::cf_api::internal(req, ctx, &cell, version, rest).await;
    }
    // A new cell joins with a join token's secret, its only credential.
    if let (&Method::POST, ["v1", "join"]) = (&method, segs.as_slice()) {
        return join(req, ctx).await;
    }
    // CF checks the API version before the token.
    if let ["networking", v, "external", ..] = segs.as_slice() {
        if *v != "v1" && *v != "v0" {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                format!("api version '{v}' not supported"),
            );
        }
    }
    let caller = match authenticate(&req, ctx).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let ["networking", version, "external", rest @ ..] = segs.as_slice() {
        return crate::cf_api::external(req, ctx, &caller, version, rest).await;
    }
    // The platform API: one decision who may call which endpoint (crate::authz), then its
    // handler, which narrows a user's call to the apps and spaces the token holds.
    let Some(ep) = Endpoint::parse(method.as_str(), &segs) else {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    };
    match crate::authz::authorize(&caller, &ep) {
        Ok(access) => crate::platform_api::dispatch(req, ctx, &caller, access, ep).await,
        Err(crate::authz::AdminOnly) => scope_refused(&caller, &[Scope::Admin]),
    }
}
