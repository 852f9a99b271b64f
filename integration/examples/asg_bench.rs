//! The external networker's figures on a real one-cell platform (run by bench/asg.sh, as root),
//! with a host on the underlay (a namespace at 192.0.2.200):
//!   1. security group change -> enforced on a running container (bind, then unbind), p50/p99;
//!   2. TCP connect latency to the host from a container whose space has 1 rule bound against
//!      one whose space has 1,000, interleaved in blocks (the reference is the 1-rule one);
//!   3. egress throughput through NAT from a container against the same transfer from the cell
//!      itself (the reference), alternating;
//!   4. traffic log lines a second the agent writes when the kernel hands it more than it can
//!      take (an unlimited log rule the bench adds in its own table), and its CPU per line.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use c2c_integration::benchkit::{api, connect_us, pct, until};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use hyper::Method;
use serde_json::json;

const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A sink on the host that reads everything each connection sends.
fn sink(ns: &Netns, addr: SocketAddr) {
    let (tx, rx) = mpsc::channel();
    spawn_in(&ns.path(), move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    rx.recv().unwrap();
}

/// MB/s of sending `mb` MiB to `to` from inside `ns`.
fn send_mbps(ns: &Netns, to: SocketAddr, mb: usize) -> f64 {
    spawn_in(&ns.path(), move || {
        let mut s = TcpStream::connect(to).expect("connect to the sink");
        let buf = vec![7u8; 1 << 20];
        let t = Instant::now();
        for _ in 0..mb {
            s.write_all(&buf).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = s.read(&mut [0u8; 1]);
        mb as f64 / t.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

fn group(p: &Platform, name: &str, rules: serde_json::Value) {
    api(
        p,
        Method::POST,
        "/v1/security_groups",
        Some(json!({"name": name, "rules": rules})),
    );
}

fn bind(p: &Platform, name: &str, space: &str, on: bool) {
    let path = if on {
        format!("/v1/security_groups/{name}/bindings")
    } else {
        format!("/v1/security_groups/{name}/bindings/delete")
    };
    api(
        p,
        Method::POST,
        &path,
        Some(json!({"lifecycle": "running", "org": "o", "space": space})),
    );
}

/// The host (a web server on 8000 and 9000, a sink on 7000), org o, spaces "one" and "many"
/// with an app each and an instance on cell1: "one" holds a group of 1 rule, "many" one of
/// 1,000. Returns the two containers.
fn setup(p: &Platform) -> (Netns, Netns) {
    let host = p.underlay.cell(200);
    serve(&host.ns, SocketAddr::new(HOST.into(), 8000), "h");
    serve(&host.ns, SocketAddr::new(HOST.into(), 9000), "h");
    sink(&host.ns, SocketAddr::new(HOST.into(), 7000));
    p.c2c(&["create-org", "o"]);
    for s in ["one", "many"] {
        p.c2c(&["create-space", s, "-o", "o"]);
        p.c2c(&["create-app", s, "-o", "o", "-s", s]);
    }
    let (one, _) = p.container(1, "one", 0);
    let (many, _) = p.container(1, "many", 0);

    // The host's 8000 and the sink for both; 999 more rules (other /32s and ports) for "many".
    let allow = json!({"protocol": "tcp", "destination": "192.0.2.200", "ports": "8000,7000"});
    group(p, "g1", json!([allow.clone()]));
    let mut big = vec![allow];
    for i in 0..999u32 {
        big.push(json!({
            "protocol": if i % 2 == 0 { "tcp" } else { "udp" },
            "destination": format!("10.{}.{}.{}", 1 + i / 250 / 250, (i / 250) % 250, 1 + i % 250),
            "ports": format!("{}", 1000 + i),
        }));
    }
    group(p, "g1000", json!(big));
    bind(p, "g1", "one", true);
    bind(p, "g1000", "many", true);
    let to8000 = SocketAddr::new(HOST.into(), 8000);
    until(&one, to8000, true);
    until(&many, to8000, true);
    (one, many)
}

/// Change -> enforced, ROUNDS times: a group opening 9000 bound to "one", then unbound.
fn change_to_enforced(p: &Platform, one: &Netns, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    // 1. Change -> enforced: bind a group opening 9000 to "one", then unbind it.
    group(
        p,
        "toggle",
        json!([{"protocol": "tcp", "destination": "192.0.2.200", "ports": "9000"}]),
    );
    let to9000 = SocketAddr::new(HOST.into(), 9000);
    let (mut on_ms, mut off_ms) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        bind(p, "toggle", "one", true);
        until(one, to9000, true);
        on_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        bind(p, "toggle", "one", false);
        until(one, to9000, false);
        off_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (on_ms, off_ms)
}

/// Connect latency, 1 rule (reference) vs 1,000 (microseconds each, and the ratios of p50 and
/// p99 per round).
fn connect_latency(
    p: &Platform,
    one: &Netns,
    many: &Netns,
    connects: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let to8000 = SocketAddr::new(HOST.into(), 8000);
    // 2. Connect latency, 1 rule (reference) vs 1,000, interleaved in blocks of 100; then the
    // groups swap spaces and it runs again, so a difference between the two containers
    // themselves cancels out of the ratio.
    let (go_one, go_many) = (mpsc::channel::<usize>(), mpsc::channel::<usize>());
    let (done_tx, done_rx) = mpsc::channel::<Vec<f64>>();
    let worker = |ns: &Netns, rx: mpsc::Receiver<usize>, done: mpsc::Sender<Vec<f64>>| {
        spawn_in(&ns.path(), move || {
            while let Ok(n) = rx.recv() {
                let v: Vec<f64> = (0..n).map(|_| connect_us(to8000)).collect();
                done.send(v).unwrap();
            }
        })
    };
    let w1 = worker(one, go_one.1, done_tx.clone());
    let w2 = worker(many, go_many.1, done_tx);
    let (mut ref_us, mut big_us, mut ratios50, mut ratios99) = (vec![], vec![], vec![], vec![]);
    for swapped in [false, true] {
        if swapped {
            bind(p, "g1000", "many", false);
            bind(p, "g1", "one", false);
            bind(p, "g1000", "one", true);
            bind(p, "g1", "many", true);
        }
        // Settled: both reach the host again under the new bindings.
        until(one, to8000, true);
        until(many, to8000, true);
        std::thread::sleep(Duration::from_secs(1));
        // (sender, holds the 1,000) for each container.
        let cs: [(&mpsc::Sender<usize>, bool); 2] = [(&go_one.0, swapped), (&go_many.0, !swapped)];
        for (tx, _) in cs {
            tx.send(100).unwrap();
            done_rx.recv().unwrap();
        }
        let (mut r, mut b) = (vec![], vec![]);
        for block in 0..connects / 100 {
            let order = if block % 2 == 0 {
                [cs[0], cs[1]]
            } else {
                [cs[1], cs[0]]
            };
            for (tx, is_big) in order {
                tx.send(100).unwrap();
                let v = done_rx.recv().unwrap();
                if is_big {
                    b.extend(v);
                } else {
                    r.extend(v);
                }
            }
        }
        ratios50.push(pct(&mut b, 0.5) / pct(&mut r, 0.5));
        ratios99.push(pct(&mut b, 0.99) / pct(&mut r, 0.99));
        ref_us.extend(r);
        big_us.extend(b);
    }
    drop(go_one.0);
    drop(go_many.0);
    let _ = (w1.join(), w2.join());
    (ref_us, big_us, ratios50, ratios99)
}

/// Egress throughput through NAT (MB/s), against the cell's own (the reference).
fn egress_throughput(p: &Platform, one: &Netns) -> (Vec<f64>, Vec<f64>) {
    // 3. Egress throughput through NAT against the cell's own (the reference), alternating.
    let to_sink = SocketAddr::new(HOST.into(), 7000);
    let (mut nat, mut direct) = (vec![], vec![]);
    send_mbps(one, to_sink, 64);
    for i in 0..6 {
        if i % 2 == 0 {
            nat.push(send_mbps(one, to_sink, 512));
            direct.push(send_mbps(&p.cells[0].ns, to_sink, 512));
        } else {
            direct.push(send_mbps(&p.cells[0].ns, to_sink, 512));
            nat.push(send_mbps(one, to_sink, 512));
        }
    }
    (nat, direct)
}

/// Log lines written in 2 s of a flood; returns lines written, packets sent and the agent's
/// CPU seconds before and after.
fn log_rate(p: &Platform) -> (f64, u64, (f64, f64)) {
    // 4. Log lines a second: the cell itself sends UDP to the host's 9999 as fast as it can
    // for 2 s, every packet logged by a rule of the bench's own table (no rate limit).
    p.cells[0].ns.exec(
        "nft",
        &[
            "add table ip c2c_bench; add chain ip c2c_bench out { type filter hook output priority 0; }; add rule ip c2c_bench out udp dport 9999 log prefix \"c2c-deny\" group 4789",
        ],
    );
    let log = p.dir.path().join("cell1-cni/network.log");
    let lines = |path: &std::path::Path| {
        std::fs::read(path)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    };
    let agent = p.agents[0].child.id();
    let (l0, c0) = (lines(&log), cpu_secs(agent));
    let sent = spawn_in(&p.cells[0].ns.path(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(2) {
            let _ = s.send_to(b"x", SocketAddr::new(HOST.into(), 9999));
            n += 1;
        }
        n
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (l1, c1) = (lines(&log), cpu_secs(agent));
    p.cells[0].ns.exec("nft", &["delete table ip c2c_bench"]);
    let written = (l1 - l0) as f64;
    (written, sent, (c0, c1))
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let connects: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    clean_up_on_panic();
    let p = Platform::start(1);
    let (one, many) = setup(&p);
    let (mut on_ms, mut off_ms) = change_to_enforced(&p, &one, rounds);
    let (mut ref_us, mut big_us, ratios50, ratios99) = connect_latency(&p, &one, &many, connects);
    let (mut nat, mut direct) = egress_throughput(&p, &one);
    let (written, sent, (c0, c1)) = log_rate(&p);

    let (on50, on99, off50, off99) = (
        pct(&mut on_ms, 0.5),
        pct(&mut on_ms, 0.99),
        pct(&mut off_ms, 0.5),
        pct(&mut off_ms, 0.99),
    );
    println!("security group bind -> enforced on a running container ({rounds} rounds):   p50 {on50:.1} ms, p99 {on99:.1} ms (goal p99 < 1 s; CF polls every 60 s)");
    println!("security group unbind -> enforced ({rounds} rounds):                         p50 {off50:.1} ms, p99 {off99:.1} ms");
    let (r50, r99, b50, b99) = (
        pct(&mut ref_us, 0.5),
        pct(&mut ref_us, 0.99),
        pct(&mut big_us, 0.5),
        pct(&mut big_us, 0.99),
    );
    println!("connect to the host, 1 rule bound (reference): p50 {r50:.0} us, p99 {r99:.0} us ({} connects)", ref_us.len());
    println!("connect to the host, 1,000 rules bound:        p50 {b50:.0} us, p99 {b99:.0} us (interleaved)");
    println!(
        "ratio 1,000 / 1 rule, per round (the 1,000 on the second container, then on the first): p50 {:.2}x and {:.2}x, p99 {:.2}x and {:.2}x",
        ratios50[0], ratios50[1], ratios99[0], ratios99[1]
    );
    let (n50, d50) = (pct(&mut nat, 0.5), pct(&mut direct, 0.5));
    println!("egress throughput through NAT from a container: {n50:.0} MB/s; from the cell itself (reference): {d50:.0} MB/s; ratio {:.2}x (medians of 6 x 512 MiB, alternating)", n50 / d50);
    println!(
        "traffic log: {:.0} lines/s written by the agent while the kernel offered {:.0}/s; agent CPU {:.1} us per line",
        written / 2.0,
        sent as f64 / 2.0,
        (c1 - c0) * 1e6 / written.max(1.0)
    );
}
