//! The cell agent's Prometheus metrics and their listener: plain HTTP, `GET /metrics` only
//! (`c2c-agent --metrics-listen ADDR`, off by default; a bare port means 127.0.0.1). Labels are
//! bounded: results are `ok` or `failed`; nothing names an app, instance or address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How something ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: &'static str,
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
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

/// Serves `GET /metrics` (plain HTTP) on `listener` until `stop`; anything else is a 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(url = %format!("http://{addr}/metrics"), "metrics listening");
    }
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "metrics accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics"
                            && req.method() == hyper::Method::GET
                        {
                            let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                            );
                            r
                        } else {
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(b"GET /metrics\n")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(tcp);
            // Headers within 10 s, the whole exchange within 30: a scraper that connects and
            // says nothing holds nothing long.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// `--metrics-listen`'s value: `HOST:PORT`, or a bare `PORT` on 127.0.0.1.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?}: give HOST:PORT, or a PORT (on 127.0.0.1)"))
}
