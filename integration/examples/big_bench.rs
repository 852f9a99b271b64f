//! A platform the size of the largest foundations (run by bench/big.sh, as root): a real
//! three-cell platform (control on SQLite, agents, c2c-cni, nftables) holding APPS apps and
//! POLICIES policies, CELL of them with appb (on cell2) as their source or destination. It
//! reports how long control took to take them, cell2's apply of its whole ruleset (and the
//! agent's memory and the size of its ruleset), policy add -> enforced on cell2 with that set
//! loaded (p50/p99 over ROUNDS), an agent restart until it enforces again, and control's cold
//! start on that database.
//!
//!   big_bench [ROUNDS]        (APPS=20000 POLICIES=100000 CELL=10000 by default;
//!                              PERF=DIR records control and cell2's agent during the rounds)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use c2c_integration::benchkit::{add_remove_rounds, pct, until};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `work` with an admin client, on a runtime inside the underlay (where control listens).
fn admin<T: Send + 'static, F>(p: &Platform, work: impl FnOnce(Client) -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
{
    let state = p.dir.path().join("state");
    let url = p.url.clone();
    spawn_in(&p.underlay.ns.path(), move || {
        let token = std::fs::read_to_string(state.join("control/token")).unwrap();
        let ca = std::fs::read(state.join("ca/ca.pem")).unwrap();
        let c = Client::new(&url, &ca, Auth::Token(token)).unwrap();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(work(c))
    })
    .join()
    .unwrap()
}

/// The first "rules applied" line of agent `cell`'s log with at least `min` policies:
/// (its policies, its elapsed_ms), waiting up to `within`.
fn applied(p: &Platform, cell: usize, min: usize, within: Duration) -> (usize, f64) {
    let t = Instant::now();
    loop {
        let log = p.agents[cell - 1].log();
        let field = |l: &str, k: &str| -> Option<f64> {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
        };
        if let Some(found) = log
            .lines()
            .filter(|l| l.contains("rules applied"))
            .find_map(|l| {
                let n = field(l, "policies=")? as usize;
                (n >= min).then(|| (n, field(l, "elapsed_ms=").unwrap_or(f64::NAN)))
            })
        {
            return found;
        }
        assert!(
            t.elapsed() < within,
            "agent of cell{cell} never applied {min} policies"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rss_mib(pid: u32) -> f64 {
    c2c_integration::benchkit::rss_kib(pid) as f64 / 1024.0
}

/// One policy as CF's API takes it: `src` -> `dst`, TCP `port`.
fn policy(src: &str, dst: &str, port: u32) -> serde_json::Value {
    json!({"source": {"id": src}, "destination": {"id": dst, "protocol": "tcp",
        "ports": {"start": port, "end": port}}})
}

/// The platform: `apps` apps, `policies` policies, `cell` of them from or to `gb` (appb);
/// how long control took to take the apps, and the policies (seconds).
fn populate(p: &Platform, gb: &str, apps: usize, policies: usize, cell: usize) -> (f64, f64) {
    let t = Instant::now();
    let guids: Vec<String> = admin(p, move |c| async move {
        let mut guids = vec![];
        for chunk in (0..apps).collect::<Vec<_>>().chunks(32) {
            let made = futures::future::join_all(chunk.iter().map(|i| {
                let (c, name) = (c.clone(), format!("app{i}"));
                async move { c.create_app(&name).await.unwrap().guid.to_string() }
            }))
            .await;
            guids.extend(made);
        }
        guids
    });
    let apps_s = t.elapsed().as_secs_f64();
    let mut all = vec![];
    for i in 0..cell {
        let other = &guids[i % apps];
        let port = 1 + (i / apps) as u32;
        all.push(if i % 2 == 0 {
            policy(other, gb, port + 10_000)
        } else {
            policy(gb, other, port + 10_000)
        });
    }
    for i in 0..policies.saturating_sub(cell) {
        let port = 1 + (i / apps) as u32;
        all.push(policy(&guids[i % apps], &guids[(i * 7 + 1) % apps], port));
    }
    let t = Instant::now();
    admin(p, move |c| async move {
        for chunk in all.chunks(1000) {
            c.call(
                hyper::Method::POST,
                "/networking/v1/external/policies",
                Some(&json!({ "policies": chunk })),
            )
            .await
            .unwrap();
        }
    });
    let policies_s = t.elapsed().as_secs_f64();
    (apps_s, policies_s)
}

/// `perf record -g` of `pid` into DIR/NAME.data, until interrupted.
fn perf_record(dir: &str, name: &str, pid: u32) -> std::process::Child {
    std::process::Command::new("perf")
        .args(["record", "-F", "999", "--call-graph"])
        // PERF_CALLGRAPH=dwarf for call chains through code built without frame pointers.
        .arg(std::env::var("PERF_CALLGRAPH").unwrap_or_else(|_| "fp".into()))
        .arg("-o")
        .arg(format!("{dir}/{name}.data"))
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf")
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let (apps, policies, cell) = (
        env("APPS", 20_000),
        env("POLICIES", 100_000),
        env("CELL", 10_000),
    );
    clean_up_on_panic();
    let mut p = Platform::start(3);
    for app in ["appa", "appb"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    serve(&b, SocketAddr::new(ip_b.into(), 7000), "b");
    let (ga, gb) = (p.app_guid("appa"), p.app_guid("appb"));

    let (apps_s, policies_s) = populate(&p, &gb, apps, policies, cell);
    let (cell_policies, _) = applied(&p, 2, cell, Duration::from_secs(120));
    let rss = rss_mib(p.agents[1].child.id());
    let ruleset = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.cells[1].ns.name,
            "nft",
            "list",
            "table",
            "ip",
            "c2c",
        ])
        .output()
        .unwrap()
        .stdout;
    println!(
        "{apps} apps created in {apps_s:.1} s; {policies} policies posted (1,000 a request) in {policies_s:.1} s"
    );
    println!(
        "cell2's agent: {cell_policies} policies in its view; RSS {rss:.1} MiB; its nft table {:.1} MiB as text ({} lines)",
        ruleset.len() as f64 / 1048576.0,
        ruleset.iter().filter(|b| **b == b'\n').count()
    );

    // Add -> enforced with that set loaded: appa -> appb:7000.
    let one = json!({"policies": [policy(&ga, &gb, 7000)]});
    // PERF=DIR: control and cell2's agent recorded (perf record -g) while the rounds run.
    let perf = std::env::var("PERF").ok().map(|dir| {
        let pids = [
            ("control", p.control_pid()),
            ("agent", p.agents[1].child.id()),
        ];
        pids.map(|(name, pid)| perf_record(&dir, name, pid))
    });
    let (mut add, mut del) =
        add_remove_rounds(&p, &a, SocketAddr::new(ip_b.into(), 7000), &one, rounds);
    for mut rec in perf.into_iter().flatten() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = rec.wait();
    }
    println!(
        "policy add -> enforced on cell2: p50 {:.1} ms p99 {:.1} ms; remove: p50 {:.1} ms p99 {:.1} ms ({rounds} rounds)",
        pct(&mut add, 0.5),
        pct(&mut add, 0.99),
        pct(&mut del, 0.5),
        pct(&mut del, 0.99)
    );

    // An agent restart: from its start to its first apply of the whole set (the rules stay in
    // the kernel meanwhile; this is how long until it acts on changes again).
    p.agents[1].kill9();
    let t = Instant::now();
    p.start_agent(2);
    let (n, cycle_ms) = applied(&p, 2, cell, Duration::from_secs(60));
    println!(
        "agent restart on cell2: enforcing its {n} policies {:.2} s after it started (its apply cycle {cycle_ms:.0} ms); RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        rss_mib(p.agents[1].child.id())
    );
    until(&a, SocketAddr::new(ip_b.into(), 7000), false);

    // Control's cold start on that database: from start to its first answer.
    let t = Instant::now();
    p.restart_control();
    let listening = t.elapsed().as_secs_f64();
    let n: usize = admin(&p, |c| async move { c.apps().await.unwrap().len() });
    println!(
        "control cold start: listening after {listening:.2} s, first answer ({n} apps listed) after {:.2} s; RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        rss_mib(p.control_pid())
    );
}
