//! Prometheus metrics of the sidecar, served as text on the admin endpoint's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels naming a listener by its configured address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// The listen address as configured.
    pub listener: String,
}

/// Labels of a failure by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Short, stable reason (`timeout`, `key_mismatch`, ...).
    pub reason: String,
}

/// Labels of a byte counter by direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `downstream_to_upstream` (client to app) or `upstream_to_downstream`.
    pub direction: &'static str,
}

/// Labels of a reload outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    /// `ok`, `unchanged` or `refused`.
    pub result: &'static str,
    /// Why it was refused; empty otherwise.
    pub reason: String,
}

/// Every metric the sidecar keeps.
#[derive(Default)]
pub struct Metrics {
    /// Client connections accepted, per listener.
    pub accepted: Family<ListenerLabel, Counter>,
    /// Client connections open now, per listener.
    pub active: Family<ListenerLabel, Gauge>,
    /// TLS handshakes that failed, per reason.
    pub handshake_failures: Family<ReasonLabel, Counter>,
    /// Connections to the app that failed, per reason.
    pub upstream_connect_failures: Family<ReasonLabel, Counter>,
    /// Plaintext bytes forwarded, per direction.
    pub bytes: Family<DirectionLabel, Counter>,
    /// Certificate reloads, per result.
    pub reloads: Family<ReloadLabel, Counter>,
    /// The served leaf's not_after, unix seconds.
    pub cert_not_after: Gauge,
    /// Forwarded connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Connections closed at accept: their client address held its share.
    pub source_limited: Counter,
    /// Callers refused for their identity (none, invalid, no policy, not live), per reason.
    pub client_identity_refusals: Family<ReasonLabel, Counter>,
    /// Handshakes completed, by the application protocol agreed in ALPN.
    pub protocols: Family<ProtocolLabel, Counter>,
}

/// Labels of a handshake by the protocol agreed in ALPN.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `h2`, `http/1.1`, or `none` (no ALPN agreed).
    pub protocol: String,
}

impl Metrics {
    /// Encodes every metric in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut reg = Registry::with_prefix("c2c_proxy");
        reg.register(
            "connections_accepted",
            "Client connections accepted",
            self.accepted.clone(),
        );
        reg.register(
            "connections_active",
            "Client connections open now",
            self.active.clone(),
        );
        reg.register(
            "handshake_failures",
            "TLS handshakes that failed, by reason",
            self.handshake_failures.clone(),
        );
        reg.register(
            "upstream_connect_failures",
            "Connections to the app that failed, by reason",
            self.upstream_connect_failures.clone(),
        );
        reg.register(
            "bytes",
            "Plaintext bytes forwarded, by direction",
            self.bytes.clone(),
        );
        reg.register(
            "cert_reloads",
            "Certificate reloads, by result (ok, unchanged, refused) and refusal reason",
            self.reloads.clone(),
        );
        reg.register(
            "idle_timeouts",
            "Forwarded connections closed after --idle-timeout without traffic",
            self.idle_closed.clone(),
        );
        reg.register(
            "source_limited",
            "Connections closed at accept because their client address held --max-connections-per-source",
            self.source_limited.clone(),
        );
        reg.register(
            "client_identity_refusals",
            "Callers refused for their instance identity, by reason (no_certificate, invalid_certificate, not_an_identity, no_policy, unknown_instance, no_issuer)",
            self.client_identity_refusals.clone(),
        );
        reg.register(
            "handshakes_by_protocol",
            "TLS handshakes completed, by the application protocol agreed in ALPN (h2, http/1.1, none); a client offering none of the app's is counted in handshake_failures as no_application_protocol",
            self.protocols.clone(),
        );
        reg.register(
            "cert_not_after_seconds",
            "Expiry of the certificate in service, unix time",
            self.cert_not_after.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// Counts one handshake failure.
    pub fn handshake_failed(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one completed handshake by its ALPN protocol.
    pub fn negotiated(&self, alpn: Option<&[u8]>) {
        let protocol = alpn.map_or_else(
            || "none".to_string(),
            |p| String::from_utf8_lossy(p).into_owned(),
        );
        self.protocols
            .get_or_create(&ProtocolLabel { protocol })
            .inc();
    }

    /// Counts one caller refused for its identity.
    pub fn client_identity_refused(&self, reason: &str) {
        self.client_identity_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one upstream connect failure.
    pub fn upstream_failed(&self, reason: &str) {
        self.upstream_connect_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one reload with its outcome.
    pub fn reloaded(&self, result: &'static str, reason: &str) {
        self.reloads
            .get_or_create(&ReloadLabel {
                result,
                reason: reason.to_string(),
            })
            .inc();
    }
}
