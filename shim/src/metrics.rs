//! The cell agent's Prometheus metrics and their listener: plain HTTP, `GET /metrics` only
//! (`c2c-agent --metrics-listen ADDR`, off by default; a bare port means 127.0.0.1). Labels are
//! bounded: results are `ok` or `failed`; nothing names an app, instance or address.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How something ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// What became of a DNS query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabel {
    /// A response code's name, `relayed` or `ignored`.
    pub outcome: &'static str,
}

/// A DNS question type's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsTypeLabel {
    /// `A`, `AAAA`, ..., or `other`.
    pub qtype: &'static str,
}

/// Everything the agent counts.
pub struct Metrics {
    /// The revision of control's state this cell has acted on (rules applied at it, or nothing
    /// to change): control's revision minus this is how far the cell is behind.
    pub revision: Gauge,
    /// The revision of control's state whose rules this cell last applied.
    pub revision_applied: Gauge,
    /// Rule applies, by result.
    pub rule_applies: Family<ResultLabel, Counter>,
    /// How long applying the ruleset took.
    pub rule_apply_seconds: Histogram,
    /// Containers on this cell (in the last applied rules).
    pub containers: Gauge,
    /// Policies in the last applied rules.
    pub policies: Gauge,
    /// Lease renewals that failed.
    pub lease_renewal_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            revision: Gauge::default(),
            revision_applied: Gauge::default(),
            rule_applies: Family::default(),
            // 0.5 ms to about 4 s, doubling.
            rule_apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            containers: Gauge::default(),
            policies: Gauge::default(),
            lease_renewal_failures: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts a rules apply that succeeded, with what it applied.
    pub fn applied(&self, revision: u64, containers: usize, policies: usize, took: Duration) {
        self.revision_applied.set(revision as i64);
        self.containers.set(containers as i64);
        self.policies.set(policies as i64);
        self.rule_apply_seconds.observe(took.as_secs_f64());
        self.rule_applies
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
    }

    /// Counts a rules apply that failed.
    pub fn apply_failed(&self) {
        self.rule_applies
            .get_or_create(&ResultLabel { result: "failed" })
            .inc();
    }

    /// Every metric as Prometheus text.
    pub fn encode(&self) -> String {
        let mut reg = Registry::with_prefix("c2c_agent");
        reg.register(
            "revision",
            "The revision of control's state this cell has acted on (rules applied at it, or nothing to change)",
            self.revision.clone(),
        );
        reg.register(
            "revision_applied",
            "The revision of control's state whose rules this cell last applied",
            self.revision_applied.clone(),
        );
        reg.register(
            "rule_applies",
            "Rule applies, by result (ok, failed)",
            self.rule_applies.clone(),
        );
        reg.register(
            "rule_apply_duration_seconds",
            "Time to apply the cell's ruleset",
            self.rule_apply_seconds.clone(),
        );
        reg.register(
            "containers",
            "Containers on this cell in the last applied rules",
            self.containers.clone(),
        );
        reg.register(
            "policies",
            "Policies in the last applied rules",
            self.policies.clone(),
        );
        reg.register(
            "lease_renewal_failures",
            "Lease renewals that failed",
            self.lease_renewal_failures.clone(),
        );
        let dns: Family<DnsLabel, Counter> = Family::default();
        let q = &crate::dns::QUERIES;
        for (rcode, n) in q.by_rcode() {
            dns.get_or_create(&DnsLabel { outcome: rcode }).inc_by(n);
        }
        for (outcome, n) in [("relayed", &q.relayed), ("ignored", &q.ignored)] {
            let n = n.load(std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                dns.get_or_create(&DnsLabel { outcome }).inc_by(n);
            }
        }
        let types: Family<DnsTypeLabel, Counter> = Family::default();
        for (qtype, n) in q.by_qtype() {
            types.get_or_create(&DnsTypeLabel { qtype }).inc_by(n);
        }
        reg.register(
            "dns_upstream_seconds",
            "How long relaying a query to the upstream resolvers took, to their answer or to SERVFAIL",
            crate::dns::RELAY_SECONDS.clone(),
        );
        reg.register(
            "dns_questions",
            "Queries the cell's DNS took, by the question's type (A, AAAA, SRV, PTR, CNAME, TXT, SOA, ANY; any other is other)",
            types,
        );
        reg.register(
            "dns_queries",
            "Queries the cell's DNS took, by outcome: the response code it answered (NOERROR, NXDOMAIN, REFUSED, ...), relayed upstream, or ignored",
            dns,
        );
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let f = &crate::flows::COUNTS;
        for (name, help, n) in [
            ("flows_recorded", "Flows (traffic-log records) kept for control", load(&f.recorded)),
            ("flows_dropped", "Flows dropped: overwritten in the full ring, or not fitting back after a failed report", load(&f.dropped)),
            ("flows_reported", "Flows control took", load(&f.reported)),
            ("flow_reports_failed", "Flow reports control did not take (kept for the next)", load(&f.report_failures)),
            ("sidecar_restarts", "Sidecars that exited and were started again", load(&crate::sidecars::RESTARTS)),
            ("traffic_log_lines", "Lines the traffic log wrote", load(&crate::netlog::LINES_WRITTEN)),
            ("traffic_log_kernel_drops", "Times the kernel dropped traffic-log records (a burst past the socket buffer)", load(&crate::netlog::KERNEL_DROPS)),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            reg.register(name, help, c);
        }
        let soonest = crate::certsync::SOONEST_EXPIRY.load(std::sync::atomic::Ordering::Relaxed);
        if soonest > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let left = Gauge::<i64>::default();
            left.set(soonest - now);
            reg.register(
                "certificate_expiry_seconds",
                "Seconds until the soonest of this cell's instance certificates and identities expires (absent: none)",
                left,
            );
        }
        let supervised = Gauge::<i64>::default();
        supervised.set(load(&crate::sidecars::SUPERVISED) as i64);
        reg.register(
            "sidecars",
            "Sidecars the agent supervises (of containers a runtime started through c2c-hook)",
            supervised,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop` (see [`c2c_api::metrics_http`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let render = move || {
        let metrics = metrics.clone();
        async move { metrics.encode() }
    };
    c2c_api::metrics_http::serve(listener, render, stop.cancelled_owned()).await;
}
