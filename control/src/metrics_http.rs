//! Control's metrics listener: plain HTTP, `GET /metrics` only (`control serve
//! --metrics-listen ADDR`, off by default; a bare port means 127.0.0.1). A scrape encodes the
//! counters of [`crate::metrics`] and reads what is current: the revision, open watch streams,
//! and objects in the state (one database round trip).

use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ctx::Ctx;
use crate::metrics::KindLabel;

/// Every metric as Prometheus text: the counters above, and what is read at the scrape (the
/// revision, open watch streams, objects in the state).
pub async fn encode(ctx: &Arc<Ctx>) -> String {
    let m = &ctx.metrics;
    let mut reg = Registry::with_prefix("c2c_control");
    reg.register(
        "requests",
        "Requests answered, by endpoint and status code",
        m.requests.clone(),
    );
    reg.register(
        "request_duration_seconds",
        "Time to answer a request, by endpoint (a long poll's wait included)",
        m.request_seconds.clone(),
    );
    reg.register(
        "certificates_signed",
        "Certificates signed, by kind (cell, route, identity)",
        m.signed.clone(),
    );
    reg.register(
        "auth_failures",
        "Callers refused for their token, by reason (missing_token, unknown_token)",
        m.auth_failures.clone(),
    );
    {
        // Empty on SQLite (one control, nothing to follow).
        reg.register(
            "notify_lag_seconds",
            "On PostgreSQL: from a write's commit (any replica's) to this replica hearing of it (LISTEN/NOTIFY)",
            m.notify_lag_seconds.clone(),
        );
        reg.register(
            "revisions_followed",
            "On PostgreSQL: revisions learned from the database that another replica wrote",
            m.revisions_followed.clone(),
        );
    }
    register_shedding(&mut reg, m);
    let (received, dropped) = ctx.flows.totals();
    for (name, help, n) in [
        (
            "flows_received",
            "Flows the cells reported to this replica",
            received,
        ),
        (
            "flows_dropped",
            "Flows dropped: on the cells (as they reported) and overwritten here",
            dropped,
        ),
    ] {
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    }
    let revision = Gauge::<i64>::default();
    revision.set(ctx.current_revision().0 as i64);
    reg.register(
        "revision",
        "The state's revision as this replica's watches have it",
        revision,
    );
    let streams = Gauge::<i64>::default();
    streams.set(ctx.streams.total() as i64);
    reg.register(
        "watch_streams",
        "Cells' watch streams open on this replica",
        streams,
    );
    let objects: Family<KindLabel, Gauge> = Family::default();
    let t = std::time::Instant::now();
    match ctx.with_state(|s| s.object_counts()).await {
        Ok(counts) => {
            m.db_seconds.observe(t.elapsed().as_secs_f64());
            for (kind, n) in counts {
                objects.get_or_create(&KindLabel { kind }).set(n);
            }
        }
        Err(error) => {
            m.db_errors.inc();
            warn!(%error, "counting the state for metrics failed");
        }
    }
    reg.register(
        "objects",
        "Objects in the state, by kind (apps, instances, policies, routes, cells)",
        objects,
    );
    reg.register(
        "db_query_duration_seconds",
        "Time the scrape's count of the state took in the database",
        m.db_seconds.clone(),
    );
    reg.register(
        "db_errors",
        "Scrapes whose count of the state failed",
        m.db_errors.clone(),
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(ctx.started.elapsed().as_secs() as i64);
    reg.register_with_unit(
        "uptime",
        "Time since this replica started",
        prometheus_client::registry::Unit::Seconds,
        uptime,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// What the API listener sheds and its handshakes (see [`crate::admission`]).
fn register_shedding(reg: &mut Registry, m: &crate::metrics::Metrics) {
    reg.register(
        "shed",
        "Connections closed and watch streams refused to stay within a budget, by reason (connections, connections_per_source, handshakes_per_source, handshake_queue, streams)",
        m.shed.clone(),
    );
    reg.register(
        "handshakes_in_progress",
        "TLS handshakes in progress on the API listener",
        m.handshakes_in_progress.clone(),
    );
    reg.register(
        "handshakes_waiting",
        "API connections waiting for a TLS handshake's turn",
        m.handshakes_waiting.clone(),
    );
}

/// Serves `GET /metrics` on `listener` until `stop` (see [`c2c_api::metrics_http`]).
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let render = move || {
        let ctx = ctx.clone();
        async move { encode(&ctx).await }
    };
    c2c_api::metrics_http::serve(listener, render, stop.cancelled_owned()).await;
}
