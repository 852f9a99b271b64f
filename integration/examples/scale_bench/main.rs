//! Watch fan-out at scale (run by bench/scale.sh): N simulated cells, each with its own
//! registered mTLS identity holding a streamed watch as the agent does, against control; one
//! policy change every 0.5 s; for each change, how long until each watcher has it (p50, p99,
//! and until all N have it), control's CPU per change and its RSS per parked watch. Runs three
//! setups in one run: the reference (each watcher builds its own view: `control serve --per-watcher-views`,
//! SQLite, one control), shared views on SQLite, and shared views on PostgreSQL with two
//! replicas (watchers split between them, the changes written through the first).
//!
//! With FAILOVER=1, the replicated setup's watchers are the agent's own watch loop
//! (`c2c_shim::control_link::spawn_watch`: its reconnects, their jitter, the next replica),
//! each given both replicas' URLs, its own first; after the changes the replica half of them
//! watch is killed (-9) and a change is made through the other: how long until each cell of
//! the dead replica has it (back on a stream), how many never get it within 60 s, and the
//! surviving replica's CPU and memory meanwhile. With RESTART=1 (agent watch loops too),
//! every replica (after a failover, the one left) is then killed and started again on the same
//! addresses: how long until every cell has a change made after. Each cell connects from an
//! address of its own (127.1.X.Y); HANDSHAKES=N sets the replicas' `--max-handshakes`. With SUSTAIN=SECS, a change every INTERVAL_MS (100)
//! for that long, on a timer that does not wait for the cells: per change, the time until all
//! cells had it, and the first tenth's against the last tenth's (falling behind shows there).
//!
//!   scale_bench N [CHANGES] [APPS] [POLICIES]

use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use c2c_testkit::pg_cluster::PgCluster;
use tokio::sync::mpsc;

mod controls;
mod failover;

use controls::{from_own_address, start_control, trim_probe, usage_of, Control};

/// What the replicated setup does after its changes (from the environment).
#[derive(Clone, Copy, Default)]
struct Modes {
    /// FAILOVER=1: kill the replica half the cells watch.
    failover: bool,
    /// RESTART=1: kill both replicas and start them again.
    restart: bool,
    /// SUSTAIN=SECS: a change every INTERVAL_MS (100) for that long.
    sustain: Option<(u64, Duration)>,
}

impl Modes {
    fn from_env() -> Modes {
        let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1");
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Modes {
            failover: on("FAILOVER"),
            restart: on("RESTART"),
            sustain: num("SUSTAIN").filter(|s| *s > 0).map(|s| {
                (
                    s,
                    Duration::from_millis(num("INTERVAL_MS").unwrap_or(100).max(1)),
                )
            }),
        }
    }

    /// The cells watch with the agent's own loop (which reconnects as agents do).
    fn agents(&self) -> bool {
        self.failover || self.restart
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    all_ms: f64,
    cpu_ms_per_change: f64,
    rss_kib_per_watch: f64,
}

/// APPS apps and POLICIES policies between them; returns the apps' GUIDs.
async fn populate(admin: &Client, apps: usize, policies: usize) -> Vec<c2c_api::AppGuid> {
    let mut guids = vec![];
    for chunk in (0..apps).collect::<Vec<_>>().chunks(64) {
        let made = futures::future::join_all(chunk.iter().map(|i| {
            let (admin, name) = (admin.clone(), format!("app{i}"));
            async move { admin.create_app(&name).await }
        }))
        .await;
        guids.extend(made.into_iter().map(|a| a.unwrap().guid));
    }
    let policy = |src: usize, dst: usize, proto: &str, port: u16| c2c_api::Policy {
        source: guids[src % apps].clone(),
        destination: guids[dst % apps].clone(),
        protocol: proto.parse().unwrap(),
        ports: c2c_api::net::PortRange::new(port, port).unwrap(),
    };
    let batch: Vec<c2c_api::Policy> = (0..policies)
        .map(|i| policy(i, i * 7 + 1, "tcp", 1 + (i / apps) as u16))
        .collect();
    for chunk in batch.chunks(1000) {
        admin.add_policies(chunk).await.unwrap();
    }
    guids
}

/// N cells with their own identities, each a client of a replica in turn; the first 250 hold
/// a lease and run one instance each, so their views carry policies.
async fn make_cells(
    admin: &Client,
    controls: &[Control],
    issuer: &[u8],
    n: usize,
    guids: &[c2c_api::AppGuid],
) -> Vec<(String, Client)> {
    let (apps, replicas) = (guids.len(), controls.len());
    let mut cells = vec![];
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let made = futures::future::join_all(chunk.iter().map(|i| {
            let admin = admin.clone();
            async move {
                let name: c2c_api::CellName = format!("cell{i}").parse().unwrap();
                let (key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
                let signed = admin.register_cell(&name, &csr).await.unwrap();
                (name, signed.cert_pem, key)
            }
        }))
        .await;
        cells.extend(made);
    }
    let mut clients = vec![];
    for (i, (name, cert, key)) in cells.iter().enumerate() {
        // Its own replica first, then the others (as agents get every replica's URL).
        let urls: Vec<&str> = (0..replicas)
            .map(|k| controls[(i + k) % replicas].url.trim())
            .collect();
        let c = Client::new(
            &urls.join(","),
            issuer,
            Auth::ClientCert {
                cert_pem: cert.clone().into_bytes(),
                key_pem: key.clone().into_bytes(),
            },
        )
        .unwrap()
        .with_connector(from_own_address(i));
        if i < 250 {
            let lease = c
                .acquire_lease(
                    name.as_str(),
                    std::net::Ipv4Addr::new(192, 0, 2 + (i / 250) as u8, 1 + (i % 250) as u8),
                )
                .await
                .unwrap();
            let placed = admin
                .place(guids[i % apps].as_str(), name, None)
                .await
                .unwrap();
            let inst = c2c_api::Instance {
                guid: placed.guid,
                app_guid: placed.app_guid,
                index: placed.index,
                cell: name.clone(),
                ip: std::net::Ipv4Addr::from(u32::from(lease.subnet.network()) + 2),
            };
            c.confirm_instance(name.as_str(), &inst).await.unwrap();
        }
        clients.push((name.to_string(), c));
    }
    clients
}

/// What the replicated setup does after its changes: the sustained rate, a failover, a
/// restart of both replicas (as `modes` asks).
#[allow(clippy::too_many_arguments)]
async fn after_changes(
    modes: Modes,
    controls: &mut Vec<Control>,
    admin: &Client,
    issuer: &[u8],
    token: &str,
    rx: &mut failover::Views,
    latest: &mut [u64],
    policy: &impl Fn(usize, usize, &str, u16) -> c2c_api::Policy,
) {
    if let Some((secs, every)) = modes.sustain {
        let count = (secs * 1000 / every.as_millis().max(1) as u64) as usize;
        let batch = (0..count)
            .map(|k| policy(k + 11, k + 17, "udp", 10_000 + (k % 50_000) as u16))
            .collect();
        failover::sustain(controls, admin, rx, latest, batch, every).await;
    }
    if modes.failover {
        let p = policy(1, 5, "udp", 9999);
        failover::fail_over(controls, issuer, token, rx, latest, p).await;
    }
    if modes.restart {
        let p = policy(2, 6, "udp", 9998);
        failover::restart_all(controls, issuer, token, rx, latest, p).await;
    }
}

/// Every cell watches: with the agent's own loop for a failover run, else with a bare stream.
fn watch_all(
    clients: Vec<(String, Client)>,
    tx: &mpsc::UnboundedSender<(usize, u64, Instant)>,
    failover: bool,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    agents_stop: &tokio_util::sync::CancellationToken,
) {
    if failover {
        spawn_agent_watchers(clients, tx, agents_stop);
    } else {
        spawn_watchers(clients, tx, stop);
    }
}

/// Every cell watches with the agent's own loop, sending (cell, revision, when) per view.
fn spawn_agent_watchers(
    clients: Vec<(String, Client)>,
    tx: &mpsc::UnboundedSender<(usize, u64, Instant)>,
    stop: &tokio_util::sync::CancellationToken,
) {
    for (i, (name, c)) in clients.into_iter().enumerate() {
        let mut views = c2c_shim::control_link::spawn_watch(c, name.parse().unwrap(), stop.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(v) = views.recv().await {
                let _ = tx.send((i, v.revision.0, Instant::now()));
            }
        });
    }
}

/// Every cell watches, each on a task of its own, sending (cell, revision, when) per line.
fn spawn_watchers(
    clients: Vec<(String, Client)>,
    tx: &mpsc::UnboundedSender<(usize, u64, Instant)>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) {
    for (i, (name, c)) in clients.into_iter().enumerate() {
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            // As the agent watches: a streamed watch, a line per change (changes only since the
            // line before), read here for its revision only: the agents run on their own
            // hosts, so the load generator keeps its own work per line small and measures
            // control. A stream that ends is opened again from the revision it had.
            let mut rev = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = c.watch_stream(&name, c2c_api::Revision(rev)).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while let Ok(line) = s.next().await {
                    if let Some(v) = line {
                        rev = v.revision.0;
                        let _ = tx.send((i, rev, Instant::now()));
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                }
            }
        });
    }
}

/// CPU seconds and resident bytes of every replica, summed.
#[allow(clippy::too_many_arguments)]
async fn run(
    name: &str,
    n: usize,
    changes: usize,
    apps: usize,
    policies: usize,
    replicas: usize,
    db: Option<String>,
    cache: bool,
    modes: Modes,
) -> Figures {
    let cap = n + 1000;
    let first = start_control(None, db.as_deref(), cache, cap);
    let others: Vec<Control> = (1..replicas)
        .map(|_| start_control(Some(&first), db.as_deref(), cache, cap))
        .collect();
    let mut controls: Vec<Control> = std::iter::once(first).chain(others).collect();
    let token = std::fs::read_to_string(controls[0].dir.path().join("control/token")).unwrap();
    let issuer = std::fs::read(controls[0].dir.path().join("ca/control/ca.pem")).unwrap();
    let admin = Client::new(&controls[0].url, &issuer, Auth::Token(token.trim().into())).unwrap();

    // The platform: APPS apps, POLICIES policies between them.
    let guids = populate(&admin, apps, policies).await;
    let policy = |src: usize, dst: usize, proto: &str, port: u16| c2c_api::Policy {
        source: guids[src % apps].clone(),
        destination: guids[dst % apps].clone(),
        protocol: proto.parse().unwrap(),
        ports: c2c_api::net::PortRange::new(port, port).unwrap(),
    };
    let clients = make_cells(&admin, &controls, &issuer, n, &guids).await;
    // The setup's kept-alive connections are closed by control after its idle limit (10 s), as
    // an agent's are between its renewals: the base holds none of them.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, rss_base): (f64, u64) = usage_of(&controls);

    // Every cell watches.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u64, Instant)>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agents_stop = tokio_util::sync::CancellationToken::new();
    watch_all(clients, &tx, modes.agents(), &stop, &agents_stop);
    let mut latest = vec![0u64; n];
    let mut seen = 0;
    let parked_by = Instant::now() + Duration::from_secs(600);
    while seen < n {
        let left = parked_by.saturating_duration_since(Instant::now());
        let Ok(Some((i, r, _))) = tokio::time::timeout(left, rx.recv()).await else {
            panic!("only {seen} of {n} watchers got a first view within 10 minutes");
        };
        if latest[i] == 0 {
            seen += 1;
        }
        latest[i] = r;
    }
    // Let the watchers park (each stream waits for the next change).
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok((i, r, _)) = rx.try_recv() {
        latest[i] = r;
    }
    let (cpu0, rss_parked): (f64, u64) = usage_of(&controls);
    trim_probe(&controls, rss_base, rss_parked, n);

    let (mut p50s, mut p99s, mut alls) = (vec![], vec![], vec![]);
    for k in 0..changes {
        let target = latest.iter().max().copied().unwrap_or(0) + 1;
        let t0 = Instant::now();
        admin
            .add_policies(&[policy(k, k + 3, "udp", 7000 + k as u16)])
            .await
            .unwrap();
        let mut lat = vec![None; n];
        let mut have = 0;
        let deadline = t0 + Duration::from_secs(20);
        while have < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((i, r, at))) = tokio::time::timeout(left, rx.recv()).await else {
                break;
            };
            latest[i] = r;
            if r >= target && lat[i].is_none() {
                lat[i] = Some(at.duration_since(t0).as_secs_f64() * 1000.0);
                have += 1;
            }
        }
        let mut l: Vec<f64> = lat.iter().map(|x| x.unwrap_or(20_000.0)).collect();
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        p50s.push(pct(&l, 0.5));
        p99s.push(pct(&l, 0.99));
        alls.push(*l.last().unwrap());
        tokio::time::sleep(Duration::from_millis(500).saturating_sub(t0.elapsed())).await;
    }
    let (cpu1, _): (f64, u64) = usage_of(&controls);
    after_changes(
        modes,
        &mut controls,
        &admin,
        &issuer,
        &token,
        &mut rx,
        &mut latest,
        &policy,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    agents_stop.cancel();
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let f = Figures {
        p50_ms: med(p50s),
        p99_ms: med(p99s),
        all_ms: med(alls),
        cpu_ms_per_change: (cpu1 - cpu0) * 1000.0 / changes as f64,
        rss_kib_per_watch: (rss_parked.saturating_sub(rss_base)) as f64 / 1024.0 / n as f64,
    };
    println!(
        "{name:<44} {n:>6} {:>9.1} {:>9.1} {:>10.1} {:>12.1} {:>10.1}",
        f.p50_ms, f.p99_ms, f.all_ms, f.cpu_ms_per_change, f.rss_kib_per_watch
    );
    f
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let n = args.first().copied().unwrap_or(100);
    let changes = args.get(1).copied().unwrap_or(10);
    let apps = args.get(2).copied().unwrap_or(1000);
    let policies = args.get(3).copied().unwrap_or(10_000);
    // Each watch holds a socket here and in control.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{apps} apps, {policies} policies, {changes} changes 0.5 s apart; medians over the changes"
    );
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>10} {:>12} {:>10}",
        "setup", "cells", "p50 ms", "p99 ms", "all ms", "CPU ms/chg", "KiB/watch"
    );
    controls::clean_up_on_panic();
    let pg = PgCluster::start().expect("start PostgreSQL");
    controls::leftovers().cluster = Some(pg.dir().to_path_buf());
    let db = pg.create_db("scale").unwrap();
    rt.block_on(async {
        // REFERENCE=0 skips the reference (at 5,000 cells its first views alone take minutes).
        let reference = if std::env::var("REFERENCE").is_ok_and(|v| v == "0") {
            None
        } else {
            Some(run("reference: per-watcher views, SQLite", n, changes, apps, policies, 1, None, false, Modes::default()).await)
        };
        let modes = Modes::from_env();
        // SQLITE=0 skips the SQLite setup (a failover run needs only the replicated one).
        let shared = if std::env::var("SQLITE").is_ok_and(|v| v == "0") {
            None
        } else {
            Some(run("shared views, SQLite", n, changes, apps, policies, 1, None, true, Modes::default()).await)
        };
        let replicated = run("shared views, PostgreSQL, 2 replicas", n, changes, apps, policies, 2, Some(db), true, modes).await;
        if let (Some(reference), Some(shared)) = (reference, shared) {
            println!(
                "ratios against the reference: all-cells time {:.2}x (SQLite) {:.2}x (PostgreSQL x2); CPU per change {:.2}x (SQLite) {:.2}x (PostgreSQL x2)",
                shared.all_ms / reference.all_ms,
                replicated.all_ms / reference.all_ms,
                shared.cpu_ms_per_change / reference.cpu_ms_per_change,
                replicated.cpu_ms_per_change / reference.cpu_ms_per_change,
            );
        }
    });
}
