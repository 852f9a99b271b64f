//! Policy benchmark on a real three-cell platform (run by bench/policy.sh, as root):
//! policy add -> enforced on the destination cell (p50/p99), the agent's apply time with 10,000
//! policies, and TCP connect latency across cells with 10,000 policies installed against the
//! same with 10 (the reference), measured as pairs: appa on cell1 connects alternately to appb
//! on cell2 and appd on cell3, one of which holds the 10,000 extra policies; which one swaps
//! every round, so the machine's drift and any difference between the two paths cancel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use c2c_integration::benchkit::{add_remove_rounds, api, dns_probe, paired_connects, pct, until};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use hyper::Method;
use serde_json::{json, Value};

fn policies(src: &[String], dst: &str, ports: std::ops::RangeInclusive<u16>) -> Value {
    let mut v = vec![];
    for s in src {
        for port in ports.clone() {
            v.push(json!({"source": {"id": s}, "destination": {"id": dst, "protocol": "tcp", "ports": {"start": port, "end": port}}}));
        }
    }
    json!({ "policies": v })
}

/// Waits for agent `cell` (1-based) to log an apply with `n` policies after `log_before`
/// bytes of its log; (wall since `t`, cycle ms).
fn applied(p: &Platform, cell: usize, log_before: usize, n: usize, t: Instant) -> (Duration, f64) {
    loop {
        let log = p.agents[cell - 1].log();
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
            "agent of cell{cell} never applied {n} policies"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The latency rounds' figures.
#[derive(Default)]
struct Rounds {
    ratios50: Vec<f64>,
    ratios99: Vec<f64>,
    walls: Vec<f64>,
    cycles: Vec<f64>,
    ref_us: Vec<f64>,
    big_us: Vec<f64>,
    dns_during: Vec<f64>,
}

/// The platform as the bench set it up: appa on cell1, appb on cell2 and appd on cell3.
struct Setup {
    p: Platform,
    a: Netns,
    b: Netns,
    d: Netns,
    gb: String,
    gd: String,
    to_b: SocketAddr,
    to_d: SocketAddr,
}

/// Connect latency with 10,010 policies against 10, paired (see the module doc): each round
/// the 10,000 go to one destination, connects alternate between both, then they go.
fn ten_thousand_rounds(st: &Setup, rounds_latency: usize, connects_n: usize) -> Rounds {
    let Setup {
        p,
        a,
        b,
        d,

        gb,
        gd,
        to_b,
        to_d,
    } = st;
    let (to_b, to_d) = (*to_b, *to_d);
    let post = "/networking/v1/external/policies";
    let mut sources = vec![];
    for i in 0..100 {
        let name = format!("src{i}");
        p.c2c(&["create-app", &name]);
        sources.push(p.app_guid(&name));
    }
    let mut r = Rounds::default();
    for round in 0..rounds_latency {
        // Rounds alternate which side holds the 10,000: appd, appb, appd, appb.
        let (cell, g, big_to, ref_to) = if round % 2 == 0 {
            (3, gd, to_d, to_b)
        } else {
            (2, gb, to_b, to_d)
        };
        let big = policies(&sources, g, 10000..=10099);
        let before = p.agents[cell - 1].log().len();
        // The cell DNS, asked from a container on the applying cell while it applies.
        let dest = if cell == 3 { d } else { b };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = dns_probe(dest, stop.clone());
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        api(p, Method::POST, post, Some(big.clone()));
        let (wall, cycle) = applied(p, cell, before, 10010, t);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r.dns_during.extend(probe.join().unwrap());
        r.walls.push(wall.as_secs_f64() * 1e3);
        r.cycles.push(cycle);
        let (mut bg, mut rf) = paired_connects(a, big_to, ref_to, connects_n);
        r.ratios50.push(pct(&mut bg, 0.5) / pct(&mut rf, 0.5));
        r.ratios99.push(pct(&mut bg, 0.99) / pct(&mut rf, 0.99));
        r.ref_us.extend(rf);
        r.big_us.extend(bg);
        let before = p.agents[cell - 1].log().len();
        api(p, Method::POST, &format!("{post}/delete"), Some(big));
        applied(p, cell, before, 10, Instant::now());
    }
    r
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
    // Release builds abort on panic, skipping drop guards: clean up from the panic hook.
    clean_up_on_panic();
    // REPLICAS=2: two control replicas on PostgreSQL; the destination cell (cell2) watches
    // replica B while the policies are written through A, so add -> enforced crosses replicas.
    let p = if std::env::var("REPLICAS").is_ok_and(|r| r == "2") {
        println!("two control replicas on PostgreSQL; writes through A, cell2 watches B");
        Platform::start_replicated(3, "300s")
    } else {
        Platform::start(3)
    };
    for app in ["appa", "appb", "appd"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    let (d, ip_d) = p.container(3, "appd", 0);
    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    serve(&b, SocketAddr::new(ip_b.into(), 7000), "b");
    serve(&d, SocketAddr::new(ip_d.into(), 8080), "d");
    let (ga, gb, gd) = (p.app_guid("appa"), p.app_guid("appb"), p.app_guid("appd"));
    let post = "/networking/v1/external/policies";

    // 10 policies each into appb and appd: appa -> 8080 and 9 others.
    for g in [&gb, &gd] {
        api(
            &p,
            Method::POST,
            post,
            Some(policies(std::slice::from_ref(&ga), g, 8080..=8080)),
        );
        api(
            &p,
            Method::POST,
            post,
            Some(policies(std::slice::from_ref(&ga), g, 9001..=9009)),
        );
    }
    let to_b = SocketAddr::new(ip_b.into(), 8080);
    let to_d = SocketAddr::new(ip_d.into(), 8080);
    until(&a, to_b, true);
    until(&a, to_d, true);

    // 1. policy add -> enforced on the destination cell.
    let to_7000 = SocketAddr::new(ip_b.into(), 7000);
    let one = policies(std::slice::from_ref(&ga), &gb, 7000..=7000);
    let (mut add_ms, mut del_ms) = add_remove_rounds(&p, &a, to_7000, &one, rounds);

    // 2.-4. Connect latency with 10,010 policies against 10, paired (see the module doc): each
    // round the 10,000 go to one destination, connects alternate between both, then they go.
    let rounds_latency = 4;
    let st = Setup {
        p,
        a,
        b,
        d,
        gb,
        gd,
        to_b,
        to_d,
    };
    let Rounds {
        mut ratios50,
        mut ratios99,
        mut walls,
        mut cycles,
        mut ref_us,
        mut big_us,
        mut dns_during,
    } = ten_thousand_rounds(&st, rounds_latency, connects_n);
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
    println!("10,000 policies posted -> applied on the cell (median of {rounds_latency}): {:.0} ms wall, agent cycle {apply_ms:.0} ms (target < 1 s)", wall_10k.as_secs_f64() * 1e3);
    let dns_n = dns_during.len();
    let (dns50, dns99, dns_max) = (
        pct(&mut dns_during, 0.5),
        pct(&mut dns_during, 0.99),
        pct(&mut dns_during, 1.0),
    );
    println!("cell DNS from a container of the applying cell, while 10,000 policies are posted and applied ({dns_n} queries, one every ms): p50 {dns50:.0} us, p99 {dns99:.0} us, max {:.2} ms (target: never over 5 ms)", dns_max / 1e3);
    println!("connect latency, 10 policies (reference): p50 {r50:.0} us, p99 {r99:.0} us ({connects_n} connects x {rounds_latency} rounds)");
    println!("connect latency, 10,010 policies:         p50 {b50:.0} us, p99 {b99:.0} us (interleaved with the reference)");
    println!("ratio 10,010 / 10, median of {rounds_latency} paired rounds (the 10,000 on cell3, cell2, cell3, cell2): p50 {ratio50}, p99 {ratio99} (target <= 1.1x)");
}
