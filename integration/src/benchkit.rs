//! What the benchmarks (`examples/`, run by `bench/*.sh` as root) share: API calls from the
//! underlay namespace, percentiles, waiting for enforcement, paired connect timing, and a
//! process's resident memory.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use hyper::Method;
use serde_json::Value;

use crate::testbed::Platform;
use crate::topo::{spawn_in, Netns};

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 if it is gone: the one reader the
/// benches and the chaos soak share.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The Prometheus text a metrics listener at `addr` (HOST:PORT, reachable from here) serves.
pub fn scrape(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// Runs an API call from inside the underlay namespace (where control listens).
pub fn api(p: &Platform, method: Method, path: &str, body: Option<Value>) -> Value {
    let state = p.dir.path().join("state");
    let (url, path) = (p.url.clone(), path.to_string());
    spawn_in(&p.underlay.ns.path(), move || {
        let token = std::fs::read_to_string(state.join("control/token")).unwrap();
        let ca = std::fs::read(state.join("ca/ca.pem")).unwrap();
        let c = Client::new(&url, &ca, Auth::Token(token)).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(c.call(method, &path, body.as_ref()))
            .unwrap()
    })
    .join()
    .unwrap()
}

/// The `p` quantile (0-1) of `v` (sorted in place).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Polls a connect every 0.5 ms until `want` (true: accepted) holds; returns the wait.
pub fn until(ns: &Netns, to: SocketAddr, want: bool) -> Duration {
    until_traced(ns, to, want).wait
}

/// What [`until_traced`] saw: the whole wait, how many connects it made, and the longest one
/// (a connect that waited out its 200 ms timeout had its SYN dropped, not refused).
pub struct Polled {
    pub wait: Duration,
    pub attempts: u32,
    pub longest: Duration,
}

/// [`until`], also saying how its connects went.
pub fn until_traced(ns: &Netns, to: SocketAddr, want: bool) -> Polled {
    spawn_in(&ns.path(), move || {
        let t = Instant::now();
        let (mut attempts, mut longest) = (0, Duration::ZERO);
        loop {
            let a = Instant::now();
            let ok = TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok();
            attempts += 1;
            longest = longest.max(a.elapsed());
            if ok == want {
                return Polled {
                    wait: t.elapsed(),
                    attempts,
                    longest,
                };
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "not enforced within 10 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    })
    .join()
    .unwrap()
}

/// Policy add -> enforced and remove -> enforced, `rounds` times: POSTs `policies` (CF's body)
/// and waits until `ns` connects to `to`, then deletes them and waits until it does not.
/// Returns the milliseconds of each (adds, removes).
pub fn add_remove_rounds(
    p: &Platform,
    ns: &Netns,
    to: SocketAddr,
    policies: &Value,
    rounds: usize,
) -> (Vec<f64>, Vec<f64>) {
    let post = "/networking/v1/external/policies";
    let (mut add_ms, mut del_ms) = (vec![], vec![]);
    // A round far above the others says how its connects went (the tail's cause: a slow
    // answer, a slow apply, or a SYN dropped and waited out).
    let slow = |what: &str, i: usize, api_ms: f64, total: f64, polled: &Polled| {
        if total > 150.0 {
            eprintln!(
                "  slow {what} in round {i}: {total:.0} ms, the API call {api_ms:.0} ms, then {} connects, the longest {:.0} ms",
                polled.attempts,
                polled.longest.as_secs_f64() * 1e3
            );
        }
    };
    for i in 0..rounds {
        let t = Instant::now();
        api(p, Method::POST, post, Some(policies.clone()));
        let api_ms = t.elapsed().as_secs_f64() * 1e3;
        let polled = until_traced(ns, to, true);
        add_ms.push(t.elapsed().as_secs_f64() * 1e3);
        slow("add", i, api_ms, *add_ms.last().unwrap(), &polled);
        let t = Instant::now();
        api(
            p,
            Method::POST,
            &format!("{post}/delete"),
            Some(policies.clone()),
        );
        let api_ms = t.elapsed().as_secs_f64() * 1e3;
        let polled = until_traced(ns, to, false);
        del_ms.push(t.elapsed().as_secs_f64() * 1e3);
        slow("remove", i, api_ms, *del_ms.last().unwrap(), &polled);
    }
    (add_ms, del_ms)
}

/// One connect to `to` (from the calling thread's namespace), in µs.
pub fn connect_us(to: SocketAddr) -> f64 {
    let t = Instant::now();
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
    let us = t.elapsed().as_secs_f64() * 1e6;
    drop(s);
    us
}

/// Connect latencies (µs) from inside `ns`, alternating between `x` and `y` (`n` each, the
/// order flipping every pair), in steady state: it first lets the platform settle for a second
/// and warms up with 100 unmeasured connects to each.
pub fn paired_connects(ns: &Netns, x: SocketAddr, y: SocketAddr, n: usize) -> (Vec<f64>, Vec<f64>) {
    std::thread::sleep(Duration::from_secs(1));
    spawn_in(&ns.path(), move || {
        for _ in 0..100 {
            connect_us(x);
            connect_us(y);
        }
        let (mut xs, mut ys) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            if i % 2 == 0 {
                xs.push(connect_us(x));
                ys.push(connect_us(y));
            } else {
                ys.push(connect_us(y));
                xs.push(connect_us(x));
            }
        }
        (xs, ys)
    })
    .join()
    .unwrap()
}

/// Queries the cell DNS (169.254.0.1:53) from inside `ns`, one at a time every millisecond,
/// until `stop`; returns each answer's latency in µs (a query unanswered within 1 s counts as
/// 1 s). The name is one the cell answers from memory (NXDOMAIN in apps.internal).
pub fn dns_probe(
    ns: &Netns,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<f64>> {
    spawn_in(&ns.path(), move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        sock.connect("169.254.0.1:53").unwrap();
        let mut lat = vec![];
        let mut buf = [0u8; 512];
        let mut id: u16 = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            id = id.wrapping_add(1);
            // Header (id, RD, one question), then probe.apps.internal A IN.
            let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in ["probe", "apps", "internal"] {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            let t = Instant::now();
            sock.send(&q).unwrap();
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 2 && buf[..2] == q[..2] => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            std::thread::sleep(Duration::from_millis(1));
        }
        lat
    })
}
