//! The metrics listener control and the agents share: plain HTTP, `GET /metrics` only (any
//! other path or method is a 404), headers within 10 s and the whole exchange within 30, so a
//! scraper that connects and says nothing holds nothing long; at most [`MAX_CONNECTIONS`] open
//! at once, [`MAX_PER_SOURCE`] from one address (more are closed at accept). [`serve_with`]
//! gives other plain-HTTP listeners (control's console) the same budgets.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use tracing::{info, warn};

/// Connections open at once, in all.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections open at once from one address (a Prometheus pair needs two).
pub const MAX_PER_SOURCE: usize = 8;

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
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let render = render.clone();
        async move {
            if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET {
                let mut r = Response::new(Full::new(Bytes::from(render().await)));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            } else {
                let mut r = Response::new(Full::new(Bytes::from_static(b"GET /metrics\n")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        }
    };
    serve_with(listener, handler, stop).await
}

/// Serves plain HTTP/1 on `listener` with `handler`, within this module's budgets (connections
/// in all and per address, headers within 10 s, the whole exchange within 30 s), until `stop`
/// resolves: the metrics listener, and control's console.
pub async fn serve_with<H, Fut>(
    listener: tokio::net::TcpListener,
    handler: H,
    stop: impl Future<Output = ()>,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::pin!(stop);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let by_source: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    > = Default::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection cap reached; closing");
            continue;
        };
        let Some(share) = Share::take(&by_source, peer.ip()) else {
            tracing::debug!(%peer, "the address holds its share of connections; closing");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _held = (slot, share);
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// One connection of an address's share; given back when dropped.
struct Share {
    by_source: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Share {
    fn take(
        by_source: &std::sync::Arc<
            std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
        >,
        ip: std::net::IpAddr,
    ) -> Option<Self> {
        let mut m = by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(Share {
            by_source: by_source.clone(),
            ip,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut m = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// One address holding its share of idle connections gets the next closed at accept;
    /// once it lets one go, a scrape is served again.
    #[tokio::test]
    async fn an_address_holds_at_most_its_share() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = std::future::pending::<()>();
        tokio::spawn(serve(l, || async { "x 1\n# EOF\n".to_string() }, stop));
        // Positive control: a scrape is served.
        assert!(scrape(addr).await.unwrap().contains("x 1"));
        let mut idle = vec![];
        for _ in 0..MAX_PER_SOURCE {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // The idle ones are taken (the server has them) before the next is refused: a scrape
        // gets nothing once all of them are accepted.
        let mut refused = false;
        for _ in 0..200 {
            if scrape(addr).await.map_or(true, |a| a.is_empty()) {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(refused, "a connection past the share was served");
        idle.pop();
        let mut served = false;
        for _ in 0..200 {
            if scrape(addr).await.is_ok_and(|a| a.contains("x 1")) {
                served = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(served, "no scrape served after one connection went");
    }

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
