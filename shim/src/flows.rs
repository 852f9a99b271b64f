//! The cell's recent flows: every traffic-log record (see [`crate::netlog`]) also goes into a
//! bounded ring, which the agent reports to control every second ([`REPORT_EVERY`]), at most
//! [`MAX_FLOWS_PER_BATCH`] at a time. A flood overwrites the oldest records and counts them;
//! nothing queues without bound, on the cell or on its way to control.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c2c_api::types::{Flow, FlowBatch, MAX_FLOWS_PER_BATCH};

/// Records the ring keeps (about 300 bytes each).
pub const CAPACITY: usize = 4_096;
/// How often the agent reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Flows counted since the agent started (for its metrics).
#[derive(Debug, Default)]
pub struct Counts {
    /// Recorded in the ring.
    pub recorded: AtomicU64,
    /// Dropped: overwritten in a full ring, or not fitting back after a failed report.
    pub dropped: AtomicU64,
    /// Taken by control.
    pub reported: AtomicU64,
    /// Reports control did not take (kept for the next).
    pub report_failures: AtomicU64,
}

/// The agent's flow counts.
pub static COUNTS: Counts = Counts {
    recorded: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    reported: AtomicU64::new(0),
    report_failures: AtomicU64::new(0),
};

/// The ring, shared by the traffic log's reader (which records) and the agent (which reports).
pub type SharedFlows = Arc<Mutex<FlowRing>>;

/// Recent flows not yet reported, and how many were dropped since the last report.
#[derive(Debug)]
pub struct FlowRing {
    flows: VecDeque<Flow>,
    capacity: usize,
    dropped: u64,
}

impl Default for FlowRing {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl FlowRing {
    /// A ring of at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            flows: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Keeps `f`; when full, the oldest goes (counted).
    pub fn record(&mut self, f: Flow) {
        COUNTS.recorded.fetch_add(1, Ordering::Relaxed);
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
            self.dropped += 1;
            COUNTS.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.flows.push_back(f);
    }

    /// The next report: the oldest records (at most [`MAX_FLOWS_PER_BATCH`]) and the dropped
    /// count, both taken out of the ring. `None` when there is nothing to say.
    pub fn take(&mut self) -> Option<FlowBatch> {
        if self.flows.is_empty() && self.dropped == 0 {
            return None;
        }
        let n = self.flows.len().min(MAX_FLOWS_PER_BATCH);
        let flows = self.flows.drain(..n).collect();
        Some(FlowBatch {
            flows,
            dropped: std::mem::take(&mut self.dropped),
            revision: None,
        })
    }

    /// A report control did not take goes back in front of what came since; what no longer
    /// fits is dropped (counted).
    pub fn put_back(&mut self, batch: FlowBatch) {
        self.dropped += batch.dropped;
        for f in batch.flows.into_iter().rev() {
            if self.flows.len() == self.capacity {
                self.dropped += 1;
                COUNTS.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.flows.push_front(f);
        }
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// Reports the ring to control every [`REPORT_EVERY`] until `shutdown`, with the revision the
/// agent has acted on (what `revision` reads; 0 before the first) when it moved, and every
/// [`REVISION_REPORT_EVERY_SECS`](c2c_api::types::REVISION_REPORT_EVERY_SECS) otherwise.
pub fn spawn_reporter(
    client: c2c_api::client::Client,
    cell: String,
    ring: SharedFlows,
    revision: impl Fn() -> i64 + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let again = Duration::from_secs(c2c_api::types::REVISION_REPORT_EVERY_SECS);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REPORT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said: Option<(i64, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let rev = revision();
                    let due = rev > 0 && said.is_none_or(|(r, at)| r != rev || at.elapsed() >= again);
                    let revision = due.then_some(rev as u64);
                    if report(&client, &cell, &ring, revision).await && due {
                        said = Some((rev, tokio::time::Instant::now()));
                    }
                }
            }
        }
    });
}

/// Reports what the ring holds to control (one batch), with `revision` if given; a failed
/// report goes back. Whether control took a report.
pub async fn report(
    client: &c2c_api::client::Client,
    cell: &str,
    ring: &SharedFlows,
    revision: Option<u64>,
) -> bool {
    let taken = ring.lock().unwrap_or_else(|e| e.into_inner()).take();
    let mut batch = match (taken, revision) {
        (Some(b), _) => b,
        (None, Some(_)) => FlowBatch::default(),
        (None, None) => return false,
    };
    batch.revision = revision;
    match client.push_flows(cell, &batch).await {
        Ok(()) => {
            COUNTS
                .reported
                .fetch_add(batch.flows.len() as u64, Ordering::Relaxed);
            true
        }
        Err(error) => {
            COUNTS.report_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, flows = batch.flows.len(), "reporting flows failed; kept for the next report");
            ring.lock()
                .unwrap_or_else(|e| e.into_inner())
                .put_back(batch);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::types::FlowEnd;

    fn flow(n: u16) -> Flow {
        let end = FlowEnd {
            ip: "10.255.0.1".parse().unwrap(),
            port: Some(n),
            app: None,
            app_guid: None,
        };
        Flow {
            time: "t".into(),
            kind: "c2c".into(),
            verdict: "deny".into(),
            protocol: "tcp".into(),
            source: end.clone(),
            destination: end,
            icmp_type: None,
            icmp_code: None,
            security_group: None,
            cell: None,
            seq: 0,
        }
    }

    fn ports(b: &FlowBatch) -> Vec<u16> {
        b.flows.iter().map(|f| f.source.port.unwrap()).collect()
    }

    #[test]
    fn the_agents_metrics_count_flows() {
        let before = COUNTS.recorded.load(Ordering::Relaxed);
        FlowRing::with_capacity(1).record(flow(1));
        assert!(COUNTS.recorded.load(Ordering::Relaxed) > before);
        let text = crate::metrics::Metrics::default().encode();
        for name in [
            "flows_recorded_total",
            "flows_dropped_total",
            "flows_reported_total",
            "sidecars ",
            "traffic_log_lines_total",
            "traffic_log_kernel_drops_total",
        ] {
            assert!(
                text.contains(&format!("c2c_agent_{name}")),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn a_flood_keeps_the_newest_and_counts_the_rest() {
        let mut r = FlowRing::with_capacity(3);
        assert!(r.take().is_none(), "nothing to report");
        for n in 0..5 {
            r.record(flow(n));
        }
        let b = r.take().unwrap();
        assert_eq!(ports(&b), [2, 3, 4]);
        assert_eq!(b.dropped, 2);
        assert!(r.is_empty() && r.take().is_none());
    }

    #[test]
    fn a_report_goes_out_in_batches_and_comes_back_in_order_when_refused() {
        let mut r = FlowRing::with_capacity(MAX_FLOWS_PER_BATCH + 10);
        for n in 0..(MAX_FLOWS_PER_BATCH as u16 + 10) {
            r.record(flow(n));
        }
        let first = r.take().unwrap();
        assert_eq!(first.flows.len(), MAX_FLOWS_PER_BATCH);
        assert_eq!(r.len(), 10);
        // Refused: back in front; what came since stays behind it.
        r.record(flow(9999));
        r.put_back(first);
        // 11 waited, 512 came back, 522 fit: the oldest (port 0) is dropped and counted.
        let again = r.take().unwrap();
        assert_eq!(ports(&again)[..3], [1, 2, 3]);
        assert_eq!(again.dropped, 1);
        let rest = r.take().unwrap();
        assert_eq!(*ports(&rest).last().unwrap(), 9999);
    }
}
