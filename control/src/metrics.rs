//! Control's Prometheus metrics: what it counts as it serves (the scrape and its listener are
//! [`crate::metrics_http`]'s; `control serve --metrics-listen ADDR`, off by default).
//!
//! Every label set is bounded, whatever clients send: requests are labelled by the endpoint's
//! name (the platform API's [`Endpoint`] variants, the cell API's verbs, CF's APIs by family;
//! any other path is `other`) and the status code; never by a name, GUID or address.

use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use c2c_api::endpoints::Endpoint;

/// A request's labels: which endpoint, and the status it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The endpoint's name (see [`endpoint_label`]).
    pub endpoint: String,
    /// The HTTP status code answered.
    pub code: String,
}

/// An endpoint, for its latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The endpoint's name (see [`endpoint_label`]).
    pub endpoint: String,
}

/// What kind of thing (certificate, object).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `cell`, `route`, `identity`; `apps`, `policies`, ...
    pub kind: &'static str,
}

/// Why a caller was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `missing_token`, `unknown_token`; for shedding, the budget (`connections`,
    /// `connections_per_source`, `handshakes_per_source`, `handshake_queue`, `streams`).
    pub reason: &'static str,
}

type Latencies = Family<EndpointLabel, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 8 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Everything control counts.
pub struct Metrics {
    /// Requests answered, by endpoint and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// How long requests took to answer, by endpoint (a long poll's wait included).
    pub request_seconds: Latencies,
    /// Certificates signed, by kind.
    pub signed: Family<KindLabel, Counter>,
    /// Callers refused for their token, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// How long the last scrape's count of the state took (a database round trip).
    pub db_seconds: Histogram,
    /// Scrapes whose count of the state failed (the database unreachable).
    pub db_errors: Counter,
    /// On PostgreSQL: from a write's commit (any replica's) to this replica hearing of it
    /// (`LISTEN`/`NOTIFY`), by the two hosts' clocks.
    pub notify_lag_seconds: Histogram,
    /// On PostgreSQL: revisions this replica learned from the database that it had not
    /// published itself (another replica's writes).
    pub revisions_followed: Counter,
    /// Connections closed and streams refused to stay within a budget, by reason (see
    /// [`crate::admission`]).
    pub shed: Family<ReasonLabel, Counter>,
    /// TLS handshakes in progress.
    pub handshakes_in_progress: Gauge,
    /// Connections waiting for a handshake's turn.
    pub handshakes_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            signed: Family::default(),
            auth_failures: Family::default(),
            db_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            db_errors: Counter::default(),
            notify_lag_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 14)),
            revisions_followed: Counter::default(),
            shed: Family::default(),
            handshakes_in_progress: Gauge::default(),
            handshakes_waiting: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn answered(&self, endpoint: &str, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                code: status.as_u16().to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one certificate signed.
    pub fn signed(&self, kind: &'static str) {
        self.signed.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts one connection closed or stream refused to stay within a budget.
    pub fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one caller refused for its token.
    pub fn refused(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

/// The bounded name of the endpoint `method path` reaches: a platform API endpoint's variant
/// (`CreateApp`), `cell_VERB` for the cell API, `cf_external`/`cf_internal`/`cf_other` for
/// Cloud Foundry's APIs, `join`, `health`, or `other`.
pub fn endpoint_label(method: &str, path: &str) -> String {
    let segs: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(c2c_api::decode_segment)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if let Some(ep) = Endpoint::parse(method, &segs) {
        let name = format!("{ep:?}");
        return name.split('(').next().unwrap_or("other").to_string();
    }
    const CELL_VERBS: &[&str] = &[
        "lease",
        "watch",
        "instances",
        "certificate",
        "identity",
        "confirm",
        "withdraw",
        "flows",
    ];
    match segs.as_slice() {
        ["v1", "join"] => "join".into(),
        ["v1", "cells", _, rest @ ..] => {
            // The last static word of the path: `cell_watch`, `cell_identity`, ...
            let verb = rest
                .iter()
                .rev()
                .find(|s| CELL_VERBS.contains(s))
                .copied()
                .unwrap_or("other");
            format!("cell_{verb}")
        }
        ["networking", _, "external", ..] => "cf_external".into(),
        ["networking", _, "internal", ..] => "cf_internal".into(),
        ["networking", ..] => "cf_other".into(),
        [] | [""] => "root".into(),
        ["health"] | ["v1", "health"] | ["uptime"] => "health".into(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_are_names_never_what_a_client_put_in_the_path() {
        assert_eq!(endpoint_label("POST", "/v1/apps"), "CreateApp");
        assert_eq!(endpoint_label("GET", "/v1/apps/someone-s-app"), "GetApp");
        assert_eq!(endpoint_label("GET", "/v1/cells/cell9/watch"), "cell_watch");
        assert_eq!(
            endpoint_label("POST", "/v1/cells/cell1/instances/abc/identity"),
            "cell_identity"
        );
        assert_eq!(
            endpoint_label("GET", "/networking/v1/external/policies"),
            "cf_external"
        );
        // Whatever else a client sends is one label.
        assert_eq!(
            endpoint_label("GET", "/v1/cells/x/%2e%2e/anything"),
            "cell_other"
        );
        assert_eq!(endpoint_label("GET", "/random/1234"), "other");
        assert_eq!(endpoint_label("PATCH", "/v1/apps"), "other");
    }
}
