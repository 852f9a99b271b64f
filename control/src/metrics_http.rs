//! Control's metrics listener: plain HTTP, `GET /metrics` only (`control serve
//! --metrics-listen ADDR`, off by default; a bare port means 127.0.0.1). A scrape encodes the
//! counters of [`crate::metrics`] and reads what is current: the revision, open watch streams,
//! and objects in the state (one database round trip).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// Serves `GET /metrics` (plain HTTP) on `listener` until `stop`; anything else is a 404.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
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
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let ctx = ctx.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics"
                            && req.method() == hyper::Method::GET
                        {
                            let mut r = Response::new(Full::new(Bytes::from(encode(&ctx).await)));
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
            // Headers within 10 s: a scraper that connects and says nothing holds nothing long.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}
