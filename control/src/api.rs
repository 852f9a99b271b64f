//! The control API over TLS: the external API (CF policy server v1 shapes plus apps), reached
//! with the bearer token from the state dir, and the cell API (leases, instances, watch),
//! reached only with a client certificate from the platform CA whose CN is the cell's name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use c2c_api::CellView;

use crate::state::{Instance, State, StateError};
use crate::wire::{self, PolicyList, WirePolicy};

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;
/// Longest a watch may wait.
pub const MAX_WATCH: Duration = Duration::from_secs(60);

/// Shared server state.
pub struct Ctx {
    state: Arc<Mutex<State>>,
    token: String,
    revision: watch::Sender<u64>,
    ca: Option<Arc<c2c_certs::Ca>>,
    cert_ttl: Duration,
}

impl Ctx {
    /// Wraps an open state with the bearer token the external API accepts.
    pub fn new(state: State, token: String) -> Result<Self, StateError> {
        let rev = state.revision()?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            token,
            revision: watch::Sender::new(rev),
            ca: None,
            cert_ttl: Duration::from_secs(24 * 3600),
        })
    }

    /// Signs instance certificates (the cell API's CSR endpoint) with `ca`, valid for `ttl`.
    pub fn with_ca(mut self, ca: c2c_certs::Ca, ttl: Duration) -> Self {
        self.ca = Some(Arc::new(ca));
        self.cert_ttl = ttl;
        self
    }

    /// Runs `f` on the state off the async threads, then publishes the revision.
    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let state = self.state.clone();
        let (out, rev) = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (transactions),
            // so a poisoned lock is still safe to use.
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut s);
            (out, s.revision())
        })
        .await
        .map_err(|e| StateError::Invalid(format!("state task failed: {e}")))?;
        if let Ok(rev) = rev {
            self.revision.send_if_modified(|r| {
                let changed = *r != rev;
                *r = rev;
                changed
            });
        }
        out
    }
}

/// Builds the TLS config: our server pair, client certs optional but verified against the CA.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, Box<dyn std::error::Error + Send + Sync>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
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
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        // Requests and answers are small and interactive: no Nagle delay behind a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(error)) => return debug!(%error, %peer, "tls handshake failed"),
                    Err(_) => return debug!(%peer, "tls handshake timed out"),
                };
            let cell = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(common_name);
            let svc = hyper::service::service_fn(move |req| {
                let (ctx, cell) = (ctx.clone(), cell.clone());
                async move { Ok::<_, Infallible>(handle(req, &ctx, cell.as_deref()).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                debug!(%error, %peer, "api connection error");
            }
        });
    }
}

fn common_name(der: &CertificateDer) -> Option<String> {
    c2c_certs::info::CertInfo::from_der(der)
        .ok()
        .and_then(|i| i.common_name)
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": msg.to_string() }))
}

fn state_error(e: StateError) -> Response<Full<Bytes>> {
    match e {
        StateError::UnknownApp(_) => error(StatusCode::NOT_FOUND, e),
        StateError::AppExists(_) => error(StatusCode::CONFLICT, e),
        StateError::Invalid(_) => error(StatusCode::BAD_REQUEST, e),
        StateError::NoLease(_) => error(StatusCode::NOT_FOUND, e),
        StateError::Forbidden(_) => error(StatusCode::FORBIDDEN, e),
        StateError::TagsExhausted | StateError::NoSubnet(_) => error(StatusCode::CONFLICT, e),
        StateError::Db(_) => {
            warn!(error = %e, "state store failure");
            error(StatusCode::INTERNAL_SERVER_ERROR, "state store failure")
        }
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {e}"),
            )
        })
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let got = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time compare: the token is the only secret between a user and every policy.
    got.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

async fn handle(req: Request<Incoming>, ctx: &Ctx, cell_cn: Option<&str>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let decoded: Vec<String> = path
        .split('/')
        .skip(1)
        .map(c2c_api::decode_segment)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    debug!(%method, %path, cell = ?cell_cn, "request");
    if let ["v1", "cells", name, rest @ ..] = segs.as_slice() {
        if cell_cn != Some(*name) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "the cell API needs a client certificate from the platform CA with CN {name}"
                ),
            );
        }
        let name = name.to_string();
        let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        return cell_api(req, ctx, &name, &rest).await;
    }
    if !authorized(&req, &ctx.token) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token (the token is in the state dir: control/token)",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match (method, segs.as_slice()) {
        (_, ["networking", v, "external", ..]) if *v != "v1" => error(
            StatusCode::NOT_ACCEPTABLE,
            format!("api version '{v}' not supported"),
        ),
        (Method::GET, ["networking", "v1", "external", "policies"]) => {
            let ids: Option<Vec<String>> = query(&req).get("id").map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            match ctx.with_state(move |s| s.policies(ids.as_deref())).await {
                Ok(ps) => {
                    let list = PolicyList {
                        total_policies: Some(ps.len()),
                        policies: Some(ps.iter().map(WirePolicy::from).collect()),
                    };
                    reply(
                        StatusCode::OK,
                        serde_json::to_value(list).unwrap_or_default(),
                    )
                }
                Err(e) => state_error(e),
            }
        }
        (Method::POST, ["networking", "v1", "external", "policies", rest @ ..])
            if rest.is_empty() || rest == ["delete"] =>
        {
            let delete = rest == ["delete"];
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let policies = match wire::parse_policies(&b) {
                Ok(p) => p,
                Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
            };
            let n = policies.len();
            let r = ctx
                .with_state(move |s| {
                    if delete {
                        s.delete_policies(&policies)
                    } else {
                        s.add_policies(&policies)
                    }
                })
                .await;
            match r {
                Ok(changed) => {
                    info!(delete, requested = n, changed, "policies updated");
                    reply(StatusCode::OK, json!({}))
                }
                Err(StateError::UnknownApp(guid)) => error(
                    StatusCode::FORBIDDEN,
                    format!("one or more applications cannot be found or accessed: no app with GUID {guid}"),
                ),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["v1", "apps"]) => match ctx.with_state(|s| s.apps()).await {
            Ok(apps) => reply(StatusCode::OK, json!({ "apps": apps })),
            Err(e) => state_error(e),
        },
        (Method::POST, ["v1", "apps"]) => {
            #[derive(Deserialize)]
            struct NewApp {
                name: String,
            }
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let new: NewApp = match serde_json::from_slice(&b) {
                Ok(n) => n,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"name\": \"...\"}}: {e}"),
                    )
                }
            };
            match ctx.with_state(move |s| s.create_app(&new.name)).await {
                Ok(app) => {
                    info!(name = %app.name, guid = %app.guid, tag = app.tag, "app created");
                    reply(
                        StatusCode::CREATED,
                        serde_json::to_value(app).unwrap_or_default(),
                    )
                }
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["v1", "apps", app]) => {
            let app = app.to_string();
            match ctx.with_state(move |s| s.app(&app)).await {
                Ok(app) => reply(
                    StatusCode::OK,
                    serde_json::to_value(app).unwrap_or_default(),
                ),
                Err(e) => state_error(e),
            }
        }
        (Method::DELETE, ["v1", "apps", app]) => {
            let app = app.to_string();
            match ctx
                .with_state(move |s| {
                    let a = s.app(&app)?;
                    s.delete_app(&a.guid)
                })
                .await
            {
                Ok(()) => reply(StatusCode::OK, json!({})),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["v1", "routes"]) => match ctx.with_state(|s| s.routes()).await {
            Ok(r) => reply(StatusCode::OK, json!({ "routes": r })),
            Err(e) => state_error(e),
        },
        (Method::POST, ["v1", "routes", rest @ ..]) if rest.is_empty() || rest == ["delete"] => {
            #[derive(Deserialize)]
            struct RouteReq {
                app: String,
                domain: String,
                hostname: String,
            }
            let unmap = rest == ["delete"];
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let r: RouteReq = match serde_json::from_slice(&b) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"app\", \"domain\", \"hostname\"}}: {e}"),
                    )
                }
            };
            let res = ctx
                .with_state(move |s| {
                    let app = s.app(&r.app)?;
                    let changed = if unmap {
                        s.unmap_route(&app.guid, &r.domain, &r.hostname)?
                    } else {
                        s.map_route(&app.guid, &r.domain, &r.hostname)?
                    };
                    Ok((app, r, changed))
                })
                .await;
            match res {
                Ok((app, r, changed)) => {
                    info!(app = %app.name, route = %format!("{}.{}", r.hostname, r.domain), unmap, changed, "route updated");
                    reply(StatusCode::OK, json!({ "changed": changed }))
                }
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["v1", "domains"]) => match ctx.with_state(|s| s.domains()).await {
            Ok(d) => reply(StatusCode::OK, json!({ "domains": d })),
            Err(e) => state_error(e),
        },
        (Method::POST, ["v1", "domains"]) => {
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let name = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_string));
            let Some(name) = name else {
                return error(StatusCode::BAD_REQUEST, "body must be {\"name\": \"...\"}");
            };
            match ctx.with_state(move |s| s.create_domain(&name)).await {
                Ok(d) => reply(StatusCode::OK, json!({ "name": d })),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["v1", "instances"]) => match ctx.with_state(|s| s.instances(None)).await {
            Ok(i) => reply(StatusCode::OK, json!({ "instances": i })),
            Err(e) => state_error(e),
        },
        (Method::GET, ["v1", "leases"]) => match ctx.with_state(|s| s.leases()).await {
            Ok(l) => reply(StatusCode::OK, json!({ "leases": l })),
            Err(e) => state_error(e),
        },
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

async fn cell_api(
    req: Request<Incoming>,
    ctx: &Ctx,
    cell: &str,
    rest: &[String],
) -> Response<Full<Bytes>> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let cell_s = cell.to_string();
    match (req.method().clone(), rest.as_slice()) {
        (Method::POST, ["lease"]) => {
            #[derive(Deserialize)]
            struct Acquire {
                underlay_ip: Ipv4Addr,
            }
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let a: Acquire = match serde_json::from_slice(&b) {
                Ok(a) => a,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"underlay_ip\": \"A.B.C.D\"}}: {e}"),
                    )
                }
            };
            match ctx
                .with_state(move |s| s.acquire_lease(&cell_s, a.underlay_ip))
                .await
            {
                Ok(l) => {
                    info!(cell = %l.cell, subnet = %l.subnet, underlay_ip = %l.underlay_ip, "lease acquired");
                    reply(StatusCode::OK, serde_json::to_value(l).unwrap_or_default())
                }
                Err(e) => state_error(e),
            }
        }
        (Method::PUT, ["lease"]) => match ctx.with_state(move |s| s.renew_lease(&cell_s)).await {
            Ok(l) => reply(StatusCode::OK, serde_json::to_value(l).unwrap_or_default()),
            Err(e) => state_error(e),
        },
        (Method::DELETE, ["lease"]) => {
            match ctx.with_state(move |s| s.release_lease(&cell_s)).await {
                Ok(_) => reply(StatusCode::OK, json!({})),
                Err(e) => state_error(e),
            }
        }
        (Method::PUT, ["instances", guid]) => {
            #[derive(Deserialize)]
            struct Reg {
                app_guid: String,
                index: u32,
                ip: Ipv4Addr,
            }
            let guid = guid.to_string();
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let r: Reg = match serde_json::from_slice(&b) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"app_guid\", \"index\", \"ip\"}}: {e}"),
                    )
                }
            };
            let inst = Instance {
                guid,
                app_guid: r.app_guid,
                index: r.index,
                cell: cell_s,
                ip: r.ip,
            };
            match ctx.with_state(move |s| s.register_instance(&inst)).await {
                Ok(()) => reply(StatusCode::OK, json!({})),
                Err(e) => state_error(e),
            }
        }
        (Method::POST, ["instances", guid, "certificate"]) => {
            // The cell sends a CSR; control decides the names from its own tables, so a cell
            // cannot get a name for an instance it does not host, or a name the app lacks.
            let guid = guid.to_string();
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(csr) = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v["csr"].as_str().map(str::to_string))
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}",
                );
            };
            let ca = ctx.ca.clone();
            let ttl = ctx.cert_ttl;
            let res = ctx
                .with_state(move |s| {
                    let inst = s
                        .instances(Some(&cell_s))?
                        .into_iter()
                        .find(|i| i.guid == guid)
                        .ok_or_else(|| {
                            StateError::Forbidden(format!(
                                "instance {guid} is not registered on cell {cell_s}"
                            ))
                        })?;
                    let names = c2c_api::instance_names(&s.routes()?, &inst);
                    let sans = c2c_certs::SanSet::new(&names, [inst.ip.into()])
                        .map_err(|e| StateError::Invalid(e.to_string()))?;
                    let ca = ca.as_ref().ok_or_else(|| {
                        StateError::Invalid("this control plane has no CA to sign with".into())
                    })?;
                    let pem = ca
                        .sign_csr(&csr, &inst.guid, &sans, ttl)
                        .map_err(|e| StateError::Invalid(e.to_string()))?;
                    Ok((pem, names))
                })
                .await;
            match res {
                Ok((pem, names)) => {
                    info!(cell = %cell, names = ?names, "certificate signed");
                    reply(StatusCode::OK, json!({ "cert_pem": pem, "names": names }))
                }
                Err(e) => state_error(e),
            }
        }
        (Method::DELETE, ["instances", guid]) => {
            let guid = guid.to_string();
            match ctx.with_state(move |s| s.deregister_instance(&guid)).await {
                Ok(_) => reply(StatusCode::OK, json!({})),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["watch"]) => {
            let q = query(&req);
            let after: u64 = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let timeout = q
                .get("timeout")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(30))
                .min(MAX_WATCH);
            let mut rx = ctx.revision.subscribe();
            // Returns at once if the state is already past `after`; else on the next change.
            let _ = tokio::time::timeout(timeout, rx.wait_for(|rev| *rev > after)).await;
            match ctx.with_state(move |s| view(s, &cell_s)).await {
                Ok(v) => reply(StatusCode::OK, serde_json::to_value(v).unwrap_or_default()),
                Err(e) => state_error(e),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such cell endpoint: {}", rest.join("/")),
        ),
    }
}

/// What `cell` needs, at the current revision.
pub fn view(s: &State, cell: &str) -> Result<CellView, StateError> {
    let instances = s.instances(None)?;
    let local: Vec<String> = instances
        .iter()
        .filter(|i| i.cell == cell)
        .map(|i| i.app_guid.clone())
        .collect();
    Ok(CellView {
        revision: s.revision()?,
        leases: s.leases()?,
        apps: s.apps()?,
        policies: s.policies(Some(&local))?,
        instances,
        routes: s.routes()?,
        domains: s.domains()?,
    })
}
