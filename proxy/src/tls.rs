//! The client's TLS connection on rustls's unbuffered API: the proxy owns every buffer, so a
//! connection with nothing in flight holds none.
//!
//! rustls's buffered `ServerConnection` keeps a read buffer of at least 4 KiB per connection for
//! as long as it lives, idle or not (4.1 KiB of the ~11 KiB an idle connection cost, measured
//! with heaptrack). Here TLS bytes are read into a buffer of the worker thread, decrypted and
//! passed on from there; a connection keeps bytes of its own only for a record that arrived in
//! part or for output its peer could not take yet, and frees them when they are gone.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// TLS bytes read from the client at once (several records; a record is at most 16 KiB of
/// plaintext, 18 KiB on the wire for TLS 1.2).
pub(crate) const TLS_READ: usize = 32 * 1024;
/// The longest record on the wire (TLS 1.2's ciphertext limit plus the header): at most this
/// much of a record can be carried over between reads.
pub(crate) const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// Room for the handshake's reads (grown on demand).
const HANDSHAKE_READ: usize = 4096;
/// Plaintext read from the app at once: four full records, encrypted into one buffer and
/// written with one syscall (2x bulk throughput against one write per record, measured).
pub(crate) const APP_READ: usize = 64 * 1024;
/// Room for the records' headers, tags and padding around `APP_READ` bytes of plaintext.
const SEAL_ROOM: usize = 1024;

/// Per worker thread: where reads land and records are sealed. Allocated on a thread's first
/// connection, then reused by every connection the thread polls.
pub(crate) struct Scratch {
    /// TLS from the client: a carried-over partial record, then what was read after it.
    pub(crate) tls_in: Vec<u8>,
    /// Plaintext from the app.
    pub(crate) plain: Vec<u8>,
    /// Sealed records for the client.
    pub(crate) tls_out: Vec<u8>,
}

thread_local! {
    pub(crate) static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        tls_in: vec![0; MAX_RECORD + TLS_READ],
        plain: vec![0; APP_READ],
        tls_out: vec![0; APP_READ + SEAL_ROOM],
    });
}

/// Where a state machine run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It needs more bytes from the client.
    NeedInput,
    /// Application data may be written (the handshake is done).
    Writable,
    /// Both sides have sent close_notify.
    Closed,
}

/// Where [`step`] stopped, with the writer when application data may be written.
enum Halt<'c> {
    NeedInput,
    Writable(WriteTraffic<'c, ServerConnectionData>),
    Closed,
}

/// A server-side TLS connection over a TCP stream.
pub struct TlsStream {
    pub(crate) tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed: the start of a record whose rest is still in flight.
    pub(crate) incoming: Vec<u8>,
    /// TLS bytes for the client not yet written, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client sent close_notify.
    pub(crate) peer_closed: bool,
    /// We sent close_notify.
    close_queued: bool,
    /// Application data decrypted outside the forwarding loop (sent right behind the client's
    /// Finished), for the app before anything read after it.
    pub(crate) stash: Vec<u8>,
    /// Where in its input the last [`Self::process`] stood when rustls failed.
    failed_at: usize,
}

/// The most records taken from rustls's queue after a failure (a whole server flight is far
/// fewer).
const MAX_QUEUED_RECORDS: usize = 16;

/// A rustls error as an I/O error (kind `InvalidData`), as tokio-rustls reported it.
pub(crate) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size
            }
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// Handles one state: plaintext goes to `sink`, TLS to send to `out`. Returns where it stopped,
/// or `None` to go on.
fn step<'c>(
    state: ConnectionState<'c, '_, ServerConnectionData>,
    out: &mut Vec<u8>,
    peer_closed: &mut bool,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<Option<Halt<'c>>, rustls::Error> {
    match state {
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(record) = r.next_record() {
                sink(record?.payload);
            }
            Ok(None)
        }
        ConnectionState::EncodeTlsData(mut e) => {
            encode_into(out, |buf| e.encode(buf));
            Ok(None)
        }
        // The bytes wait in `out`, in order, and are written before anything queued after them.
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Ok(None)
        }
        ConnectionState::PeerClosed => {
            *peer_closed = true;
            Ok(None)
        }
        ConnectionState::BlockedHandshake => Ok(Some(Halt::NeedInput)),
        ConnectionState::WriteTraffic(w) => Ok(Some(Halt::Writable(w))),
        ConnectionState::Closed => Ok(Some(Halt::Closed)),
        // Early data is never offered (the config's max_early_data_size is 0).
        _ => Err(rustls::Error::General("unexpected TLS state".into())),
    }
}

impl TlsStream {
    /// Runs the handshake with the client on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            close_queued: false,
            stash: Vec::new(),
            failed_at: 0,
        };
        loop {
            // A ClientHello is 0.3-2 KiB: room for it, grown only for a client that sends more
            // (an 18 KiB buffer for every connection in its handshake was 0.9 MiB of the
            // sidecar's 1.6 MiB heap peak with 50 clients connecting at once).
            s.incoming.reserve(HANDSHAKE_READ);
            if s.tcp.read_buf(&mut s.incoming).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut input = std::mem::take(&mut s.incoming);
            let mut early = std::mem::take(&mut s.stash);
            let r = s.process(&mut input, &mut |d| early.extend_from_slice(d));
            s.stash = early;
            let stop = match r {
                Ok((used, stop)) => {
                    input.drain(..used);
                    s.incoming = input;
                    stop
                }
                Err(e) => {
                    // Send the alert rustls queued for the failure, if the client still listens.
                    s.queue_alerts(&mut input);
                    let _ = s.tcp.write_all(&s.outgoing).await;
                    return Err(tls_error(e));
                }
            };
            poll_fn(|cx| s.poll_flush_tls(cx)).await?;
            if stop == Stop::Closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if !s.conn.is_handshaking() {
                s.incoming.shrink_to_fit();
                return Ok(s);
            }
        }
    }

    /// The leaf certificate the client presented, if it presented one (and it was verified).
    pub fn peer_leaf(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(|c| c.first())
    }

    /// Whether the session was resumed: the client's certificate (if any) was checked when the
    /// session was first made, not in this handshake.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The application protocol agreed in ALPN (`h2`, `http/1.1`), if one was.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The TLS version agreed, as text (`TLSv1.3`), for the PROXY protocol's SSL TLV.
    pub fn version_text(&self) -> &'static str {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        }
    }

    /// Runs the state machine over `input` until it needs more: plaintext goes to `sink`, TLS to
    /// send to the outgoing queue. Returns how much of `input` it used (the rest is the start of a
    /// record) and where it stopped.
    pub(crate) fn process(
        &mut self,
        input: &mut [u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, Stop), rustls::Error> {
        let mut used = 0;
        loop {
            let status = self.conn.process_tls_records(&mut input[used..]);
            let discard = status.discard;
            // On a failure, rustls may still hold ranges of `input[used..]` (the rest of a
            // client's flight, say Certificate, CertificateVerify and Finished after a refused
            // Certificate): the alert must be drawn from that same slice (see `queue_alerts`).
            self.failed_at = used;
            let stop = step(
                status.state?,
                &mut self.outgoing,
                &mut self.peer_closed,
                sink,
            )?;
            used += discard;
            match stop {
                None => {}
                Some(Halt::NeedInput) => return Ok((used, Stop::NeedInput)),
                Some(Halt::Writable(_)) => return Ok((used, Stop::Writable)),
                Some(Halt::Closed) => return Ok((used, Stop::Closed)),
            }
        }
    }

    /// Runs `f` with the connection's writer and the outgoing queue, once the messages rustls
    /// queued (key updates, tickets) are in that queue ahead of what `f` adds.
    fn with_writer<T>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<T>,
    ) -> io::Result<T> {
        // Application data never waits inside rustls here (the forwarder takes every record as
        // it is decrypted); should any, it is kept for the app, not dropped.
        let mut stash = std::mem::take(&mut self.stash);
        let r = loop {
            let status = self.conn.process_tls_records(&mut []);
            let state = match status.state {
                Ok(state) => state,
                Err(e) => break Err(tls_error(e)),
            };
            let stop = match step(state, &mut self.outgoing, &mut self.peer_closed, &mut |d| {
                stash.extend_from_slice(d)
            }) {
                Ok(stop) => stop,
                Err(e) => break Err(tls_error(e)),
            };
            match stop {
                None => continue,
                Some(Halt::Writable(mut w)) => break f(&mut w, &mut self.outgoing),
                Some(_) => break Err(io::ErrorKind::NotConnected.into()),
            }
        };
        self.stash = stash;
        r
    }

    /// Seals `plain` into `sealed` (records with headers, grown if too small), returning their
    /// length. What [`Self::has_queued`] reports must be written before these bytes.
    pub(crate) fn seal(&mut self, plain: &[u8], sealed: &mut Vec<u8>) -> io::Result<usize> {
        self.with_writer(|w, _| loop {
            match w.encrypt(plain, &mut sealed[..]) {
                Ok(n) => return Ok(n),
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    sealed.resize(required_size, 0)
                }
                Err(EncryptError::EncryptExhausted) => {
                    return Err(tls_error(rustls::Error::EncryptError))
                }
            }
        })
    }

    /// Whether TLS bytes wait to be written to the client.
    pub(crate) fn has_queued(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// How many TLS bytes wait to be written to the client.
    pub(crate) fn backlog(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Queues `bytes` (sealed records) behind what waits already.
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.outgoing.extend_from_slice(bytes);
    }

    /// Queues close_notify behind what waits already (once).
    pub(crate) fn queue_close_notify(&mut self) -> io::Result<()> {
        if self.close_queued {
            return Ok(());
        }
        self.close_queued = true;
        self.with_writer(|w, out| {
            encode_into(out, |buf| {
                w.queue_close_notify(buf).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => EncodeError::InsufficientSize(s),
                    // Keys used up: no alert can be sealed; the FIN that follows still ends it.
                    EncryptError::EncryptExhausted => EncodeError::AlreadyEncoded,
                })
            });
            Ok(())
        })
    }

    /// Moves the alert rustls queued after a failure in [`Self::process`] over `input` into the
    /// outgoing queue. rustls 0.23.46 needs care here: asked again with an empty slice, it
    /// panics when the failed flight held more handshake messages (`Delocator::slice_from_range`;
    /// a refused client certificate is followed by CertificateVerify and Finished), so it is
    /// given the input it failed on; asked once more after its queue is empty, it parses that
    /// input again and panics on garbage. So records are taken while rustls has them queued
    /// (it hands queued records out before it parses anything) and no further than the alert: a
    /// failure found while the server's first flight was being built (no protocol in common in
    /// ALPN, found after the ServerHello and, in TLS 1.3, the ChangeCipherSpec were queued)
    /// leaves those records ahead of it; any other leaves the alert alone.
    fn queue_alerts(&mut self, input: &mut [u8]) {
        let at = self.failed_at.min(input.len());
        for _ in 0..MAX_QUEUED_RECORDS {
            let start = self.outgoing.len();
            match self.conn.process_tls_records(&mut input[at..]).state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut self.outgoing, |buf| e.encode(buf))
                }
                _ => return,
            }
            // A handshake record (22) or a ChangeCipherSpec (20) comes before the alert, which
            // is a plaintext alert (21) or, encrypted in TLS 1.3, application data (23).
            match self.outgoing.get(start) {
                Some(22) | Some(20) => continue,
                _ => return,
            }
        }
    }

    /// Writes the outgoing queue to the client; frees it once written.
    pub(crate) fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads TLS bytes from the client into `buf`.
    pub(crate) fn poll_read_tcp(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }

    /// Sends close_notify and FIN: what is queued, then the alert, then the TCP half-close.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_queued {
            // A connection rustls already failed cannot seal an alert; FIN still goes.
            let _ = self.queue_close_notify();
        }
        ready!(self.poll_flush_tls(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    /// [`Self::poll_shutdown`] as a future.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_shutdown(cx)).await
    }
}

/// Reads from `r` into `buf`; the count read (0 at EOF).
pub(crate) fn poll_read_into<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    ready!(Pin::new(r).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

/// Writes as much of `data` to `w` as it takes now: `Ok(0)` when it takes nothing yet.
pub(crate) fn try_write_now<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    data: &[u8],
) -> io::Result<usize> {
    match Pin::new(w).poll_write(cx, data) {
        Poll::Ready(Ok(0)) if !data.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Poll::Ready(r) => r,
        Poll::Pending => Ok(0),
    }
}
