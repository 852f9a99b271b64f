//! Bytes both ways between the client's TLS stream and the app, as Envoy's tcp_proxy does.
//!
//! Differences from `tokio::io::copy_bidirectional` that a sidecar needs:
//! - a peer that closes TCP without TLS close_notify (`UnexpectedEof`) counts as a half-close,
//!   not an error, so the other direction still finishes;
//! - no heap buffer is held while a connection is idle: reads go into a stack buffer and only a
//!   write the peer could not take at once is kept, so memory per idle connection stays small;
//! - bytes are counted per direction as they pass;
//! - a connection with no byte either way for the idle timeout ends ([`ForwardError::Idle`]).
//!   One timer per connection, never reset on the data path: when it fires, it compares the
//!   byte totals with those it saw last and re-arms if anything moved.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Read size from the client's TLS stream: one TLS record carries at most 16 KiB of plaintext.
const FROM_TLS_CHUNK: usize = 16 * 1024;
/// Read size from the app: four full records, so rustls encrypts them and hands all four to one
/// vectored write, instead of one syscall per 16 KiB record (2x bulk throughput measured).
const FROM_APP_CHUNK: usize = 64 * 1024;
/// Reads per direction per poll before yielding to other connections.
const BUDGET: usize = 32;

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
}

#[derive(Default)]
struct Half {
    /// Bytes read but not yet taken by the writer, and how far the writer got.
    pending: Vec<u8>,
    pos: usize,
    read_eof: bool,
    shut_down: bool,
    need_flush: bool,
    total: u64,
}

/// Wraps an I/O error with the side it happened on.
type ErrSide = fn(io::Error) -> ForwardError;

enum Side {
    A,
    B,
}

/// Copies `a -> b` and `b -> a` (`a` is the client's TLS stream, `b` the app) until both directions reach EOF and are shut down.
/// Returns the bytes moved each way: (a to b, b to a).
pub async fn forward<A, B>(
    a: &mut A,
    b: &mut B,
    a_to_b: &Counter,
    b_to_a: &Counter,
    idle: std::time::Duration,
) -> Result<(u64, u64), ForwardError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut ab = Half::default();
    let mut ba = Half::default();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut seen = 0u64;
    // Whether the timer holds this task's waker for its current deadline: it is polled once per
    // deadline, and between deadlines a wake only reads whether it fired (an atomic load), so
    // the data path pays nothing for the timeout.
    let mut armed = false;
    poll_fn(|cx| {
        let r1 = poll_half::<_, _, FROM_TLS_CHUNK>(cx, a, b, &mut ab, a_to_b, Side::A)?;
        let r2 = poll_half::<_, _, FROM_APP_CHUNK>(cx, b, a, &mut ba, b_to_a, Side::B)?;
        if let (Poll::Ready(()), Poll::Ready(())) = (r1, r2) {
            return Poll::Ready(Ok((ab.total, ba.total)));
        }
        loop {
            if timer.is_elapsed() {
                let moved = ab.total + ba.total;
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

fn poll_half<R, W, const CHUNK: usize>(
    cx: &mut Context<'_>,
    r: &mut R,
    w: &mut W,
    st: &mut Half,
    counter: &Counter,
    reader_side: Side,
) -> Poll<Result<(), ForwardError>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (read_err, write_err): (ErrSide, ErrSide) = match reader_side {
        Side::A => (ForwardError::Downstream, ForwardError::Upstream),
        Side::B => (ForwardError::Upstream, ForwardError::Downstream),
    };
    if st.shut_down {
        return Poll::Ready(Ok(()));
    }
    for _ in 0..BUDGET {
        // 1. Finish what the writer has not taken yet.
        while st.pos < st.pending.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &st.pending[st.pos..]))
                .map_err(write_err)?;
            if n == 0 {
                return Poll::Ready(Err(write_err(io::ErrorKind::WriteZero.into())));
            }
            st.pos += n;
            st.need_flush = true;
        }
        if !st.pending.is_empty() {
            // Drained: free it, so an idle connection holds no buffer.
            st.pending = Vec::new();
            st.pos = 0;
        }
        // 2. Reader done: pass the half-close on.
        if st.read_eof {
            ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(write_err)?;
            st.shut_down = true;
            return Poll::Ready(Ok(()));
        }
        // 3. Read more.
        // Uninitialised: a plain TCP read fills it without zeroing 64 KiB per call first.
        let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *r).poll_read(cx, &mut buf) {
            Poll::Pending => {
                if st.need_flush {
                    ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(write_err)?;
                    st.need_flush = false;
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => st.read_eof = true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(read_err(e))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => st.read_eof = true,
            Poll::Ready(Ok(())) => {
                let data = buf.filled();
                counter.inc_by(data.len() as u64);
                st.total += data.len() as u64;
                // Try to hand it over at once; keep only what the writer could not take.
                let taken = match Pin::new(&mut *w).poll_write(cx, data) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(write_err(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(write_err(e))),
                    Poll::Pending => 0,
                };
                st.need_flush = true;
                if taken < data.len() {
                    st.pending.extend_from_slice(&data[taken..]);
                }
            }
        }
    }
    // Used the budget with data still flowing: let other connections run.
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut app) = tokio::io::duplex(64);
        let (c1, c2) = (Counter::default(), Counter::default());
        let fwd = tokio::spawn(async move {
            forward(
                &mut a,
                &mut b,
                &c1,
                &c2,
                std::time::Duration::from_secs(3600),
            )
            .await
            .map(|r| (r, c1.get()))
        });

        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap(); // half-close
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap(); // ends: half-close reached the app
        assert_eq!(got, big, "nothing lost or reordered");
        app.write_all(b"reply after half-close").await.unwrap();
        app.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let ((ab, ba), counted) = fwd.await.unwrap().unwrap();
        assert_eq!((ab, ba), (200_000, 22));
        assert_eq!(counted, 200_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_ends_after_the_idle_timeout_and_a_busy_one_does_not() {
        use std::time::Duration;
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut app) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let fwd = tokio::spawn(async move {
            let (c1, c2) = (Counter::default(), Counter::default());
            forward(&mut a, &mut b, &c1, &c2, idle).await
        });
        // Busy: a byte every 6 s for a minute, longer than the timeout in all.
        for _ in 0..10 {
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            app.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(!fwd.is_finished(), "closed while bytes were moving");
        }
        // Then quiet: closed within two timeouts (one to notice the last byte, one quiet).
        tokio::time::sleep(2 * idle).await;
        match fwd.await.unwrap() {
            Err(ForwardError::Idle(d)) => assert_eq!(d, idle),
            other => panic!("expected an idle close, got {other:?}"),
        }
    }
}
