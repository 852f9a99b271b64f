//! A cell's streamed watch: after the `101 Switching Protocols` (`Upgrade: c2c-watch`), the
//! connection leaves HTTP, and this task writes one line per change, each the cell's view as
//! JSON with only what changed since the line before (`unchanged` names the rest), and an empty
//! line after [`HEARTBEAT`] without a change, so either side notices a dead peer. Parked, a
//! stream holds its TLS session and this task, not a request and hyper's two buffers: the
//! cheapest way for thousands of cells to wait.
//!
//! The cell's certificate is checked again before every line: a cell revoked while it streams
//! gets no further line and its stream is closed. What a cell can hold open is bounded: each
//! line must be taken within [`Budget::watch_write`](crate::ctx::Budget), and a cell holds at
//! most [`Budget::watch_streams_per_cell`](crate::ctx::Budget) streams (a newer one closes the
//! oldest).

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use crate::auth::registered_cell;
use crate::ctx::{Ctx, Peer};
use c2c_api::Revision;

/// Bytes of TLS records a stream may hold in user space beyond what its socket took.
const STREAM_TLS_BUFFER: usize = 16 * 1024;

/// An empty line after this long without a change.
pub const HEARTBEAT: Duration = c2c_api::paths::WATCH_HEARTBEAT;

pub use crate::streams::Streams;

/// Writes `parts` and flushes, within `limit`; false if the cell did not take them in time
/// or the connection failed.
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    parts: &[&[u8]],
    limit: Duration,
    cell: &str,
) -> bool {
    let write = async {
        for p in parts {
            io.write_all(p).await?;
        }
        io.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r.is_ok(),
        Err(_) => {
            info!(
                %cell,
                ?limit,
                "the cell took no watch line within the limit; closing its stream"
            );
            false
        }
    }
}

/// The connection under an upgrade, as `api::serve` hands it to hyper.
type Wire = TokioIo<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// Writes `peer`'s views from revision `after` on the upgraded connection until the cell goes
/// away, is revoked, or a write fails. The TLS stream is taken out of hyper's wrapper, so
/// hyper's read buffer (8 KiB, empty: a cell sends nothing after its request) is not kept for
/// the life of the stream.
pub async fn run(io: Upgraded, ctx: Arc<Ctx>, peer: Peer, after: Revision) {
    // Taken apart before any await: a value matched on lives until its match ends, so awaiting
    // inside the match kept the whole TLS session inline in every parked stream's task
    // (heaptrack at 1,000 streams: a stream's task 7.4 KiB; 2.6 KiB with the session boxed but
    // the match still around the await).
    let tls = match io.downcast::<Wire>() {
        Ok(parts) if parts.read_buf.is_empty() => {
            // `parts` kept whole would keep its (empty) read buffer, which still holds hyper's
            // 8 KiB allocation, for the life of the stream.
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            drop(read_buf);
            // Boxed: the TLS session (a rustls connection is 1.2 KiB) lives once on the heap.
            let mut tls = Box::new(io.into_inner());
            // A whole first view is large (every lease and app); what the socket does not take
            // at once waits in rustls' buffer, which this bounds for a cell that reads slowly
            // (the rest waits in the one shared copy). At 1,000 cells it made no measurable
            // difference to a parked stream's memory (25.5 -> 25.0 KiB, before the arena fix).
            tls.get_mut().1.set_buffer_limit(Some(STREAM_TLS_BUFFER));
            Ok(tls)
        }
        Ok(_) => return debug!("a cell sent bytes after its watch request; closing the stream"),
        // Another transport (in-process tests): as it is.
        Err(io) => Err(io),
    };
    match tls {
        Ok(tls) => write_views(tls, ctx, peer, after).await,
        Err(io) => write_views(TokioIo::new(io), ctx, peer, after).await,
    }
}

/// Writes `peer`'s views to `io` from revision `after` on, one line per change, until the cell
/// goes away, is revoked, stops reading, or opens streams past its limit. (The transport of
/// [`run`]; public for tests that drive it over an in-memory pipe.)
pub async fn write_views<W: tokio::io::AsyncWrite + Unpin>(
    io: W,
    ctx: Arc<Ctx>,
    peer: Peer,
    after: Revision,
) {
    let budget = ctx.budget();
    let cell = peer.cn.clone();
    let slot = ctx.streams.open(&cell, budget.watch_streams_per_cell);
    tokio::select! {
        _ = slot.closed.cancelled() => {
            info!(%cell, "a newer watch stream of the cell replaced this one; closed")
        }
        _ = lines(io, ctx.clone(), peer, after, budget.watch_write) => {}
    }
    drop(slot);
}

async fn lines<W: tokio::io::AsyncWrite + Unpin>(
    mut io: W,
    ctx: Arc<Ctx>,
    peer: Peer,
    mut after: Revision,
    limit: Duration,
) {
    let mut rx = ctx.revision.subscribe();
    // Deltas only against a revision this replica built (else the whole view).
    let mut known = after.0 > 0;
    loop {
        // (The guard `wait_for` returns is dropped at once: it must not live across a write.)
        let woke = tokio::time::timeout(HEARTBEAT, rx.wait_for(|rev| *rev > after))
            .await
            .map(|r| r.is_ok());
        match woke {
            Err(_) => {
                if !Box::pin(send(&mut io, &[b"\n"], limit, &peer.cn)).await {
                    return debug!("watch stream closed (heartbeat)");
                }
                continue;
            }
            // The server is going away.
            Ok(false) => return,
            Ok(true) => {}
        }
        // The large futures a wake awaits (and each write, below) are boxed, so a parked
        // stream's task holds only what waiting takes (its timer and its revision receiver),
        // not the largest of these.
        let cell = match Box::pin(registered_cell(&ctx, Some(&peer), "a watch")).await {
            Ok(c) => c,
            Err(_) => return info!("watch stream of a revoked cell closed"),
        };
        if ctx.per_watcher_views {
            // The reference of bench/scale.sh: each watcher's whole view built on its own.
            let c = cell.clone();
            let Ok(v) = Box::pin(ctx.with_state(move |s| crate::views::view(s, &c))).await else {
                return;
            };
            let mut json = serde_json::to_string(&v).unwrap_or_default();
            json.push('\n');
            if !Box::pin(send(&mut io, &[json.as_bytes()], limit, &peer.cn)).await {
                return;
            }
            after = v.revision;
            continue;
        }
        let current = ctx.current_revision();
        let shared = match Box::pin(ctx.views.at_least(current, |prev| ctx.read_shared(prev))).await
        {
            Ok(s) => s,
            Err(error) => {
                debug!(%error, "view for a watch stream failed; closing it");
                return;
            }
        };
        let since = known.then(|| ctx.views.hashes_at(after)).flatten();
        let Ok(pieces) = shared.view_pieces(&cell, since) else {
            return;
        };
        // Piece by piece: the shared parts go out from the one copy every cell shares.
        let parts: Vec<&[u8]> = pieces
            .iter()
            .map(|p| p.as_bytes())
            .chain([&b"\n"[..]])
            .collect();
        if !Box::pin(send(&mut io, &parts, limit, &cell)).await {
            return debug!(cell = %cell, "watch stream closed");
        }
        after = shared.revision;
        known = true;
    }
}
