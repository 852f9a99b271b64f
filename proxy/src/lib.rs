//! c2c-proxy: the sidecar in every app container. Terminates TLS on each listener (61443 -> 8080
//! by default in the platform) with a certificate whose SANs are the app's internal routes,
//! hot-reloaded from the cert dir without a restart, and forwards bytes to the app (L4).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod config;
pub mod forward;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod proxy_protocol;
pub mod reload;
pub mod sessions;
pub mod tls;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Args, Config, ConfigError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// There is no valid certificate to serve.
    #[error("no valid certificate in {dir}: {source}")]
    NoCertificate {
        /// The cert dir.
        dir: std::path::PathBuf,
        /// What is wrong with it.
        source: c2c_certs::PairError,
    },
    /// A listener or the admin endpoint could not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("tls setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The cert dir could not be watched.
    #[error(transparent)]
    Watch(#[from] reload::WatchError),
}

/// The crypto provider: aws-lc-rs, TLS 1.2 and 1.3 only (rustls has nothing older).
pub fn provider() -> Arc<CryptoProvider> {
    c2c_certs::provider()
}

/// Runs the proxy until `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT), then
/// drains open connections for up to the drain timeout.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let provider = provider();
    // Seed the RNG now: aws-lc seeds it on first use, which took ~30 ms of the first client's
    // handshake (measured on the platform) instead of the sidecar's start-up.
    let _ = provider.secure_random.fill(&mut [0u8; 32]);
    let access = Arc::new(identity::AccessStore::open(&cfg.cert_dir));
    let store = Arc::new(
        reload::CertStore::open(&cfg.cert_dir, provider.clone(), metrics.clone())
            .map_err(|source| StartError::NoCertificate {
                dir: cfg.cert_dir.clone(),
                source,
            })?
            .with_access(access.clone()),
    );
    // Callers' identities chain to the issuer of our own leaf (the instances issuer), and to
    // nothing else: a cell's client certificate (another issuer) is no caller identity.
    let issuer = store.current().certified.cert.get(1).cloned();
    let verifier =
        identity::IdentityVerifier::new(issuer, provider.clone(), access.clone(), metrics.clone());
    let tls = server_config(provider, verifier, &store, &access)?;
    let shared = Arc::new(listener::Shared {
        tls: listener::TlsConfigs::new(tls),
        metrics: metrics.clone(),
        permits: Arc::new(Semaphore::new(cfg.max_connections)),
        handshake_timeout: cfg.handshake_timeout,
        connect_timeout: cfg.connect_timeout,
        idle_timeout: cfg.idle_timeout,
        first_byte_timeout: cfg.first_byte_timeout,
        per_source: listener::PerSource::new(cfg.max_connections_per_source),
        tracker: TaskTracker::new(),
        access,
    });

    // Watch before anything else: a pair written from here on is seen.
    let triggers = reload::triggers(&store)?;
    // Bind everything before reporting ready; any failure stops the start.
    let bound = bind_listeners(&cfg).await?;
    let admin_state = Arc::new(admin::AdminState {
        ready: Default::default(),
        metrics: metrics.clone(),
        store: store.clone(),
    });
    let stop_accepting = CancellationToken::new();
    if let Some(addr) = cfg.admin {
        let sock = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = sock
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        info!(admin = %local, "admin endpoint bound");
        tokio::spawn(admin::serve(
            sock,
            admin_state.clone(),
            shutdown.child_token(),
        ));
    }
    let reloader = tokio::spawn(reload::run(
        store.clone(),
        triggers,
        cfg.reload_debounce,
        cfg.reload_interval,
        stop_accepting.clone(),
    ));
    let mut accept_loops = Vec::new();
    for (sock, upstream) in bound {
        accept_loops.push(tokio::spawn(listener::serve(
            sock,
            upstream,
            shared.clone(),
            stop_accepting.clone(),
        )));
    }
    let pair = store.current();
    info!(
        cert_dir = %cfg.cert_dir.display(),
        sans = ?pair.info.sans.dns,
        not_after = pair.info.not_after,
        "ready"
    );
    admin_state.ready.store(true, Ordering::Relaxed);

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = reloader => {
            // The reload loop ended on its own (it panicked): without it the sidecar would
            // serve a stale cert, so it stops rather than run on blind.
            stop_accepting.cancel();
            if let Err(e) = r { tracing::error!(error = %e, "certificate reload loop failed; stopping"); }
        }
    }
    admin_state.ready.store(false, Ordering::Relaxed);
    stop_accepting.cancel();
    for l in accept_loops {
        let _ = l.await;
    }
    drain(&shared.tracker, cfg.drain_timeout).await;
    Ok(())
}

/// The TLS server config: TLS 1.3 and 1.2, callers' identities checked by `verifier`, the
/// certificate from `store` (reloaded under it), and resumed sessions only those made under
/// the rules in service (see `sessions`).
fn server_config(
    provider: Arc<CryptoProvider>,
    verifier: identity::IdentityVerifier,
    store: &Arc<reload::CertStore>,
    access: &Arc<identity::AccessStore>,
) -> Result<ServerConfig, StartError> {
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(reload::Resolver(store.clone())));
    tls.session_storage = Arc::new(sessions::Sessions::new(
        rustls::server::ServerSessionMemoryCache::new(256),
        access.clone(),
    ));
    Ok(tls)
}

/// Every `--listen`, bound, with its upstream.
async fn bind_listeners(
    cfg: &Config,
) -> Result<Vec<(TcpListener, std::net::SocketAddr)>, StartError> {
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        let bind_error = |source| StartError::Bind {
            addr: l.listen,
            source,
        };
        let sock = TcpListener::bind(l.listen).await.map_err(bind_error)?;
        let local = sock.local_addr().map_err(bind_error)?;
        info!(listen = %local, upstream = %l.upstream, "listener bound");
        bound.push((sock, l.upstream));
    }
    Ok(bound)
}

/// Lets open connections finish, up to `timeout`; then the rest are closed.
async fn drain(tracker: &TaskTracker, timeout: std::time::Duration) {
    tracker.close();
    let open = tracker.len();
    info!(open, drain_timeout = ?timeout, "stopped accepting; draining open connections");
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        warn!(
            open = tracker.len(),
            "drain timeout reached; closing remaining connections"
        );
    } else {
        info!("all connections drained");
    }
}
