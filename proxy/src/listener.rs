//! Accepting clients: TLS handshake under a deadline, connect to the app, forward.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::forward::{forward, ForwardError};
use crate::metrics::{DirectionLabel, ListenerLabel, Metrics};
use crate::tls::TlsStream;

/// What every connection of every listener shares.
pub struct Shared {
    /// TLS server configs (their resolver reads the hot-reloaded pair), one per app protocol.
    pub tls: TlsConfigs,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Permits for open connections (`--max-connections`).
    pub permits: Arc<Semaphore>,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Upstream connect deadline.
    pub connect_timeout: Duration,
    /// A forwarded connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A client that sends nothing for this long after its handshake is closed.
    pub first_byte_timeout: Duration,
    /// Open connections per client address.
    pub per_source: Arc<PerSource>,
    /// Tracks open connections for the drain on shutdown.
    pub tracker: TaskTracker,
    /// Who may call, and whether the app wants a PROXY protocol header.
    pub access: Arc<crate::identity::AccessStore>,
}

/// The server config for each app protocol: the same config but for the ALPN protocols it
/// offers, so a change of the app's setting (the access file) applies from the next handshake.
pub struct TlsConfigs {
    http1: Arc<ServerConfig>,
    http2: Arc<ServerConfig>,
    both: Arc<ServerConfig>,
}

impl TlsConfigs {
    /// `base` (offering no ALPN) and its variants.
    pub fn new(base: ServerConfig) -> Self {
        let with = |p: c2c_api::AppProtocol| {
            let mut c = base.clone();
            c.alpn_protocols = p.alpn().iter().map(|a| a.to_vec()).collect();
            Arc::new(c)
        };
        Self {
            http1: with(c2c_api::AppProtocol::Http1),
            http2: with(c2c_api::AppProtocol::Http2),
            both: with(c2c_api::AppProtocol::Both),
        }
    }

    /// The config for an app that speaks `p`.
    pub fn get(&self, p: c2c_api::AppProtocol) -> Arc<ServerConfig> {
        match p {
            c2c_api::AppProtocol::Http1 => self.http1.clone(),
            c2c_api::AppProtocol::Http2 => self.http2.clone(),
            c2c_api::AppProtocol::Both => self.both.clone(),
        }
    }
}

pub use c2c_api::per_source::{PerSource, SourceSlot};

/// Per-listener handles to its metrics, resolved once rather than per connection.
struct ListenerMetrics {
    accepted: Counter,
    active: Gauge,
    down_to_up: Counter,
    up_to_down: Counter,
}

/// Accepts on `listener` until `shutdown`, then returns (dropping the socket, so new connects are
/// refused while open connections drain).
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let label = ListenerLabel {
        listener: listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    // One statement per handle: get_or_create holds the family's lock until its guard drops.
    let m = &shared.metrics;
    let accepted = m.accepted.get_or_create(&label).clone();
    let active = m.active.get_or_create(&label).clone();
    let down_to_up = m
        .bytes
        .get_or_create(&DirectionLabel {
            direction: "downstream_to_upstream",
        })
        .clone();
    let up_to_down = m
        .bytes
        .get_or_create(&DirectionLabel {
            direction: "upstream_to_downstream",
        })
        .clone();
    let lm = Arc::new(ListenerMetrics {
        accepted,
        active,
        down_to_up,
        up_to_down,
    });
    loop {
        // Take a permit before accepting: at the limit, clients wait in the kernel backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        lm.accepted.inc();
        let Some(slot) = shared.per_source.take(peer.ip()) else {
            shared.metrics.source_limited.inc();
            debug!(%peer, "client address holds its share of connections; closing");
            // Dropped: the client sees its connection closed at once, no handshake.
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let lm = lm.clone();
        shared.tracker.clone().spawn(async move {
            lm.active.inc();
            handle(stream, peer, upstream, &shared, &lm).await;
            lm.active.dec();
            drop(slot);
            drop(permit);
        });
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    shared: &Shared,
    lm: &ListenerMetrics,
) {
    let _ = stream.set_nodelay(true);
    let app_protocol = shared.access.current().app_protocol;
    let mut tls = match tokio::time::timeout(
        shared.handshake_timeout,
        // Boxed: the handshake's state (another ~2 KiB) is freed when it ends, instead of
        // sizing the connection's task for as long as the connection lives.
        Box::pin(TlsStream::accept(stream, shared.tls.get(app_protocol))),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            handshake_failed(&error, peer, app_protocol, shared);
            return;
        }
        Err(_) => {
            debug!(%peer, "tls handshake timed out");
            shared.metrics.handshake_failed("timeout");
            return;
        }
    };
    if tls.resumed() {
        let access = shared.access.current();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(reason) = crate::identity::refuse_resumed(tls.peer_leaf(), &access, now) {
            warn!(%peer, instance = %access.instance, reason, "caller refused: a resumed session, checked as a new caller");
            shared.metrics.client_identity_refused(reason);
            close_quickly(&mut tls).await;
            return;
        }
    }
    shared.metrics.negotiated(tls.alpn_protocol());
    debug!(%peer, alpn = %tls.alpn_protocol().map(String::from_utf8_lossy).unwrap_or_default(), "handshake done");
    let mut app =
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => {
                let reason = match error.kind() {
                    io::ErrorKind::ConnectionRefused => "refused",
                    _ => "error",
                };
                warn!(%peer, %upstream, %error, "upstream (app) connect failed; closing client");
                shared.metrics.upstream_failed(reason);
                close_quickly(&mut tls).await;
                return;
            }
            Err(_) => {
                warn!(%peer, %upstream, "upstream (app) connect timed out; closing client");
                shared.metrics.upstream_failed("timeout");
                close_quickly(&mut tls).await;
                return;
            }
        };
    let _ = app.set_nodelay(true);
    if shared.access.current().proxy_protocol == c2c_api::ProxyProtocol::V2 {
        if let Err(error) = send_proxy_header(&tls, &mut app, peer, upstream, shared).await {
            debug!(%peer, %error, "writing the PROXY header to the app failed");
            close_quickly(&mut tls).await;
            return;
        }
    }
    match forward(
        &mut tls,
        &mut app,
        &lm.down_to_up,
        &lm.up_to_down,
        crate::forward::Quiet {
            first_byte: shared.first_byte_timeout,
            idle: shared.idle_timeout,
        },
    )
    .await
    {
        Ok((up, down)) => {
            debug!(%peer, bytes_to_app = up, bytes_to_client = down, "connection closed")
        }
        Err(ForwardError::Downstream(error)) => {
            debug!(%peer, %error, "client connection ended with an error")
        }
        Err(ForwardError::Upstream(error)) => {
            debug!(%peer, %error, "app connection ended with an error")
        }
        Err(ForwardError::Silent(after)) => {
            shared.metrics.idle_closed.inc();
            debug!(%peer, ?after, "client sent nothing after its handshake; closing the connection");
            close_quickly(&mut tls).await;
        }
        Err(ForwardError::Idle(after)) => {
            shared.metrics.idle_closed.inc();
            debug!(%peer, ?after, "no traffic either way; closing the connection");
            close_quickly(&mut tls).await;
        }
    }
}

/// Says why a handshake failed (a refused caller as a warning, the rest at debug) and counts it.
fn handshake_failed(
    error: &io::Error,
    peer: SocketAddr,
    app_protocol: c2c_api::AppProtocol,
    shared: &Shared,
) {
    let reason = handshake_failure_reason(error);
    if reason == "no_client_identity" {
        warn!(%peer, instance = %shared.access.current().instance, "caller refused: it presented no identity, and this app requires one");
        shared.metrics.client_identity_refused("no_certificate");
    } else if reason == "no_application_protocol" {
        warn!(%peer, app_protocol = %app_protocol, "caller refused: it offered in ALPN none of the protocols this app speaks (c2c update-app --app-protocol)");
    } else {
        debug!(%peer, %error, reason, "tls handshake failed");
    }
    shared.metrics.handshake_failed(reason);
}

/// The PROXY v2 header to the app: the caller's addresses and, when its identity is known, its
/// names, TLS version and ALPN.
async fn send_proxy_header(
    tls: &TlsStream,
    app: &mut TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    shared: &Shared,
) -> io::Result<()> {
    let header = {
        let access = shared.access.current();
        let caller = crate::identity::caller(tls.peer_leaf(), &access)
            .filter(|c| c.verdict != c2c_api::access::Verdict::Unknown);
        let local = tls.tcp.local_addr().unwrap_or(upstream);
        crate::proxy_protocol::header(
            peer,
            local,
            caller.as_ref().map(|c| crate::proxy_protocol::CallerNames {
                common_name: &c.identity.instance_guid,
                spiffe_id: &c.identity.spiffe_id,
                tls_version: tls.version_text(),
            }),
            tls.alpn_protocol(),
        )
    };
    tokio::io::AsyncWriteExt::write_all(app, &header).await
}

/// Sends close_notify and FIN, but never waits long on a client that does not read.
async fn close_quickly(s: &mut TlsStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), s.shutdown()).await;
}

/// A short, stable label for a failed handshake.
fn handshake_failure_reason(error: &io::Error) -> &'static str {
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::PeerIncompatible(_) => "peer_incompatible",
            rustls::Error::InvalidMessage(_) => "invalid_message",
            rustls::Error::AlertReceived(_) => "alert_received",
            rustls::Error::NoCertificatesPresented => "no_client_identity",
            rustls::Error::NoApplicationProtocol => "no_application_protocol",
            rustls::Error::InvalidCertificate(_) => "client_identity_refused",
            _ => "tls_error",
        };
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => "closed",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::InvalidData => "invalid_message",
        _ => "io_error",
    }
}
