//! The control API over TLS: the external API (CF policy server v1 shapes plus apps, cells and
//! placement), reached with the bearer token from the state dir, and the cell API (leases,
//! instance confirmation, certificates, watch), reached only with a client certificate from the
//! cell issuer whose CN is a registered cell's name and whose fingerprint is the one control
//! signed for it last (see `c2c_certs::pki`).
//!
//! Every connection has a budget: a handshake timeout, a header-read timeout (which also ends a
//! keep-alive connection idle between requests), a body-read timeout, and a cap on open
//! connections; past the cap, new connections are closed at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use c2c_api::CellView;

use crate::state::{Revision, State, StateError};
use crate::tokens::Caller;
use c2c_api::endpoints::Endpoint;
use c2c_api::types::Scope;
use c2c_api::types::{
    CellList, CellRecord, Confirm, CsrRequest, Empty, ErrorBody, LeaseRequest, PlaceRequest,
    PlacementList, RegisterCell, Removed, Signed,
};

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;
/// How long a client may take to send a request's body.
const BODY_READ: Duration = Duration::from_secs(10);

/// CF's default `max_policies`: a non-admin's app may be the source of this many policies.
pub const DEFAULT_MAX_POLICIES: usize = 150;

/// The protocol a streamed watch upgrades to (`Upgrade: c2c-watch`).
pub const WATCH_PROTOCOL: &str = c2c_api::paths::WATCH_PROTOCOL;

/// Longest a watch may wait.
pub const MAX_WATCH: Duration = Duration::from_secs(60);

/// What one connection may cost control before it is closed.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// From accept to a finished TLS handshake.
    pub handshake: Duration,
    /// To read a request's headers, counted from the connection's start or the end of the
    /// previous answer: also how long a keep-alive connection may sit idle.
    pub header_read: Duration,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// A watch stream's line (or heartbeat) must be taken by the cell within this, else the
    /// stream is closed: a cell that stops reading holds no task, view or socket buffer longer.
    pub watch_write: Duration,
    /// Streamed watches one cell may hold at once; a newer one closes the oldest (a cell that
    /// reconnects while its old stream is half-open gets the new one at once).
    pub watch_streams_per_cell: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            header_read: Duration::from_secs(10),
            max_connections: 4096,
            watch_write: Duration::from_secs(60),
            watch_streams_per_cell: 2,
        }
    }
}

/// The issuers control signs with: cells' client certificates and instances' server
/// certificates.
pub struct Signers {
    /// Signs cells' client certificates (`POST /v1/cells`).
    pub cells: c2c_certs::Ca,
    /// Signs instances' server certificates and identities (the cell API's CSR endpoints).
    pub instances: c2c_certs::Ca,
    /// The platform root (PEM) the issuers chain to: handed out with identities, for the
    /// containers' trust store (CF_SYSTEM_CERT_PATH).
    pub root_pem: String,
}

/// Shared server state.
pub struct Ctx {
    state: Arc<Mutex<State>>,
    /// A second connection to the same database, for the watches' views: they read a snapshot
    /// of their own and never wait for, or hold back, a writer. `None`: views read through
    /// `state` (an in-memory database has no second connection).
    reader: Option<Arc<Mutex<State>>>,
    /// SHA-256 (hex) of the state dir's admin token: the token itself is not kept.
    admin_hash: String,
    pub(crate) revision: watch::Sender<Revision>,
    signers: Option<Arc<Signers>>,
    cert_ttl: Duration,
    /// Validity of instance identity certificates.
    identity_ttl: Duration,
    /// SPIFFE trust domain of instance identities.
    trust_domain: String,
    budget: Budget,
    /// Policies a `network.write` user's app may be the source of (CF's `max_policies`).
    pub(crate) max_policies: usize,
    pub(crate) started: std::time::Instant,
    /// The control issuer (PEM), handed to cells that join.
    control_ca_pem: Option<String>,
    /// The last revision's view parts every cell shares.
    pub(crate) views: crate::views::Cache,
    /// One refresh of `registry` at a time.
    registry_refresh: tokio::sync::Mutex<()>,
    /// Cell certificates (CN -> fingerprint) found registered at a revision.
    registry: Mutex<(Revision, HashMap<String, String>)>,
    /// Build each watcher's view on its own instead (`control serve --per-watcher-views`: the
    /// reference of `bench/scale.sh`).
    pub(crate) per_watcher_views: bool,
    /// Open watch streams by cell, oldest first (see [`Budget::watch_streams_per_cell`]).
    pub(crate) streams: crate::watch_stream::Streams,
}

impl Ctx {
    /// Wraps an open state; `admin_token` (the state dir's) is `network.admin`, and so is
    /// every token made with that scope; other users' tokens are in the state.
    pub fn new(state: State, admin_token: String) -> Result<Self, StateError> {
        let rev = state.revision()?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            reader: None,
            admin_hash: crate::tokens::sha256_hex(admin_token.as_bytes()),
            revision: watch::Sender::new(rev),
            signers: None,
            cert_ttl: Duration::from_secs(24 * 3600),
            identity_ttl: c2c_certs::identity::DEFAULT_VALIDITY,
            trust_domain: c2c_certs::identity::DEFAULT_TRUST_DOMAIN.into(),
            budget: Budget::default(),
            max_policies: DEFAULT_MAX_POLICIES,
            started: std::time::Instant::now(),
            control_ca_pem: None,
            views: crate::views::Cache::default(),
            registry: Mutex::new((Revision(0), HashMap::new())),
            registry_refresh: tokio::sync::Mutex::new(()),
            per_watcher_views: false,
            streams: Default::default(),
        })
    }

    /// Publishes `rev` to the watches if it is newer than what they have (a change another
    /// replica wrote to the shared database).
    pub fn publish_revision(&self, rev: Revision) {
        self.revision.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }

    /// The revision the watches have.
    pub fn current_revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Removes placements no cell confirmed within `ttl` (see [`State::expire_placements`]).
    pub async fn expire_placements(&self, ttl: Duration) -> Result<Vec<String>, StateError> {
        self.with_state(move |s| s.expire_placements(ttl.as_secs()))
            .await
    }

    /// Expires the leases not renewed within the TTL (see [`State::expire_leases`]).
    pub async fn expire_leases(&self) -> Result<Vec<String>, StateError> {
        self.with_state(|s| s.expire_leases()).await
    }

    /// Hands `pem` (the control issuer) to cells that join with a token.
    pub fn with_control_ca(mut self, pem: String) -> Self {
        self.control_ca_pem = Some(pem);
        self
    }

    /// Limits each `network.write` user's app to `n` policies as a source.
    pub fn with_max_policies(mut self, n: usize) -> Self {
        self.max_policies = n;
        self
    }

    /// Signs cell and instance certificates with `signers`; instance certificates are valid
    /// for `ttl`.
    pub fn with_signers(mut self, signers: Signers, ttl: Duration) -> Self {
        self.signers = Some(Arc::new(signers));
        self.cert_ttl = ttl;
        self
    }

    /// Instance identities are valid for `ttl` and name apps in SPIFFE `trust_domain`.
    pub fn with_identity(mut self, ttl: Duration, trust_domain: String) -> Self {
        self.identity_ttl = ttl;
        self.trust_domain = trust_domain;
        self
    }

    /// Reads the watches' views through `reader`, a second connection to the same database.
    pub fn with_reader(mut self, reader: State) -> Self {
        self.reader = Some(Arc::new(Mutex::new(reader)));
        self
    }

    /// Reads the shared part of the views at the database's current revision, through the
    /// reader connection when there is one.
    pub(crate) async fn read_shared(&self) -> Result<crate::views::Shared, StateError> {
        let Some(reader) = self.reader.clone() else {
            return self.with_state(|s| crate::views::Shared::read(s)).await;
        };
        tokio::task::spawn_blocking(move || {
            let s = reader.lock().unwrap_or_else(|p| p.into_inner());
            crate::views::Shared::read(&s)
        })
        .await
        .map_err(|e| StateError::Internal(format!("view task failed: {e}")))?
    }

    /// Each watcher builds its own view instead of sharing the revision's (the benchmark's
    /// reference).
    pub fn with_per_watcher_views(mut self, on: bool) -> Self {
        self.per_watcher_views = on;
        self
    }

    /// Serves connections within `budget`.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The limits connections are served within.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// How many watch streams `cell` holds open.
    pub fn open_watch_streams(&self, cell: &str) -> usize {
        self.streams.open_for(cell)
    }

    /// Runs `f` on the state off the async threads, then publishes the revision.
    pub(crate) async fn with_state<T: Send + 'static>(
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
        .map_err(|e| StateError::Internal(format!("state task failed: {e}")))?;
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

/// The client certificate's identity: its CN and the SHA-256 of its DER (hex).
#[derive(Debug, Clone)]
pub struct Peer {
    pub(crate) cn: String,
    fingerprint: String,
}

impl Peer {
    /// The identity of a verified client certificate (DER).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        Some(Peer {
            cn: common_name(&CertificateDer::from(der.to_vec()))?,
            fingerprint: fingerprint(der),
        })
    }
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
    let slots = Arc::new(tokio::sync::Semaphore::new(budget.max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: a client that holds many connections open cannot make this one
            // wait, and the listen backlog never fills.
            debug!(%peer, max = budget.max_connections, "connection cap reached; closing");
            drop(tcp);
            continue;
        };
        // Requests and answers are small and interactive: no Nagle delay behind a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(budget.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(error)) => return debug!(%error, %peer, "tls handshake failed"),
                Err(_) => return debug!(%peer, "tls handshake timed out"),
            };
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

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    crate::tokens::sha256_hex(der)
}

fn common_name(der: &CertificateDer) -> Option<String> {
    c2c_certs::info::CertInfo::from_der(der)
        .ok()
        .and_then(|i| i.common_name)
}

pub(crate) fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// An answer with a typed body.
pub(crate) fn typed<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    match serde_json::to_value(body) {
        Ok(v) => reply(status, v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

pub(crate) fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    typed(
        status,
        &ErrorBody {
            error: msg.to_string(),
        },
    )
}

pub(crate) fn state_error(e: StateError) -> Response<Full<Bytes>> {
    match e {
        StateError::UnknownApp(_) | StateError::UnknownInstance(_) => {
            error(StatusCode::NOT_FOUND, e)
        }
        StateError::AppExists(_) | StateError::Conflict(_) => error(StatusCode::CONFLICT, e),
        StateError::Invalid(_) => error(StatusCode::BAD_REQUEST, e),
        StateError::NoLease(_) | StateError::NotFound(_) => error(StatusCode::NOT_FOUND, e),
        StateError::Forbidden(_) => error(StatusCode::FORBIDDEN, e),
        StateError::TagsExhausted | StateError::NoSubnet(_) => error(StatusCode::CONFLICT, e),
        StateError::Db(_) | StateError::Pg(_) | StateError::Internal(_) | StateError::NoRows => {
            warn!(error = %e, "state store failure");
            error(StatusCode::INTERNAL_SERVER_ERROR, "state store failure")
        }
    }
}

/// A request body the API can read: hyper's `Incoming` on the wire, `Full<Bytes>` in tests.
pub trait ReqBody: hyper::body::Body<Data = Bytes, Error = Self::E> + Send + 'static {
    /// The body's error.
    type E: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<B> ReqBody for B
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type E = B::Error;
}

pub(crate) fn query<B>(req: &Request<B>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        // Values are percent-decoded: the cf CLI sends `id=a%2Cb`.
        .map(|(k, v)| (c2c_api::decode_segment(k), c2c_api::decode_segment(v)))
        .collect()
}

pub(crate) async fn body<B: ReqBody>(req: Request<B>) -> Result<Bytes, Response<Full<Bytes>>> {
    body_within(req, BODY_READ).await
}

/// The request body, at most [`MAX_BODY`] bytes, read within `limit` (a client trickling a body
/// cannot hold a connection and its task forever).
async fn body_within<B: ReqBody>(
    req: Request<B>,
    limit: Duration,
) -> Result<Bytes, Response<Full<Bytes>>> {
    match tokio::time::timeout(limit, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("reading request body: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {limit:?}"),
        )),
    }
}

/// Parses a JSON body into `T`, or answers 400 naming the expected shape.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned, B: ReqBody>(
    req: Request<B>,
    shape: &str,
) -> Result<T, Response<Full<Bytes>>> {
    let b = body(req).await?;
    serde_json::from_slice(&b).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be {shape}: {e}"),
        )
    })
}

/// The caller a request's token speaks for, or CF's 401.
async fn authenticate<B>(req: &Request<B>, ctx: &Ctx) -> Result<Caller, Response<Full<Bytes>>> {
    let unauthorized = |msg: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, msg);
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let Some(v) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Err(unauthorized("missing authorization header"));
    };
    // As Cloud Foundry's policy server: `Bearer T`, `bearer T` (the cf CLI sends UAA's
    // lower-case token type) or the bare token.
    let v = v.to_str().unwrap_or_default();
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v);
    let hash = crate::tokens::sha256_hex(token.as_bytes());
    // Constant-time compare: the admin token is the one secret between a user and every app.
    if crate::state::constant_time_eq(hash.as_bytes(), ctx.admin_hash.as_bytes()) {
        return Ok(Caller::admin());
    }
    match ctx.with_state(move |s| s.caller(&hash)).await {
        Ok(Some(c)) => Ok(c),
        // CF's words: its tokens are UAA's.
        Ok(None) => Err(unauthorized("failed to verify token with uaa")),
        Err(e) => Err(state_error(e)),
    }
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

/// Answers one request as the caller it comes from (`peer`: the verified client certificate,
/// if any): the whole API, with no TLS or sockets, so it is testable in-process. Every answer
/// carries CF's security headers.
pub async fn handle<B: ReqBody>(
    req: Request<B>,
    ctx: &Arc<Ctx>,
    peer: Option<&Peer>,
) -> Response<Full<Bytes>> {
    let mut r = route(req, ctx, peer).await;
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

/// Signs a cell's CSR with the cell issuer: CN = `name`, clientAuth only. Returns the chain and
/// the leaf's fingerprint (what the registry records).
fn sign_cell(
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
    Ok((chain, fingerprint(&der)))
}

/// `POST /v1/join`: a new cell with a join token's secret gets its certificate.
async fn join<B: ReqBody>(req: Request<B>, ctx: &Ctx) -> Response<Full<Bytes>> {
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

/// The operators' part of the external API: placed instances, registered cells, leases.
pub(crate) async fn placement_and_cells<B: ReqBody>(
    req: Request<B>,
    ctx: &Ctx,
    caller: &Caller,
    ep: &Endpoint,
) -> Response<Full<Bytes>> {
    match ep {
        Endpoint::ListInstances => match ctx.with_state(|s| s.placements(None)).await {
            Ok(mut instances) => {
                instances.retain(|i| caller.may_manage(i.app_guid.as_str()));
                typed(StatusCode::OK, &PlacementList { instances })
            }
            Err(e) => state_error(e),
        },
        Endpoint::PlaceInstance(app) => {
            // Placement is the scheduler's (here: a user's token): a cell may only confirm an
            // instance placed on it, so it can obtain identities only for what runs on it.
            let p: PlaceRequest =
                match json_body(req, "{\"cell\": \"...\", \"index\": N (optional)}").await {
                    Ok(p) => p,
                    Err(r) => return r,
                };
            let app = app.to_string();
            let who = caller.clone();
            match ctx
                .with_state(move |s| {
                    let a = managed_app(s, &who, &app)?;
                    if !who.may_place_on(&p.cell) {
                        return Err(StateError::Forbidden(format!(
                            "{} may not place instances on cell {} (its token is bound to other cells)",
                            who.user, p.cell
                        )));
                    }
                    s.place_instance_as(
                        &a.guid,
                        &p.cell,
                        p.index,
                        p.runtime.as_deref(),
                        !who.is_admin(),
                    )
                })
                .await
            {
                Ok(p) => {
                    info!(instance = %p.guid, app = %p.app_guid, index = p.index, cell = %p.cell, "instance placed");
                    reply(
                        StatusCode::CREATED,
                        serde_json::to_value(p).unwrap_or_default(),
                    )
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RemoveInstance(guid) => {
            let guid = guid.to_string();
            let who = caller.clone();
            match ctx
                .with_state(move |s| {
                    // Another space's instance is, to this caller, one that does not exist.
                    if !who.is_admin()
                        && !s
                            .placements(None)?
                            .iter()
                            .any(|p| p.guid == guid && who.may_manage(p.app_guid.as_str()))
                    {
                        return Ok(false);
                    }
                    s.remove_instance(&guid)
                })
                .await
            {
                Ok(removed) => typed(StatusCode::OK, &Removed { removed }),
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListCells => {
            match ctx
                .with_state(|s| {
                    Ok((
                        s.cells()?,
                        s.leases()?,
                        s.placements(None)?,
                        s.lease_ttl_secs(),
                    ))
                })
                .await
            {
                Ok((cells, leases, placed, ttl)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    let list: Vec<_> = cells
                        .iter()
                        .map(|c| {
                            let lease = leases.iter().find(|l| &l.cell == c).cloned();
                            CellRecord {
                                name: c.clone(),
                                healthy: lease
                                    .as_ref()
                                    .is_some_and(|l| l.renewed_at >= now - ttl as i64),
                                lease,
                                instances: placed.iter().filter(|p| &p.cell == c).count(),
                            }
                        })
                        .collect();
                    typed(StatusCode::OK, &CellList { cells: list })
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RegisterCell => {
            // A cell's identity: its key stays on the cell; control signs its CSR with the cell
            // issuer (CN = the name, clientAuth only) and records the certificate's fingerprint,
            // so a re-registration revokes the previous certificate.
            let r: RegisterCell = match json_body(
                req,
                "{\"name\": \"...\", \"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}",
            )
            .await
            {
                Ok(r) => r,
                Err(r) => return r,
            };
            if let Err(e) = crate::state::validate_cell_name(&r.name) {
                return state_error(e);
            }
            let (chain, fp) = match sign_cell(ctx, &r.name, &r.csr) {
                Ok(x) => x,
                Err(resp) => return *resp,
            };
            let name = r.name.clone();
            match ctx.with_state(move |s| s.register_cell(&name, &fp)).await {
                Ok(()) => {
                    info!(cell = %r.name, "cell registered");
                    typed(
                        StatusCode::OK,
                        &Signed {
                            cert_pem: chain,
                            names: vec![],
                            root_pem: None,
                        },
                    )
                }
                Err(e) => state_error(e),
            }
        }
        Endpoint::RemoveCell(name) => {
            let name = name.to_string();
            let n2 = name.clone();
            match ctx.with_state(move |s| s.remove_cell(&n2)).await {
                Ok(true) => {
                    info!(cell = %name, "cell removed: certificate revoked, lease and instances freed");
                    typed(StatusCode::OK, &Empty {})
                }
                Ok(false) => error(StatusCode::NOT_FOUND, format!("no registered cell {name}")),
                Err(e) => state_error(e),
            }
        }
        Endpoint::ListLeases => match ctx.with_state(|s| s.leases()).await {
            Ok(l) => reply(StatusCode::OK, json!({ "leases": l })),
            Err(e) => state_error(e),
        },
        other => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {}", other.method(), other.path()),
        ),
    }
}

async fn cell_api<B: ReqBody>(
    mut req: Request<B>,
    ctx: &Arc<Ctx>,
    cell: &str,
    peer: Option<&Peer>,
    rest: &[String],
) -> Response<Full<Bytes>> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let cell_s = cell.to_string();
    match (req.method().clone(), rest.as_slice()) {
        (Method::POST, ["lease"]) => {
            let a: LeaseRequest = match json_body(req, "{\"underlay_ip\": \"A.B.C.D\"}").await {
                Ok(a) => a,
                Err(r) => return r,
            };
            match ctx
                .with_state(move |s| s.acquire_lease_preferring(&cell_s, a.underlay_ip, a.prefer))
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
                Ok(_) => typed(StatusCode::OK, &Empty {}),
                Err(e) => state_error(e),
            }
        }
        (Method::PUT, ["instances", guid]) => {
            let guid = guid.to_string();
            let r: Confirm = match json_body(req, "{\"app_guid\", \"index\", \"ip\"}").await {
                Ok(r) => r,
                Err(r) => return r,
            };
            let res = ctx
                .with_state(move |s| s.confirm_instance(&cell_s, &guid, &r.app_guid, r.index, r.ip))
                .await;
            match res {
                Ok(()) => typed(StatusCode::OK, &Empty {}),
                Err(e) => {
                    warn!(%cell, error = %e, "instance confirmation refused");
                    state_error(e)
                }
            }
        }
        (Method::POST, ["instances", guid, "certificate"]) => {
            // The cell sends a CSR; control decides every name from its own tables: CN = the
            // GUID it generated, DNS SANs = the routes of the instance's app, IP SAN = the
            // address the cell confirmed inside its own lease. Only the cell the instance is
            // placed on, and only once it confirmed it, gets a certificate.
            let guid = guid.to_string();
            let CsrRequest { csr } =
                match json_body(req, "{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}").await
                {
                    Ok(c) => c,
                    Err(r) => return r,
                };
            let Some(signers) = ctx.signers.clone() else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this control plane has no issuers to sign with",
                );
            };
            let ttl = ctx.cert_ttl;
            let found = ctx
                .with_state(move |s| {
                    let inst = s
                        .instances(Some(&cell_s))?
                        .into_iter()
                        .find(|i| i.guid == guid)
                        .ok_or_else(|| {
                            StateError::Forbidden(format!(
                                "instance {guid} is not placed on cell {cell_s} and confirmed"
                            ))
                        })?;
                    Ok((c2c_api::instance_names(&s.routes()?, &inst), inst))
                })
                .await;
            let (names, inst) = match found {
                Ok(x) => x,
                Err(e) => return state_error(e),
            };
            let sans = match c2c_certs::SanSet::new(&names, [inst.ip.into()]) {
                Ok(s) => s,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match signers
                .instances
                .sign_csr(&csr, &inst.guid, &sans, ttl, c2c_certs::Usage::Server)
            {
                Ok(pem) => {
                    info!(%cell, instance = %inst.guid, names = ?names, "certificate signed");
                    typed(
                        StatusCode::OK,
                        &Signed {
                            cert_pem: pem,
                            names,
                            root_pem: None,
                        },
                    )
                }
                Err(e @ c2c_certs::CaError::BadCsr(_)) => error(StatusCode::BAD_REQUEST, e),
                Err(e) => {
                    warn!(error = %e, "signing an instance certificate failed");
                    error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed")
                }
            }
        }
        (Method::POST, ["instances", guid, "identity"]) => {
            // The instance's identity (CF_INSTANCE_CERT): as for the route certificate, the
            // cell sends only a key (in a CSR) and control decides every name from its tables.
            let guid = guid.to_string();
            let CsrRequest { csr } =
                match json_body(req, "{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}").await
                {
                    Ok(c) => c,
                    Err(r) => return r,
                };
            let Some(signers) = ctx.signers.clone() else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this control plane has no issuers to sign with",
                );
            };
            let found = ctx
                .with_state(move |s| {
                    let inst = s
                        .instances(Some(&cell_s))?
                        .into_iter()
                        .find(|i| i.guid == guid)
                        .ok_or_else(|| {
                            StateError::Forbidden(format!(
                                "instance {guid} is not placed on cell {cell_s} and confirmed"
                            ))
                        })?;
                    let (space, org) = s.app_space_and_org(inst.app_guid.as_str())?;
                    Ok((inst, space, org))
                })
                .await;
            let (inst, space, org) = match found {
                Ok(x) => x,
                Err(e) => return state_error(e),
            };
            let id = c2c_certs::Identity::new(
                &ctx.trust_domain,
                &inst.guid,
                inst.app_guid.as_str(),
                &space,
                &org,
            );
            match signers
                .instances
                .sign_identity_csr(&csr, &id, inst.ip.into(), ctx.identity_ttl)
            {
                Ok(pem) => {
                    info!(%cell, instance = %inst.guid, spiffe_id = %id.spiffe_id, "identity signed");
                    typed(
                        StatusCode::OK,
                        &Signed {
                            cert_pem: pem,
                            names: vec![inst.guid.clone()],
                            root_pem: Some(signers.root_pem.clone()),
                        },
                    )
                }
                Err(e @ c2c_certs::CaError::BadCsr(_)) => error(StatusCode::BAD_REQUEST, e),
                Err(e) => {
                    warn!(error = %e, "signing an instance identity failed");
                    error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed")
                }
            }
        }
        (Method::DELETE, ["instances", guid]) => {
            let guid = guid.to_string();
            match ctx
                .with_state(move |s| s.unconfirm_instance(&cell_s, &guid))
                .await
            {
                Ok(_) => typed(StatusCode::OK, &Empty {}),
                Err(e) => state_error(e),
            }
        }
        (Method::GET, ["watch"]) => {
            let q = query(&req);
            let after = Revision(q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0));
            let timeout = q
                .get("timeout")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(30))
                .min(MAX_WATCH);
            let delta = q.get("delta").is_some_and(|d| d == "1");
            // A stream (`Upgrade: c2c-watch`): the connection leaves HTTP after the 101, and a
            // task of its own writes a line per change until the cell goes (or is revoked).
            if req
                .headers()
                .get(hyper::header::UPGRADE)
                .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(WATCH_PROTOCOL.as_bytes()))
            {
                let Some(peer) = peer.cloned() else {
                    return error(StatusCode::FORBIDDEN, "a watch needs a cell certificate");
                };
                let upgrade = hyper::upgrade::on(&mut req);
                drop((q, req));
                let ctx = ctx.clone();
                tokio::spawn(async move {
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
                return r;
            }
            // The request's head points into the connection's read buffer: holding it while
            // parked would make the connection allocate another for its next read.
            drop((q, req));
            let mut rx = ctx.revision.subscribe();
            // Returns at once if the state is already past `after`; else on the next change.
            let _ = tokio::time::timeout(timeout, rx.wait_for(|rev| *rev > after)).await;
            if ctx.per_watcher_views {
                return match ctx.with_state(move |s| view(s, &cell_s)).await {
                    Ok(v) => reply(StatusCode::OK, serde_json::to_value(v).unwrap_or_default()),
                    Err(e) => state_error(e),
                };
            }
            let current = *ctx.revision.borrow();
            let shared = ctx.views.at_least(current, || ctx.read_shared()).await;
            // Changes only, when the cell asked for them and this replica built the revision it
            // has (else the whole view).
            let since = delta.then(|| ctx.views.hashes_at(after)).flatten();
            match shared.and_then(|s| s.view_json(&cell_s, since)) {
                Ok(json) => {
                    let mut r = Response::new(Full::new(Bytes::from(json)));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    r
                }
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
        .map(|i| i.app_guid.to_string())
        .collect();
    Ok(CellView {
        revision: s.revision()?,
        leases: s.leases()?,
        apps: s.apps()?,
        policies: s.policies(Some(&local))?,
        instances,
        routes: s.routes()?,
        domains: s.domains()?,
        egress: s.egress()?,
        unchanged: vec![],
    })
}
