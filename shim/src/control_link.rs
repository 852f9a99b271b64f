//! The agent's link to control: its lease, taken at start (waiting out an unreachable or
//! failing control), and the streamed watch of its view, kept open across replicas.

use std::time::Duration;

use c2c_api::client::{Client, ClientError, StatusCode};
use c2c_api::{CellName, CellView, Lease, Revision};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a watch stream may stay silent (control sends a heartbeat line every
/// [`c2c_api::paths::WATCH_HEARTBEAT`], 2 s) before it is taken for dead and opened again, on
/// the next replica: three heartbeats missed, and a second for a busy replica.
const STREAM_SILENCE: Duration =
    Duration::from_secs(c2c_api::paths::WATCH_HEARTBEAT.as_secs() * 3 + 1);

/// Keeps a streamed watch open on a task of its own and sends each whole view: a line that
/// carries only changes is merged into the view before it. A stream that ends, fails or goes
/// silent is opened again (100 ms, doubling to 2 s), on the next replica when this one cannot
/// be reached, from the revision the cell has; meanwhile the cell keeps enforcing what it has.
/// Every wait is jittered, and a stream that ended waits up to [`REOPEN_SPREAD`] before it is
/// opened again: the cells a replica dies under do not all come back at the same instant. A
/// replica at its stream budget (503, `Retry-After`) sends the cell to the next one; when every
/// replica said so, the cell waits what `Retry-After` asks (see [`busy_wait`]).
pub fn spawn_watch(
    client: Client,
    cell: CellName,
    shutdown: CancellationToken,
) -> tokio::sync::mpsc::Receiver<CellView> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut last: Option<CellView> = None;
        let mut backoff = Duration::from_millis(100);
        let mut rng = seed(cell.as_str());
        let mut ended = false;
        // Replicas in a row that answered they were at their stream budget.
        let mut busy = 0;
        loop {
            if std::mem::take(&mut ended) {
                tokio::time::sleep(jittered(REOPEN_SPREAD, 0.0, &mut rng)).await;
            }
            let after = last.as_ref().map_or(Revision(0), |v| v.revision);
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client.watch_stream(cell.as_str(), after) => r,
            };
            let mut stream = match opened {
                Ok(s) => {
                    debug!(url = %client.url(), after = after.0, "watch stream open");
                    backoff = Duration::from_millis(100);
                    busy = 0;
                    s
                }
                Err(ClientError::Busy {
                    url,
                    retry_after,
                    message,
                }) => {
                    busy += 1;
                    let wait = busy_wait(busy, client.replicas(), backoff, retry_after, &mut rng);
                    warn!(%url, %message, retry_in_ms = wait.as_millis() as u64, "control replica at its stream budget; opening the stream on the next replica");
                    client.demote(&url);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                Err(error) => {
                    warn!(%error, retry_in_ms = backoff.as_millis() as u64, "watch failed; enforcing the last known state and retrying");
                    tokio::time::sleep(jittered(backoff, 0.5, &mut rng)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(STREAM_SILENCE, stream.next()) => r,
                };
                let v = match next {
                    Ok(Ok(Some(v))) => v,
                    Ok(Ok(None)) => continue,
                    Ok(Err(error)) => {
                        warn!(%error, "watch stream ended; opening it again");
                        ended = true;
                        break;
                    }
                    Err(_) => {
                        warn!(url = %client.url(), silent_s = STREAM_SILENCE.as_secs(), "watch stream silent; opening it again on the next replica");
                        client.demote(stream.url());
                        break;
                    }
                };
                let whole = match &last {
                    Some(prev) => v.merged(prev),
                    None => v.unchanged.is_empty().then_some(v),
                };
                let Some(whole) = whole else {
                    warn!("watch stream sent changes to a view this cell does not have; starting over");
                    last = None;
                    break;
                };
                last = Some(whole.clone());
                if tx.send(whole).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// How long to wait after the `busy`-th replica in a row answered it was at its stream budget
/// (503, `retry_after`), of `replicas`: the next replica at once (a short jittered wait), and
/// once every replica said so, at least `retry_after`, spread over half again.
fn busy_wait(
    busy: usize,
    replicas: usize,
    backoff: Duration,
    retry_after: Duration,
    rng: &mut u64,
) -> Duration {
    if busy < replicas {
        jittered(backoff, 0.5, rng)
    } else {
        retry_after + jittered(retry_after / 2, 0.0, rng)
    }
}

/// The most a cell waits, spread at random, before it opens a stream that ended again.
pub const REOPEN_SPREAD: Duration = Duration::from_millis(500);

/// A seed of the cell's own (its name and the start's time), so cells draw apart.
fn seed(cell: &str) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    cell.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ t, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1
}

/// `d` shortened at random to between `floor` (a fraction) and all of it (xorshift on `rng`).
pub fn jittered(d: Duration, floor: f64, rng: &mut u64) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let unit = (*rng >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(floor + (1.0 - floor) * unit)
}

/// The cell's lease, retried until control answers (cells may start before control); `None`
/// if the agent was stopped meanwhile. A refusal (an HTTP status) is final.
pub(crate) async fn acquire_lease(
    client: &Client,
    cell: &CellName,
    underlay_ip: std::net::Ipv4Addr,
    shutdown: &CancellationToken,
) -> Result<Option<Lease>, ClientError> {
    loop {
        match client.acquire_lease(cell, underlay_ip).await {
            Ok(l) => return Ok(Some(l)),
            // Every subnet is leased to a live cell: one may expire or be removed; wait.
            Err(ClientError::Status { status, message })
                if status == StatusCode::CONFLICT && message.contains("no free subnet") =>
            {
                warn!(%message, "no subnet for this cell yet; waiting for one to be freed (c2c cell remove, or an expired lease)");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            // Control answered but could not serve (its database restarting, a replica
            // failing over): as unreachable, not a reason to give up the cell.
            Err(ClientError::Status { status, message }) if status.is_server_error() => {
                warn!(%status, %message, "control could not serve the lease yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e @ ClientError::Status { .. }) => return Err(e),
            Err(error) => {
                warn!(%error, "control not reachable yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_replica_sends_the_cell_on_and_only_all_of_them_busy_makes_it_wait_retry_after() {
        let mut rng = seed("cell1");
        let (backoff, ra) = (Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..200 {
            // The first of two replicas is busy: the next one, at once.
            assert!(busy_wait(1, 2, backoff, ra, &mut rng) <= backoff);
            // Both said so: what Retry-After asks, at least, spread over half again.
            let w = busy_wait(2, 2, backoff, ra, &mut rng);
            assert!(w >= ra && w <= ra + ra / 2, "{w:?}");
            // One replica: it is every replica.
            assert!(busy_wait(1, 1, backoff, ra, &mut rng) >= ra);
        }
    }

    #[test]
    fn waits_are_spread_within_their_bounds() {
        let mut rng = seed("cell1");
        let d = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(d, 0.5, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d));
        // Spread: the draws fill the range, not one point of it.
        let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*lo < d * 11 / 20 && *hi > d * 19 / 20, "{lo:?}..{hi:?}");
        // Two cells starting together draw apart.
        let (mut a, mut b) = (seed("cell1"), seed("cell2"));
        let ours = |r: &mut u64| (0..8).map(|_| jittered(d, 0.0, r)).collect::<Vec<_>>();
        assert_ne!(ours(&mut a), ours(&mut b));
    }
}
