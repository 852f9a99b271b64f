//! Routes benchmark on the local platform (run by bench/routes.sh, as root, release build):
//! map-route -> the new name served by the sidecar (p50/p99), unmap-route -> name gone, and the
//! cell DNS's queries/s from inside a container (one query in flight, and 32 in flight).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_integration::cli::ok as c2c;

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether a TLS handshake for `name` against `to` succeeds from inside `ns`.
fn served(ns: &str, to: SocketAddr, name: &str, cfg: Arc<rustls::ClientConfig>) -> bool {
    let tcp = in_ns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2))
    });
    let Ok(mut tcp) = tcp else { return false };
    let Ok(mut conn) = rustls::ClientConnection::new(cfg, name.to_string().try_into().unwrap())
    else {
        return false;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // Release builds abort on panic (no unwinding, no drop guards): take the platform down
    // from the panic hook, after the panic is reported.
    let report = std::panic::take_hook();
    let owned = dir.to_path_buf();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let _ = c2c_integration::cli::c2c(&owned, &["down"]);
    }));
    c2c(dir, &["up", "--cells", "2"]);
    run(dir, rounds);
    c2c(dir, &["down"]);
}

/// Cell DNS answers a second from inside namespace `ns`, with `inflight` queries outstanding,
/// for 3 s.
fn dns_qps(ns: &str, inflight: usize) -> f64 {
    let q = dns_query(0x1234, "appb.apps.internal");
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("169.254.0.1:53").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 512];
        let t = Instant::now();
        let mut answered = 0u64;
        for _ in 0..inflight {
            s.send(&q).unwrap();
        }
        while t.elapsed() < Duration::from_secs(3) {
            if s.recv(&mut buf).is_ok() {
                answered += 1;
                s.send(&q).unwrap();
            } else {
                s.send(&q).unwrap();
            }
        }
        answered as f64 / t.elapsed().as_secs_f64()
    })
}

fn run(dir: &Path, rounds: usize) {
    c2c(dir, &["push", "appA", "--cell", "cell1"]);
    c2c(dir, &["push", "appB", "--no-route", "--cell", "cell2"]);
    c2c(
        dir,
        &[
            "add-network-policy",
            "appA",
            "appB",
            "--protocol",
            "tcp",
            "--port",
            "61443",
        ],
    );
    let inst = |app: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(dir.join(format!("instances/{app}/0/instance.json"))).unwrap(),
        )
        .unwrap()
    };
    let a_ns = inst("appA")["netns"].as_str().unwrap().to_string();
    let to_b: SocketAddr = format!("{}:61443", inst("appB")["ip"].as_str().unwrap())
        .parse()
        .unwrap();
    let ca = std::fs::read(dir.join("ca/ca.pem")).unwrap();
    let tls = c2c_integration::cli::tls_client(&ca);
    // Start from a quiet cell: the policy above enforced (its agent cycle done).
    let t = Instant::now();
    while in_ns(&a_ns, move || {
        TcpStream::connect_timeout(&to_b, Duration::from_millis(200)).is_err()
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "policy for 61443 never enforced"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let client = c2c_platform::client(dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let route = |host: &str, unmap: bool| {
        let r = c2c_api::types::RouteRequest {
            app: "appB".into(),
            domain: "apps.internal".into(),
            hostname: host.into(),
        };
        rt.block_on(client.route(&r, unmap)).unwrap();
    };

    // Warm the bench's own client (its first TLS connection costs ~100 ms in this process),
    // so round 0 measures the platform, not the benchmark starting up.
    rt.block_on(client.routes()).unwrap();
    served(&a_ns, to_b, "appb-warmup.apps.internal", tls.clone());
    let (mut map_ms, mut unmap_ms) = (vec![], vec![]);
    for k in 0..rounds {
        let host = format!("appb-v{k}");
        let name = format!("{host}.apps.internal");
        let t = Instant::now();
        route(&host, false);
        while !served(&a_ns, to_b, &name, tls.clone()) {
            assert!(t.elapsed() < Duration::from_secs(10), "{name} never served");
            std::thread::sleep(Duration::from_millis(1));
        }
        map_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        route(&host, true);
        while served(&a_ns, to_b, &name, tls.clone()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name} never removed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        unmap_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // DNS from inside appA: the cell's resolver at 169.254.0.1:53.
    c2c(
        dir,
        &["map-route", "appB", "apps.internal", "--hostname", "appb"],
    );
    let q1 = dns_qps(&a_ns, 1);
    let q32 = dns_qps(&a_ns, 32);

    if std::env::var_os("C2C_BENCH_VERBOSE").is_some() {
        eprintln!("map ms: {map_ms:.0?}");
    }
    let (m50, m99, u50, u99) = (
        pct(&mut map_ms, 0.5),
        pct(&mut map_ms, 0.99),
        pct(&mut unmap_ms, 0.5),
        pct(&mut unmap_ms, 0.99),
    );
    println!("map-route -> new name served by the sidecar ({rounds} rounds): p50 {m50:.1} ms, p99 {m99:.1} ms (target p99 < 100 ms)");
    println!("unmap-route -> name gone from the served cert ({rounds} rounds): p50 {u50:.1} ms, p99 {u99:.1} ms (target p99 < 100 ms)");
    println!("cell DNS from a container: {q1:.0} queries/s with 1 in flight, {q32:.0} queries/s with 32 in flight (ratio {:.1}x)", q32 / q1);
}

/// A DNS query packet for an A record (built by hand: RFC 1035 header + question).
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut p = vec![];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}
