//! Relaying names outside the internal domains to the upstream resolvers, within a [`Budget`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use super::*;

/// What the cell DNS may spend on clients and upstreams.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Queries relayed upstream at once, over UDP and TCP together; past it, SERVFAIL.
    pub upstream_in_flight: usize,
    /// How long one upstream may take to answer.
    pub upstream_timeout: Duration,
    /// TCP connections served at once; more are closed.
    pub tcp_connections: usize,
    /// TCP connections one client address may hold (a container is one address), so one
    /// container cannot deny TCP DNS to its whole cell; more are closed.
    pub tcp_per_source: usize,
    /// A TCP connection with no query for this long is closed.
    pub tcp_idle: Duration,
    /// A TCP client must take each answer within this long (one that never reads cannot hold
    /// a slot).
    pub tcp_write: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            upstream_in_flight: 256,
            upstream_timeout: Duration::from_secs(2),
            tcp_connections: 512,
            tcp_per_source: 16,
            tcp_idle: Duration::from_secs(10),
            tcp_write: Duration::from_secs(5),
        }
    }
}

/// Relays queries for names outside the internal domains to the first answering upstream,
/// within a [`Budget`].
#[derive(Clone)]
pub struct Upstreams {
    addrs: Arc<Vec<SocketAddr>>,
    slots: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

impl Upstreams {
    /// Relays to `addrs` (none: such queries are refused).
    pub fn new(addrs: Vec<SocketAddr>, budget: &Budget) -> Self {
        Self {
            addrs: Arc::new(addrs),
            slots: Arc::new(tokio::sync::Semaphore::new(budget.upstream_in_flight)),
            timeout: budget.upstream_timeout,
        }
    }

    pub(super) fn any(&self) -> bool {
        !self.addrs.is_empty()
    }

    /// The upstream's answer to `query`, or SERVFAIL when none answered or too many queries
    /// are in flight already. How long each relay took (to an answer or a SERVFAIL) goes into
    /// [`RELAY_SECONDS`].
    pub(super) async fn relay(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let servfail = || {
            let id = u16::from_be_bytes([query[0], query[1]]);
            Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
                .to_vec()
                .ok()
        };
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            debug!("dns: upstream budget spent; answering SERVFAIL");
            return servfail();
        };
        let began = std::time::Instant::now();
        let mut got = None;
        for up in self.addrs.iter() {
            got = if tcp {
                forward_tcp(query, *up, self.timeout).await
            } else {
                forward_udp(query, *up, self.timeout).await
            };
            if got.is_some() {
                break;
            }
        }
        RELAY_SECONDS.observe(began.elapsed().as_secs_f64());
        got.or_else(servfail)
    }
}

/// How long relaying a query upstream took, to its answer or to giving up (1 ms to about 4 s,
/// doubling): the latency the cell's DNS adds to names outside `apps.internal`. Names the cell
/// answers itself take microseconds and are not timed (DNS is the hot path).
pub static RELAY_SECONDS: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
    std::sync::LazyLock::new(|| {
        prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13),
        )
    });

/// Whether `answer` answers `query`: the same id, a response, and the same question.
fn answers(query: &[u8], answer: &[u8]) -> bool {
    let (Ok(q), Ok(a)) = (Message::from_vec(query), Message::from_vec(answer)) else {
        return false;
    };
    a.metadata.id == q.metadata.id
        && a.metadata.message_type == MessageType::Response
        && a.queries == q.queries
}

async fn forward_tcp(query: &[u8], up: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let attempt = async {
        let mut s = TcpStream::connect(up).await.ok()?;
        write_framed(&mut s, query).await.ok()?;
        read_framed(&mut s).await.ok().flatten()
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .filter(|a| answers(query, a))
}

/// Relays over UDP from a socket connected to `up` (the kernel drops datagrams from any other
/// source), taking only a reply with the query's id and question: an off-path sender that
/// guesses the port still has to guess both.
async fn forward_udp(query: &[u8], up: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = UdpSocket::bind(bind).await.ok()?;
    s.connect(up).await.ok()?;
    s.send(query).await.ok()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if answers(query, &buf[..n]) {
            buf.truncate(n);
            return Some(buf);
        }
        debug!(%up, "dns: dropped an upstream reply that does not answer the query");
    }
}
