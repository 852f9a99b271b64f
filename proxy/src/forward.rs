//! Bytes both ways between the client's TLS stream and the app, as Envoy's tcp_proxy does.
//!
//! Differences from `tokio::io::copy_bidirectional` that a sidecar needs:
//! - a peer that closes TCP without TLS close_notify counts as a half-close, not an error, so
//!   the other direction still finishes;
//! - no heap buffer is held while a connection is idle: reads land in the worker thread's
//!   [`Scratch`] and only what a peer could not take at once (or the start of a record whose rest
//!   is in flight) is kept, so memory per idle connection stays small;
//! - records from the client are opened and their plaintext written to the app straight from
//!   there; the app's bytes are sealed into records in one buffer and written with one syscall;
//! - bytes are counted per direction as they pass;
//! - a connection with no byte either way for the idle timeout ends ([`ForwardError::Idle`]).
//!   One timer per connection, never reset on the data path: when it fires, it compares the
//!   byte totals with those it saw last and re-arms if anything moved.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::{
    poll_read_into, tls_error, try_write_now, Scratch, TlsStream, MAX_RECORD, SCRATCH, TLS_READ,
};

/// Reads per direction per poll before yielding to other connections.
const BUDGET: usize = 32;
/// TLS bytes for the client (key updates, alerts) past which the client's records are not read
/// until it takes them: a client that writes but never reads cannot grow the queue.
const MAX_BACKLOG: usize = 128 * 1024;

/// Where a forwarding failed: the side decides which metric and log line it is.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Reading from or writing to the client failed.
    #[error("downstream (client): {0}")]
    Downstream(io::Error),
    /// Reading from or writing to the app failed.
    #[error("upstream (app): {0}")]
    Upstream(io::Error),
    /// Nothing moved either way for this long.
    #[error("idle for {0:?}")]
    Idle(std::time::Duration),
    /// The client sent nothing for this long after its handshake.
    #[error("client sent nothing for {0:?} after the handshake")]
    Silent(std::time::Duration),
}

/// Client to app: plaintext the app has not taken yet.
#[derive(Default)]
struct ToApp {
    pending: Vec<u8>,
    pos: usize,
    read_eof: bool,
    shut_down: bool,
    total: u64,
}

/// App to client (sealed bytes the client has not taken wait in the [`TlsStream`]).
#[derive(Default)]
struct ToClient {
    read_eof: bool,
    shut_down: bool,
    total: u64,
}

/// How long a connection may be quiet.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// Until the client's first byte: a client that handshakes and then sends nothing holds a
    /// connection slot for this long at most.
    pub first_byte: std::time::Duration,
    /// After it: no byte either way for this long ends the connection.
    pub idle: std::time::Duration,
}

/// Copies client -> app and app -> client until both directions reach EOF and are shut down.
/// Returns the plaintext bytes moved each way: (client to app, app to client).
pub async fn forward<B>(
    tls: &mut TlsStream,
    app: &mut B,
    a_to_b: &Counter,
    b_to_a: &Counter,
    quiet: Quiet,
) -> Result<(u64, u64), ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let idle = quiet.idle;
    let mut up = ToApp::default();
    let mut down = ToClient::default();
    let timer = tokio::time::sleep(quiet.first_byte.min(idle));
    tokio::pin!(timer);
    let mut seen = 0u64;
    // Whether the timer holds this task's waker for its current deadline: it is polled once per
    // deadline, and between deadlines a wake only reads whether it fired (an atomic load), so
    // the data path pays nothing for the timeout.
    let mut armed = false;
    poll_fn(|cx| {
        let mut r1 = poll_to_app(cx, tls, app, &mut up, a_to_b)?;
        let r2 = poll_to_client(cx, tls, app, &mut down, b_to_a)?;
        if r1.is_pending() && tls.peer_closed {
            // close_notify was taken while sealing: pass the half-close on now.
            r1 = poll_to_app(cx, tls, app, &mut up, a_to_b)?;
        }
        if let (Poll::Ready(()), Poll::Ready(())) = (r1, r2) {
            return Poll::Ready(Ok((up.total, down.total)));
        }
        loop {
            if timer.is_elapsed() {
                if up.total == 0 && !up.read_eof {
                    // The client has said nothing since its handshake.
                    return Poll::Ready(Err(ForwardError::Silent(quiet.first_byte)));
                }
                let moved = up.total + down.total;
                if moved == seen {
                    return Poll::Ready(Err(ForwardError::Idle(idle)));
                }
                seen = moved;
                timer.as_mut().reset(tokio::time::Instant::now() + idle);
                armed = false;
            }
            if armed {
                return Poll::Pending;
            }
            armed = true;
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

fn poll_to_app<B: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    tls: &mut TlsStream,
    app: &mut B,
    st: &mut ToApp,
    counter: &Counter,
) -> Poll<Result<(), ForwardError>> {
    if st.shut_down {
        return Poll::Ready(Ok(()));
    }
    for _ in 0..BUDGET {
        // 1. Finish what the app has not taken yet (first what was decrypted before forwarding).
        if !tls.stash.is_empty() {
            let stash = std::mem::take(&mut tls.stash);
            counter.inc_by(stash.len() as u64);
            st.total += stash.len() as u64;
            st.pending.extend_from_slice(&stash);
        }
        while st.pos < st.pending.len() {
            let n = ready!(Pin::new(&mut *app).poll_write(cx, &st.pending[st.pos..]))
                .map_err(ForwardError::Upstream)?;
            if n == 0 {
                return Poll::Ready(Err(ForwardError::Upstream(io::ErrorKind::WriteZero.into())));
            }
            st.pos += n;
        }
        if st.pending.capacity() > 0 {
            // Drained: free it, so an idle connection holds no buffer.
            st.pending = Vec::new();
            st.pos = 0;
        }
        // 2. The client is done sending (close_notify, or a FIN without one): pass it on.
        if st.read_eof || tls.peer_closed {
            // Bytes after close_notify are ignored; they need not be held.
            tls.incoming = Vec::new();
            ready!(Pin::new(&mut *app).poll_shutdown(cx)).map_err(ForwardError::Upstream)?;
            st.shut_down = true;
            return Poll::Ready(Ok(()));
        }
        // 3. Read records, open them, hand the plaintext over; not while the client leaves
        //    what we send it unread past the limit (the writer's flush wakes this task).
        if tls.backlog() > MAX_BACKLOG {
            return Poll::Pending;
        }
        ready!(SCRATCH.with(|s| read_records(cx, tls, app, st, counter, &mut s.borrow_mut())))?;
    }
    // Used the budget with data still flowing: let other connections run.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// One read from the client into the thread's buffer, behind the partial record carried over;
/// every whole record's plaintext is written to the app at once, what it does not take is kept.
fn read_records<B: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    tls: &mut TlsStream,
    app: &mut B,
    st: &mut ToApp,
    counter: &Counter,
    scratch: &mut Scratch,
) -> Poll<Result<(), ForwardError>> {
    let buf = &mut scratch.tls_in;
    let carry = tls.incoming.len();
    if carry > MAX_RECORD {
        // Never so: what is carried over is the start of one record, and longer records are
        // refused by rustls. Refuse rather than index past the buffer.
        return Poll::Ready(Err(ForwardError::Downstream(io::Error::new(
            io::ErrorKind::InvalidData,
            "carried-over TLS bytes exceed a record",
        ))));
    }
    buf[..carry].copy_from_slice(&tls.incoming);
    let n = match ready!(tls.poll_read_tcp(cx, &mut buf[carry..carry + TLS_READ])) {
        Err(e) => return Poll::Ready(Err(ForwardError::Downstream(e))),
        Ok(0) => {
            st.read_eof = true;
            return Poll::Ready(Ok(()));
        }
        Ok(n) => n,
    };
    let mut write_err = None;
    let (used, _) = tls
        .process(&mut buf[..carry + n], &mut |data| {
            counter.inc_by(data.len() as u64);
            st.total += data.len() as u64;
            let taken = if st.pos < st.pending.len() || write_err.is_some() {
                0
            } else {
                match try_write_now(app, cx, data) {
                    Ok(t) => t,
                    Err(e) => {
                        write_err = Some(e);
                        0
                    }
                }
            };
            if taken < data.len() {
                st.pending.extend_from_slice(&data[taken..]);
            }
        })
        .map_err(|e| ForwardError::Downstream(tls_error(e)))?;
    if let Some(e) = write_err {
        return Poll::Ready(Err(ForwardError::Upstream(e)));
    }
    let rest = &buf[used..carry + n];
    if rest.is_empty() {
        if tls.incoming.capacity() > 0 {
            tls.incoming = Vec::new();
        }
    } else {
        tls.incoming.clear();
        tls.incoming.extend_from_slice(rest);
    }
    Poll::Ready(Ok(()))
}

fn poll_to_client<B: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    tls: &mut TlsStream,
    app: &mut B,
    st: &mut ToClient,
    counter: &Counter,
) -> Poll<Result<(), ForwardError>> {
    if st.shut_down {
        return Poll::Ready(Ok(()));
    }
    for _ in 0..BUDGET {
        // 1. Finish what the client has not taken yet.
        ready!(tls.poll_flush_tls(cx)).map_err(ForwardError::Downstream)?;
        // 2. The app is done: close_notify, then FIN.
        if st.read_eof {
            ready!(tls.poll_shutdown(cx)).map_err(ForwardError::Downstream)?;
            st.shut_down = true;
            return Poll::Ready(Ok(()));
        }
        // 3. Read from the app, seal, write.
        ready!(SCRATCH.with(|s| seal_and_send(cx, tls, app, st, counter, &mut s.borrow_mut())))?;
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// One read from the app; its bytes sealed into records in one buffer and written with one
/// syscall, what the client does not take at once kept.
fn seal_and_send<B: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    tls: &mut TlsStream,
    app: &mut B,
    st: &mut ToClient,
    counter: &Counter,
    scratch: &mut Scratch,
) -> Poll<Result<(), ForwardError>> {
    let Scratch { plain, tls_out, .. } = scratch;
    let n = match ready!(poll_read_into(app, cx, plain)) {
        Err(e) => return Poll::Ready(Err(ForwardError::Upstream(e))),
        Ok(0) => {
            st.read_eof = true;
            return Poll::Ready(Ok(()));
        }
        Ok(n) => n,
    };
    counter.inc_by(n as u64);
    st.total += n as u64;
    let len = tls
        .seal(&plain[..n], tls_out)
        .map_err(ForwardError::Downstream)?;
    let sealed = &tls_out[..len];
    if tls.has_queued() {
        tls.queue(sealed);
    } else {
        let taken = try_write_now(&mut tls.tcp, cx, sealed).map_err(ForwardError::Downstream)?;
        if taken < len {
            tls.queue(&sealed[taken..]);
        }
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use c2c_certs::ca::LeafKey;
    use c2c_certs::{Ca, LeafRequest, SanSet};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    /// A real TLS connection over loopback: the client's end, and the proxy's end with the app's
    /// socket and a task forwarding between them.
    struct Rig {
        client: Client,
        app: TcpStream,
        fwd: tokio::task::JoinHandle<Result<(u64, u64), ForwardError>>,
    }

    async fn rig(versions: &[&'static rustls::SupportedProtocolVersion], idle: Duration) -> Rig {
        rig_with(versions, idle, |_| {}).await
    }

    async fn rig_with(
        versions: &[&'static rustls::SupportedProtocolVersion],
        idle: Duration,
        tweak: impl FnOnce(&mut rustls::ClientConfig),
    ) -> Rig {
        let quiet = Quiet {
            first_byte: idle,
            idle,
        };
        rig_quiet(versions, quiet, tweak).await
    }

    async fn rig_quiet(
        versions: &[&'static rustls::SupportedProtocolVersion],
        quiet: Quiet,
        tweak: impl FnOnce(&mut rustls::ClientConfig),
    ) -> Rig {
        let ca = Ca::generate("forward test CA").unwrap();
        let pair = ca
            .issue(&LeafRequest {
                common_name: "instance-0".into(),
                sans: SanSet::new(["appb.apps.internal"], []).unwrap(),
                ttl: Duration::from_secs(600),
                key: LeafKey::EcdsaP256,
                usage: Default::default(),
            })
            .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain[1].clone()).unwrap();
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tweak(&mut client_cfg);

        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (front_addr, back_addr) = (front.local_addr().unwrap(), back.local_addr().unwrap());
        let fwd = tokio::spawn(async move {
            let (tcp, _) = front.accept().await.unwrap();
            let mut tls = TlsStream::accept(tcp, Arc::new(server)).await.unwrap();
            let mut app = TcpStream::connect(back_addr).await.unwrap();
            let (c1, c2) = (Counter::default(), Counter::default());
            forward(&mut tls, &mut app, &c1, &c2, quiet).await
        });
        let tcp = TcpStream::connect(front_addr).await.unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
            .connect(ServerName::try_from("appb.apps.internal").unwrap(), tcp)
            .await
            .unwrap();
        let (app, _) = back.accept().await.unwrap();
        Rig { client, app, fwd }
    }

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(seed) % 251) as u8)
            .collect()
    }

    #[tokio::test]
    async fn copies_both_ways_over_tls13_and_tls12_and_propagates_half_close() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let Rig {
                mut client,
                mut app,
                fwd,
            } = rig(&[version], Duration::from_secs(3600)).await;
            // More than the thread's read buffers in both directions, so records split across
            // reads and the writers fall behind.
            let up = pattern(1_000_000, 7);
            let down = pattern(3_000_000, 13);
            let sent = up.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                client.shutdown().await.unwrap(); // close_notify + FIN: a half-close
                let mut back = Vec::new();
                client.read_to_end(&mut back).await.unwrap();
                back
            });
            let mut got = Vec::new();
            app.read_to_end(&mut got).await.unwrap(); // ends: the half-close reached the app
            assert_eq!(got.len(), up.len(), "{version:?}");
            assert!(
                got == up,
                "{version:?}: bytes lost or reordered on the way up"
            );
            app.write_all(&down).await.unwrap();
            app.shutdown().await.unwrap();
            let back = writer.await.unwrap();
            assert_eq!(back.len(), down.len(), "{version:?}");
            assert!(
                back == down,
                "{version:?}: bytes lost or reordered on the way down"
            );
            let (a, b) = fwd.await.unwrap().unwrap();
            assert_eq!((a, b), (up.len() as u64, down.len() as u64));
        }
    }

    #[tokio::test]
    async fn a_client_hello_larger_than_the_first_read_completes_the_handshake() {
        // 60 ALPN names of 200 bytes: a ClientHello of ~12 KiB, three times the room the
        // handshake reads into at first.
        let Rig {
            mut client,
            mut app,
            ..
        } = rig_with(&[&rustls::version::TLS13], Duration::from_secs(3600), |c| {
            c.alpn_protocols = (0..60u8).map(|i| vec![b'a' + i % 26; 200]).collect();
        })
        .await;
        client.write_all(b"big hello").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 9];
        app.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"big hello");
    }

    #[tokio::test]
    async fn a_client_key_update_mid_stream_is_answered_and_traffic_goes_on() {
        let Rig {
            mut client,
            mut app,
            fwd,
        } = rig(&[&rustls::version::TLS13], Duration::from_secs(3600)).await;
        for round in 0..3u8 {
            // The client asks for new keys both ways (update_requested); the proxy must answer
            // with its own key_update before any record sealed under the new keys.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 100]).await.unwrap();
            client.flush().await.unwrap();
            let mut buf = [0u8; 100];
            app.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [round; 100]);
            app.write_all(&[round + 10; 50_000]).await.unwrap();
            let mut back = vec![0u8; 50_000];
            client.read_exact(&mut back).await.unwrap();
            assert!(back.iter().all(|&b| b == round + 10));
        }
        drop(client);
        drop(app);
        let _ = fwd.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_stops_the_app_and_loses_nothing() {
        // The app sends far more than the client reads: the forwarder stops reading the app
        // (backpressure reaches the app's writes) instead of queueing it all; once the client
        // reads, every byte arrives.
        let Rig {
            mut client,
            mut app,
            fwd,
        } = rig(&[&rustls::version::TLS13], Duration::from_secs(3600)).await;
        let chunk = pattern(1 << 20, 3);
        let mut written = 0usize;
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(500), app.write(&chunk)).await
        {
            written += r.unwrap();
            assert!(written < 256 << 20, "the forwarder took everything");
        }
        assert!(written > 0);
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), written, "bytes lost under backpressure");
        drop(client);
        drop(app);
        let _ = fwd.await.unwrap();
    }

    #[tokio::test]
    async fn forged_records_after_the_handshake_end_that_connection_only() {
        // The attack: after a valid handshake, the client writes raw bytes no TLS stack would:
        // a record claiming 65,535 bytes, a record that fails authentication, a record cut off
        // by FIN. Each ends its connection with an error for the client's side; none may reach
        // the app or bring the forwarder down. Positive control: a fresh connection on the same
        // thread still forwards.
        let cases: [&[u8]; 3] = [
            &[0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3],
            &[
                0x17, 0x03, 0x03, 0x00, 0x20, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
                0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
                0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
            ],
            &[0x17, 0x03, 0x03, 0x40, 0x00, 9, 9, 9],
        ];
        for (i, forged) in cases.iter().enumerate() {
            let Rig {
                mut client,
                mut app,
                fwd,
            } = rig(&[&rustls::version::TLS13], Duration::from_secs(3600)).await;
            let tcp = client.get_mut().0;
            tcp.write_all(forged).await.unwrap();
            if i == 2 {
                tcp.shutdown().await.unwrap(); // FIN in the middle of the record
            }
            // The app sees EOF: the connection ended (0, 1) or was half-closed (2).
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), app.read_to_end(&mut got))
                .await
                .unwrap_or_else(|_| panic!("case {i}: the forged record was not noticed"))
                .unwrap();
            assert!(
                got.is_empty(),
                "case {i}: forged bytes reached the app: {got:?}"
            );
            app.shutdown().await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), fwd)
                .await
                .unwrap_or_else(|_| panic!("case {i}: the forwarder did not end"))
                .unwrap();
            match (i, r) {
                // A FIN without close_notify is a half-close: the app sees EOF, nothing else.
                (2, Ok((0, _))) => {}
                (0 | 1, Err(ForwardError::Downstream(e))) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "case {i}: {e}")
                }
                (_, other) => panic!("case {i}: {other:?}"),
            }
        }
        let Rig {
            mut client,
            mut app,
            ..
        } = rig(&[&rustls::version::TLS13], Duration::from_secs(3600)).await;
        client.write_all(b"still served").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 12];
        app.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still served");
    }

    #[tokio::test]
    async fn a_quiet_connection_ends_after_the_idle_timeout_and_a_busy_one_does_not() {
        let idle = Duration::from_millis(300);
        let Rig {
            mut client,
            mut app,
            fwd,
        } = rig(&[&rustls::version::TLS13], idle).await;
        // Busy: a byte every 100 ms for 1.2 s, four times the timeout in all.
        for _ in 0..12 {
            client.write_all(b"x").await.unwrap();
            client.flush().await.unwrap();
            let mut one = [0u8; 1];
            app.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!fwd.is_finished(), "closed while bytes were moving");
        }
        // Then quiet: closed within two timeouts (one to notice the last byte, one quiet).
        let r = tokio::time::timeout(Duration::from_secs(5), fwd).await;
        match r.expect("no idle close").unwrap() {
            Err(ForwardError::Idle(d)) => assert_eq!(d, idle),
            other => panic!("expected an idle close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_after_its_handshake_is_closed_early() {
        // Issue #23: one peer held thousands of handshaken, silent connections for the hour of
        // the idle timeout. Before its first byte a client has the short limit only.
        let quiet = Quiet {
            first_byte: Duration::from_millis(300),
            idle: Duration::from_secs(3600),
        };
        // Both ends stay open (bound, not dropped) while the client says nothing.
        let Rig {
            client: _client,
            app: _app,
            fwd,
        } = rig_quiet(&[&rustls::version::TLS13], quiet, |_| {}).await;
        let r = tokio::time::timeout(Duration::from_secs(5), fwd).await;
        match r.expect("a silent client was not closed").unwrap() {
            Err(ForwardError::Silent(d)) => assert_eq!(d, quiet.first_byte),
            other => panic!("expected a close for silence, got {other:?}"),
        }
        // Positive control: a client that speaks first keeps its connection past that limit,
        // with the app answering much later.
        let Rig {
            mut client,
            mut app,
            fwd,
        } = rig_quiet(&[&rustls::version::TLS13], quiet, |_| {}).await;
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 5];
        app.read_exact(&mut got).await.unwrap();
        // Three times the first-byte limit later, the app's answer still reaches the client.
        tokio::time::sleep(3 * quiet.first_byte).await;
        app.write_all(b"later").await.unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"later");
        drop(client);
        drop(app);
        assert!(fwd.await.unwrap().is_ok());
    }
}
