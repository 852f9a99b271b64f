//! Policy benchmark on a real two-cell platform (run by bench/policy.sh, as root):
//! policy add -> enforced on the destination cell (p50/p99), the agent's apply time with 10,000
//! policies, and TCP connect latency across cells with 10,000 policies installed against the
//! same with 10 (the reference, measured in the same run).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use hyper::Method;
use serde_json::{json, Value};

/// Runs an API call from inside the underlay namespace (where control listens).
fn api(p: &Platform, method: Method, path: &str, body: Option<Value>) -> Value {
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

fn policies(src: &[String], dst: &str, ports: std::ops::RangeInclusive<u16>) -> Value {
    let mut v = vec![];
    for s in src {
        for port in ports.clone() {
            v.push(json!({"source": {"id": s}, "destination": {"id": dst, "protocol": "tcp", "ports": {"start": port, "end": port}}}));
        }
    }
    json!({ "policies": v })
}

/// Connect latencies (µs) of `n` TCP connects from inside `ns` to `to`.
fn connects(ns: &Netns, to: SocketAddr, n: usize) -> Vec<f64> {
    spawn_in(&ns.path(), move || {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
            out.push(t.elapsed().as_secs_f64() * 1e6);
            drop(s);
        }
        out
    })
    .join()
    .unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Polls a connect every 0.5 ms until `want` (true: accepted) holds; returns the wait.
fn until(ns: &Netns, to: SocketAddr, want: bool) -> Duration {
    spawn_in(&ns.path(), move || {
        let t = Instant::now();
        loop {
            let ok = TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok();
            if ok == want {
                return t.elapsed();
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

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let connects_n: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let p = Platform::start(2);
    for app in ["appa", "appb"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    serve(&b, SocketAddr::new(ip_b.into(), 7000), "b");
    let (ga, gb) = (p.app_guid("appa"), p.app_guid("appb"));
    let post = "/networking/v1/external/policies";

    // 10 policies: appa -> appb 8080 and 9 others into appb.
    api(
        &p,
        Method::POST,
        post,
        Some(policies(std::slice::from_ref(&ga), &gb, 8080..=8080)),
    );
    api(
        &p,
        Method::POST,
        post,
        Some(policies(std::slice::from_ref(&ga), &gb, 9001..=9009)),
    );
    let to_b = SocketAddr::new(ip_b.into(), 8080);
    until(&a, to_b, true);

    // 1. policy add -> enforced on the destination cell.
    let to_7000 = SocketAddr::new(ip_b.into(), 7000);
    let one = policies(std::slice::from_ref(&ga), &gb, 7000..=7000);
    let mut add_ms = vec![];
    let mut del_ms = vec![];
    for _ in 0..rounds {
        let t = Instant::now();
        api(&p, Method::POST, post, Some(one.clone()));
        until(&a, to_7000, true);
        add_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        api(
            &p,
            Method::POST,
            &format!("{post}/delete"),
            Some(one.clone()),
        );
        until(&a, to_7000, false);
        del_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // 2.-4. Connect latency with 10 policies (reference) and with 10,010, alternating: the
    // 10,000 are posted, measured, deleted, measured again, 3 times; ratio per round.
    let mut sources = vec![];
    for i in 0..100 {
        let name = format!("src{i}");
        p.c2c(&["create-app", &name]);
        sources.push(p.app_guid(&name));
    }
    let big = policies(&sources, &gb, 10000..=10099);
    // Waits for the agent of cell 2 to log an apply with `n` policies; returns (wall, cycle ms).
    let applied = |log_before: usize, n: usize, t: Instant| -> (Duration, f64) {
        loop {
            let log = p.agents[1].log();
            if let Some(line) = log[log_before..]
                .lines()
                .find(|l| l.contains("rules applied") && l.contains(&format!("policies={n} ")))
            {
                let ms = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("elapsed_ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                return (t.elapsed(), ms);
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "agent never applied {n} policies"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let (mut ratios50, mut ratios99, mut walls, mut cycles) = (vec![], vec![], vec![], vec![]);
    let (mut ref_us, mut big_us) = (vec![], vec![]);
    for _ in 0..3 {
        let mut r = connects(&a, to_b, connects_n);
        let before = p.agents[1].log().len();
        let t = Instant::now();
        api(&p, Method::POST, post, Some(big.clone()));
        let (wall, cycle) = applied(before, 10010, t);
        walls.push(wall.as_secs_f64() * 1e3);
        cycles.push(cycle);
        let mut b = connects(&a, to_b, connects_n);
        ratios50.push(pct(&mut b, 0.5) / pct(&mut r, 0.5));
        ratios99.push(pct(&mut b, 0.99) / pct(&mut r, 0.99));
        ref_us.extend(r);
        big_us.extend(b);
        let before = p.agents[1].log().len();
        api(
            &p,
            Method::POST,
            &format!("{post}/delete"),
            Some(big.clone()),
        );
        applied(before, 10, Instant::now());
    }
    let wall_10k = Duration::from_secs_f64(pct(&mut walls, 0.5) / 1e3);
    let apply_ms = pct(&mut cycles, 0.5);
    let spread = |v: &mut Vec<f64>| {
        format!(
            "{:.2}x (min {:.2}, max {:.2})",
            pct(v, 0.5),
            pct(v, 0.0),
            pct(v, 1.0)
        )
    };
    let (ratio50, ratio99) = (spread(&mut ratios50), spread(&mut ratios99));

    let (a50, a99, d50, d99) = (
        pct(&mut add_ms, 0.5),
        pct(&mut add_ms, 0.99),
        pct(&mut del_ms, 0.5),
        pct(&mut del_ms, 0.99),
    );
    let (r50, r99, b50, b99) = (
        pct(&mut ref_us, 0.5),
        pct(&mut ref_us, 0.99),
        pct(&mut big_us, 0.5),
        pct(&mut big_us, 0.99),
    );
    println!("policy add -> enforced across cells ({rounds} rounds): p50 {a50:.1} ms, p99 {a99:.1} ms   (target p99 < 100 ms; Cloud Foundry polls every 5 s)");
    println!(
        "policy delete -> enforced ({rounds} rounds):          p50 {d50:.1} ms, p99 {d99:.1} ms"
    );
    println!("10,000 policies posted -> applied on the cell (median of 3): {:.0} ms wall, agent cycle {apply_ms:.0} ms (target < 1 s)", wall_10k.as_secs_f64() * 1e3);
    println!("connect latency, 10 policies (reference): p50 {r50:.0} us, p99 {r99:.0} us ({connects_n} connects)");
    println!("connect latency, 10,010 policies:         p50 {b50:.0} us, p99 {b99:.0} us");
    println!("ratio 10,010 / 10, median of 3 alternating rounds: p50 {ratio50}, p99 {ratio99} (target <= 1.1x)");
}
