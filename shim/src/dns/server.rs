//! Serving the zone: UDP with batched receives and sends, TCP within a [`Budget`], and the
//! query counts the agent's metrics read.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::*;

/// Serves DNS (UDP and TCP) on `listen` from `zone` on a thread with a runtime of its own, so
/// nothing the agent's loop does delays an answer. Returns once both sockets are bound, or why
/// they could not be.
pub fn spawn(
    listen: SocketAddr,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
    budget: Budget,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("dns runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let udp = match UdpSocket::bind(listen).await {
                    Ok(s) => s,
                    Err(e) => return drop(tx.send(Err(format!("binding {listen}: {e}")))),
                };
                let tcp = match TcpListener::bind(listen).await {
                    Ok(s) => s,
                    Err(e) => return drop(tx.send(Err(format!("binding {listen} (tcp): {e}")))),
                };
                let _ = tx.send(Ok(()));
                let ups = Upstreams::new(upstreams, &budget);
                tokio::join!(
                    serve(udp, zone.clone(), ups.clone()),
                    serve_tcp(tcp, zone, ups, budget)
                );
            });
        })
        .map_err(|e| format!("dns thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the dns thread ended before binding".to_string())?
}

/// Queries this process's DNS answered, by response code, and those it relayed upstream or
/// ignored: plain atomics on the hot path, read by the agent's metrics at a scrape.
pub struct QueryCounts {
    rcodes: [std::sync::atomic::AtomicU64; 16],
    /// Queries taken, by the question's type (see [`QTYPES`]; the last slot is any other).
    qtypes: [std::sync::atomic::AtomicU64; QTYPES.len() + 1],
    /// Sent to an upstream resolver (its answer, if any, is the upstream's).
    pub relayed: std::sync::atomic::AtomicU64,
    /// Not answered: not a query, or malformed beyond an answer.
    pub ignored: std::sync::atomic::AtomicU64,
}

impl QueryCounts {
    const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            rcodes: [ZERO; 16],
            qtypes: [ZERO; QTYPES.len() + 1],
            relayed: ZERO,
            ignored: ZERO,
        }
    }

    /// Counts an answer by the response code in its header.
    fn answered(&self, reply: &[u8]) {
        if let Some(b) = reply.get(3) {
            self.rcodes[(b & 0x0f) as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts a query by its question's type (read from the wire: past the 12-byte header and
    /// the name's labels); one that has no question is not counted.
    fn queried(&self, query: &[u8]) {
        if let Some(t) = qtype(query) {
            let i = QTYPES
                .iter()
                .position(|(code, _)| *code == t)
                .unwrap_or(QTYPES.len());
            self.qtypes[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Queries so far by the question's type (`A`, `AAAA`, ..., `other`), types never asked
    /// left out.
    pub fn by_qtype(&self) -> Vec<(&'static str, u64)> {
        QTYPES
            .iter()
            .map(|(_, n)| *n)
            .chain(["other"])
            .zip(&self.qtypes)
            .map(|(n, c)| (n, c.load(std::sync::atomic::Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Answers so far by response code name (`NOERROR`, `NXDOMAIN`, ...), codes never sent
    /// left out.
    pub fn by_rcode(&self) -> Vec<(&'static str, u64)> {
        const NAMES: [&str; 16] = [
            "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
            "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14",
            "RCODE15",
        ];
        NAMES
            .iter()
            .zip(&self.rcodes)
            .map(|(n, c)| (*n, c.load(std::sync::atomic::Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

/// The question types counted by name (a bounded label set: every other type is `other`).
const QTYPES: [(u16, &str); 8] = [
    (1, "A"),
    (28, "AAAA"),
    (33, "SRV"),
    (12, "PTR"),
    (5, "CNAME"),
    (16, "TXT"),
    (6, "SOA"),
    (255, "ANY"),
];

/// The type of a query's first question, if it has one the wire lets us read.
fn qtype(query: &[u8]) -> Option<u16> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) == 0 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        // A compression pointer has no place in a question's name.
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    Some(u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]))
}

/// What this process's DNS server has answered (see [`QueryCounts`]).
pub static QUERIES: QueryCounts = QueryCounts::new();

/// Datagrams taken per receive call when queries queue up (recvmmsg), and answered per send
/// call (sendmmsg): under load one pair of syscalls serves up to this many queries.
const BATCH: usize = 32;

thread_local! {
    /// The message headers of one receive and one send call (kept per thread: they hold raw
    /// pointers, so a future holding them could not move between threads).
    static HEADERS: std::cell::RefCell<Option<(MultiHeaders<SockaddrStorage>, MultiHeaders<SockaddrStorage>)>> =
        const { std::cell::RefCell::new(None) };
}

fn with_headers<T>(
    f: impl FnOnce(&mut MultiHeaders<SockaddrStorage>, &mut MultiHeaders<SockaddrStorage>) -> T,
) -> T {
    HEADERS.with(|h| {
        let mut h = h.borrow_mut();
        let (rx, tx) = h.get_or_insert_with(|| {
            (
                MultiHeaders::preallocate(BATCH, None),
                MultiHeaders::preallocate(BATCH, None),
            )
        });
        f(rx, tx)
    })
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Receives what is queued, up to [`BATCH`] datagrams in one call, into `bufs`; `got` says each
/// one's length and sender (none if the kernel gave no address).
async fn recv_batch(
    socket: &UdpSocket,
    bufs: &mut [[u8; 4096]],
    got: &mut Vec<(usize, Option<SocketAddr>)>,
) -> std::io::Result<()> {
    loop {
        socket.readable().await?;
        let r = socket.try_io(tokio::io::Interest::READABLE, || {
            with_headers(|rx, _| {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                    bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                let res = recvmmsg(
                    socket.as_raw_fd(),
                    rx,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(std::io::Error::from)?;
                got.clear();
                got.extend(res.map(|m| (m.bytes, m.address.as_ref().and_then(socket_addr))));
                Ok(())
            })
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Sends `outs[k]` to each `(k, peer)` of `replies`: as many as the socket takes in one call,
/// the rest one by one as it takes them.
async fn send_batch(socket: &UdpSocket, outs: &[Vec<u8>], replies: &[(usize, SocketAddr)]) {
    if replies.is_empty() {
        return;
    }
    let sent = socket
        .try_io(tokio::io::Interest::WRITABLE, || {
            with_headers(|_, tx| {
                let iovs: Vec<[IoSlice<'_>; 1]> = replies
                    .iter()
                    .map(|(k, _)| [IoSlice::new(&outs[*k])])
                    .collect();
                let addrs: Vec<Option<SockaddrStorage>> = replies
                    .iter()
                    .map(|(_, a)| Some(SockaddrStorage::from(*a)))
                    .collect();
                let no_cmsgs: [ControlMessage<'_>; 0] = [];
                sendmmsg(
                    socket.as_raw_fd(),
                    tx,
                    iovs.iter(),
                    &addrs,
                    no_cmsgs,
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|r| r.count())
                .map_err(std::io::Error::from)
            })
        })
        .unwrap_or(0);
    for (k, peer) in &replies[sent.min(replies.len())..] {
        let _ = socket.send_to(&outs[*k], peer).await;
    }
}

/// Serves DNS on `socket` from the zone in `zone` until the task is dropped. Queries for other
/// names are relayed to the first answering of `upstreams`. Queries that queue up while one
/// batch is answered are taken and answered together ([`BATCH`]).
pub async fn serve(socket: UdpSocket, zone: watch::Receiver<Arc<Zone>>, upstreams: Upstreams) {
    let socket = Arc::new(socket);
    let mut bufs = vec![[0u8; 4096]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut got = Vec::with_capacity(BATCH);
    let mut replies = Vec::with_capacity(BATCH);
    let mut salt: u64 = 0;
    loop {
        if let Err(error) = recv_batch(&socket, &mut bufs, &mut got).await {
            warn!(%error, "dns receive failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let z = zone.borrow().clone();
        replies.clear();
        for (k, &(n, peer)) in got.iter().enumerate() {
            let Some(peer) = peer else { continue };
            salt = salt.wrapping_add(1);
            let query = &bufs[k][..n];
            QUERIES.queried(query);
            let reply = match reply_fast(&z, query, upstreams.any(), salt, &mut outs[k]) {
                Fast::Answered => {
                    QUERIES.answered(&outs[k]);
                    replies.push((k, peer));
                    continue;
                }
                Fast::Upstream => Reply::Upstream,
                Fast::Slow => reply(&z, query, upstreams.any(), salt, Transport::Udp),
            };
            match reply {
                Reply::Answer(out) => {
                    QUERIES.answered(&out);
                    outs[k] = out;
                    replies.push((k, peer));
                }
                Reply::Ignore => {
                    QUERIES
                        .ignored
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Reply::Upstream => {
                    QUERIES
                        .relayed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (sock, query, ups) = (socket.clone(), query.to_vec(), upstreams.clone());
                    tokio::spawn(async move {
                        match ups.relay(&query, false).await {
                            Some(out) => {
                                let _ = sock.send_to(&out, peer).await;
                            }
                            None => debug!(%peer, "no upstream answered"),
                        }
                    });
                }
            }
        }
        send_batch(&socket, &outs, &replies).await;
    }
}

/// Serves DNS over TCP (RFC 7766: two-byte length, several queries per connection) on
/// `listener`, for clients retrying a truncated UDP answer, within `budget`.
pub async fn serve_tcp(
    listener: TcpListener,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Upstreams,
    budget: Budget,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(budget.tcp_connections));
    let by_source = Arc::new(std::sync::Mutex::new(HashMap::<IpAddr, usize>::new()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(error) => {
                warn!(%error, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "dns tcp: too many connections, closing");
            continue;
        };
        let Some(share) = SourceShare::take(&by_source, peer.ip(), budget.tcp_per_source) else {
            debug!(%peer, "dns tcp: the client holds its share of connections, closing");
            continue;
        };
        let (zone, ups) = (zone.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _slot = (slot, share);
            if let Err(error) = tcp_connection(stream, zone, ups, budget).await {
                debug!(%peer, %error, "dns tcp connection ended");
            }
        });
    }
}

/// A TCP connection counted against its client address's share; counted out on drop.
struct SourceShare(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>, IpAddr);

impl SourceShare {
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<Self> {
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        let held = c.entry(ip).or_default();
        (*held < max).then(|| {
            *held += 1;
            SourceShare(counts.clone(), ip)
        })
    }
}

impl Drop for SourceShare {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match c.get(&self.1).copied() {
            Some(1) | None => {
                c.remove(&self.1);
            }
            Some(n) => {
                c.insert(self.1, n - 1);
            }
        }
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Upstreams,
    budget: Budget,
) -> std::io::Result<()> {
    let mut salt: u64 = 0;
    loop {
        let query = match tokio::time::timeout(budget.tcp_idle, read_framed(&mut stream)).await {
            Ok(Ok(Some(q))) => q,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        salt = salt.wrapping_add(1);
        QUERIES.queried(&query);
        let z = zone.borrow().clone();
        let out = match reply(&z, &query, upstreams.any(), salt, Transport::Tcp) {
            Reply::Answer(out) => {
                QUERIES.answered(&out);
                out
            }
            Reply::Ignore => {
                QUERIES
                    .ignored
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            Reply::Upstream => {
                QUERIES
                    .relayed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match upstreams.relay(&query, true).await {
                    Some(out) => out,
                    None => return Ok(()),
                }
            }
        };
        match tokio::time::timeout(budget.tcp_write, write_framed(&mut stream, &out)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took no answer within the write timeout",
                ))
            }
        }
    }
}

/// Reads one length-prefixed DNS message; `None` at a clean end of stream.
pub async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one length-prefixed DNS message.
pub async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

#[cfg(test)]
mod qtype_tests {
    use super::*;

    fn query(name: &str, t: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&t.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    /// The type is read past the name; a query with no question, a cut one or a pointer in
    /// the name has none; any type outside the named set counts as `other`.
    #[test]
    fn questions_are_counted_by_type_with_a_bounded_label_set() {
        assert_eq!(qtype(&query("appb.apps.internal", 1)), Some(1));
        assert_eq!(qtype(&query("x.apps.internal", 28)), Some(28));
        let mut none = query("a", 1);
        none[5] = 0;
        assert_eq!(qtype(&none), None);
        let q = query("appb.apps.internal", 33);
        assert_eq!(qtype(&q[..q.len() - 3]), None);
        let mut ptr = query("a", 1);
        ptr[12] = 0xc0;
        assert_eq!(qtype(&ptr), None);

        let c = QueryCounts::new();
        for t in [1, 1, 28, 65, 99] {
            c.queried(&query("appb.apps.internal", t));
        }
        assert_eq!(c.by_qtype(), vec![("A", 2), ("AAAA", 1), ("other", 2)]);
    }
}
