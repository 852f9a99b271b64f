//! The metrics listener control and the agents share: plain HTTP, `GET /metrics` only (any
//! other path or method is a 404), headers within 10 s and the whole exchange within 30, so a
//! scraper that connects and says nothing holds nothing long.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use tracing::{info, warn};

/// Serves `GET /metrics` on `listener`, each answer what `render` gives (Prometheus text),
/// until `stop` resolves.
pub async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    render: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        info!(url = %format!("http://{addr}/metrics"), "metrics listening");
    }
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "metrics accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let render = render.clone();
                    async move {
                        let r = if req.uri().path() == "/metrics"
                            && req.method() == hyper::Method::GET
                        {
                            let mut r = Response::new(Full::new(Bytes::from(render().await)));
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
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_loopback() {
        assert_eq!(parse_listen("9102").unwrap().to_string(), "127.0.0.1:9102");
        assert_eq!(
            parse_listen("192.0.2.254:9102").unwrap().to_string(),
            "192.0.2.254:9102"
        );
        assert!(parse_listen("nine").is_err());
    }
}
