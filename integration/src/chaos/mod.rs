//! The chaos soak: a replicated platform (PostgreSQL, control replicas A and B, three cells)
//! with probe traffic from `src` on cell1 to `dst` on cell2 and cell3 every 20 ms, a churn
//! driver adding and removing the policy between them several times a second, and a fault
//! driver that, at random intervals, kills an agent (-9, then starts it again), pauses one
//! (SIGSTOP for 2 s), kills replica A (-9, then starts it again), restarts PostgreSQL as a
//! crash would (immediate stop, 2 s down), or cuts the underlay between cell1 and another cell
//! for 2 s (an nft table of the soak's own in that cell; this kernel has no netem, so there is
//! no delay fault), or kills dst's sidecar on cell2 (-9; its agent must start it again: TLS
//! probes from src go through it all the while, under a policy that never changes). A second churner creates apps, maps routes and policies to them and deletes
//! them, all the while. An invariant checker compares every probe with the policy as control
//! acknowledged it:
//!
//! - no connection through while the policy is absent, past the convergence window after its
//!   removal; no refusal while it is present, past the window after its addition;
//! - both relaxed only on the cell a fault stopped, until the fault heals plus the window
//!   (while its agent is away the rules stay as they were, which is what enforcement should do).
//!
//! It reports minutes run, faults by kind, probes, violations, how long each change took to be
//! enforced on each cell (p50/p99) overall and after each kind of fault heals, and the memory
//! of replica B and the agents at the start and the end. At the end it checks the database
//! (no app the churn deleted, no tag an app shares with a tag group, no instance on an unknown
//! cell, one lease per cell, the policy table as last acknowledged) and, once the platform is
//! gone, the host (no namespace, process or directory of the soak's left). `bench/chaos.sh` runs it for 30
//! minutes; CI runs 2 (`integration/tests/root_chaos.rs`).

mod end;
mod invariants;
mod sidecar;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::benchkit::rss_kib;
use crate::bin;
use crate::testbed::Platform;
use crate::topo::*;
use end::{consistency, leaks};
use invariants::{check, check_tls, Change, Fault, Probe, TlsProbe, SIDECAR_FAULT};
pub use invariants::{Report, WINDOW};
use sidecar::Sidecar;

/// Runs the soak for `duration`; `seed` makes the fault schedule repeatable.
pub fn soak(duration: Duration, seed: u64) -> Report {
    let mut p = Platform::start_replicated(3, "10s");
    // The test cluster runs with synchronous_commit off for speed: a crash then loses commits
    // already acknowledged (a delete the churn saw succeed came back after a restart). The
    // soak crashes PostgreSQL, so its database commits as an operator's server does (a
    // database's setting wins over the server's command line; every connection after the
    // first restart has it, and no crash comes before that).
    p.pg.as_ref()
        .unwrap()
        .execute("ALTER DATABASE c2c SET synchronous_commit = on")
        .expect("synchronous_commit on");
    let (a, dst_ns, targets) = probes_placed(&p);
    let side = Sidecar::start(
        &p,
        &a,
        &dst_ns[0],
        &format!("dst-0-{}", dst_ns[0].name),
        targets[0].1,
    );
    let mut report = Report::default();
    let start_rss: Vec<(String, u64)> = pids(&p)
        .into_iter()
        .map(|(w, pid)| (w, rss_kib(pid)))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let tls: Arc<Mutex<Vec<TlsProbe>>> = Arc::default();
    let began = Instant::now();
    let prober = spawn_prober(&a, targets, stop.clone(), probes.clone());
    let tls_prober = sidecar::spawn_prober(&a, &side, stop.clone(), tls.clone());
    let cli = Cli {
        underlay: p.underlay.ns.name.clone(),
        state: p.dir.path().join("state"),
        urls: format!(
            "{},{}",
            p.url.trim(),
            p.replica_b.as_ref().unwrap().1.trim()
        ),
    };
    let churner = spawn_policy_churn(cli.clone(), seed, stop.clone(), changes.clone());
    let app_churner = spawn_app_churn(cli, stop.clone());
    let faults = inject_faults(&mut p, &side, duration, began, seed, &mut report);

    // The last changes settle, then everything stops.
    std::thread::sleep(WINDOW + Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    tls_prober.join().unwrap();
    let stuck = churner.join().unwrap();
    let (cycles, stuck_apps) = app_churner.join().unwrap();
    report.app_cycles = cycles;
    // A change control could not take for a minute is control not serving: said as such.
    report
        .inconsistencies
        .extend(stuck.into_iter().chain(stuck_apps));
    report.ran = began.elapsed();

    let probes = probes.lock().unwrap().clone();
    let changes = changes.lock().unwrap().clone();
    report.probes = probes.len() as u64;
    report.changes = changes.len() as u64;
    check(&probes, &changes, &faults, &mut report);
    check_tls(&tls.lock().unwrap(), &faults, &mut report);
    memory(&p, start_rss, &faults, &mut report);
    for (i, agent) in p.agents.iter_mut().enumerate() {
        if let Ok(Some(status)) = agent.child.try_wait() {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            report.inconsistencies.push(format!(
                "agent cell{} exited during the soak ({status}): {}",
                i + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    let last = changes.last().is_some_and(|c| c.present);
    // The churned policy as last acknowledged, and the sidecar's, which never changes.
    report
        .inconsistencies
        .extend(consistency(p.pg.as_ref().unwrap(), u8::from(last) + 1));
    drop(side);

    // The platform goes; nothing of it may stay on the host.
    let dirs = [
        p.dir.path().to_path_buf(),
        p.pg.as_ref().unwrap().dir().to_path_buf(),
    ];
    drop((a, dst_ns, p));
    report.leaks = leaks(&dirs);
    report
}

/// The probe apps: `src` on cell1, `dst` serving on cell2 and cell3, each path refused (no
/// policy yet on 8080; the sidecar's 61443 is allowed for the whole soak, and dst has a route
/// for its certificate). Returns src's namespace, dst's namespaces (they live until the platform is
/// gone) and the targets by cell.
fn probes_placed(p: &Platform) -> (Netns, Vec<Netns>, Vec<(u8, Ipv4Addr)>) {
    for app in ["src", "dst"] {
        p.c2c(&["create-app", app]);
    }
    p.c2c(&[
        "map-route",
        "dst",
        "apps.internal",
        "--hostname",
        sidecar::ROUTE,
    ]);
    p.allow("src", "dst", "tcp", "61443");
    let (a, _) = p.container(1, "src", 0);
    let mut dst_ns = vec![];
    let targets: Vec<(u8, Ipv4Addr)> = [(2u8, 0u32), (3, 1)]
        .iter()
        .map(|(cell, index)| {
            let (ns, ip) = p.container(*cell, "dst", *index);
            serve(&ns, SocketAddr::new(ip.into(), 8080), "dst");
            dst_ns.push(ns);
            (*cell, ip)
        })
        .collect();
    for (_, ip) in &targets {
        let to = SocketAddr::new((*ip).into(), 8080);
        wait_until(
            "the path to dst",
            Duration::from_secs(15),
            || matches!(fetch(&a, to), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        );
    }
    (a, dst_ns, targets)
}

/// The processes whose memory is reported: the agents and replica B.
fn pids(p: &Platform) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = p
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("agent cell{}", i + 1), a.child.id()))
        .collect();
    if let Some((b, _)) = &p.replica_b {
        v.push(("control replica B".into(), b.child.id()));
    }
    v
}

/// Memory at the start and now; a process killed and started again is not comparable: said so.
fn memory(p: &Platform, start_rss: Vec<(String, u64)>, faults: &[Fault], report: &mut Report) {
    for ((who, start), (_, pid)) in start_rss.into_iter().zip(pids(p)) {
        report.rss_kb.push((who, start, rss_kib(pid)));
    }
    for (who, _, _) in report.rss_kb.iter_mut() {
        let n: Option<usize> = who.strip_prefix("agent cell").and_then(|n| n.parse().ok());
        if n.is_some_and(|n| {
            faults
                .iter()
                .any(|f| f.kind == "kill9-agent" && f.cell as usize == n)
        }) {
            who.push_str(" (restarted during the soak)");
        }
    }
}

/// Probes, from inside src's namespace: a new connection to each target every 20 ms.
fn spawn_prober(
    a: &Netns,
    targets: Vec<(u8, Ipv4Addr)>,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
) -> std::thread::JoinHandle<()> {
    spawn_in(&a.path(), move || {
        while !stop.load(Ordering::SeqCst) {
            for (cell, ip) in &targets {
                let at = Instant::now();
                let open = TcpStream::connect_timeout(
                    &SocketAddr::new((*ip).into(), 8080),
                    Duration::from_millis(300),
                )
                .is_ok();
                probes.lock().unwrap().push(Probe {
                    at,
                    cell: *cell,
                    open,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Churn: the policy on and off every 300-700 ms, through either replica. Ends with the
/// reason when control did not take a change for a minute.
fn spawn_policy_churn(
    cli: Cli,
    seed: u64,
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<Change>>>,
) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut present = false;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300 + next(&mut rng) % 400));
            let verb = if present {
                "remove-network-policy"
            } else {
                "add-network-policy"
            };
            let sent = Instant::now();
            // Retried until control takes it (a replica may be down): both verbs are
            // idempotent, so a retry after a lost answer changes nothing twice.
            if let Err(e) = cli.until_ok(
                &[verb, "src", "dst", "--protocol", "tcp", "--port", "8080"],
                &stop,
            ) {
                return Some(e);
            }
            present = !present;
            changes.lock().unwrap().push(Change {
                sent,
                acked: Instant::now(),
                present,
            });
        }
        None
    })
}

/// Churn of apps: created, given a route and a policy from src, deleted, one after another.
/// A cycle begun is finished, also after the stop, so the end state is known. Ends with the
/// cycles done and, if control stopped taking changes, why.
fn spawn_app_churn(
    cli: Cli,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Option<String>)> {
    std::thread::spawn(move || {
        let never = AtomicBool::new(false);
        let mut cycles = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let name = format!("churn{cycles}");
            for args in [
                &["create-app", &name][..],
                &["map-route", &name, "apps.internal", "--hostname", &name],
                &[
                    "add-network-policy",
                    "src",
                    &name,
                    "--protocol",
                    "tcp",
                    "--port",
                    "9000",
                ],
                &["delete", &name, "-f"],
            ] {
                if let Err(e) = cli.until_ok(args, &never) {
                    return (cycles, Some(e));
                }
            }
            cycles += 1;
        }
        (cycles, None)
    })
}

/// Faults, on this thread: one every 4-8 s, kinds in turn, cells at random, until 10 s
/// before the end.
fn inject_faults(
    p: &mut Platform,
    side: &Sidecar,
    duration: Duration,
    began: Instant,
    seed: u64,
    report: &mut Report,
) -> Vec<Fault> {
    let mut faults: Vec<Fault> = vec![];
    let kinds = [
        "kill9-agent",
        "pause-agent",
        "kill9-control",
        "restart-postgres",
        "partition-cells",
        SIDECAR_FAULT,
    ];
    let mut rng = seed;
    let mut k = 0;
    while began.elapsed() + Duration::from_secs(10) < duration {
        std::thread::sleep(Duration::from_millis(4000 + next(&mut rng) % 4000));
        let kind = kinds[k % kinds.len()];
        k += 1;
        let cell = 1 + (next(&mut rng) % 3) as u8;
        let start = Instant::now();
        let fault_cell = fault(p, side, kind, cell);
        *report.faults.entry(kind).or_default() += 1;
        if let Some((b, _)) = &p.replica_b {
            report.replica_b_kb.push(rss_kib(b.child.id()));
        }
        faults.push(Fault {
            kind,
            cell: fault_cell,
            start,
            healed: Instant::now(),
        });
    }
    faults
}

/// One fault of `kind` (on `cell` where it takes one), healed before it returns. Returns the
/// cell the fault excuses (0: none).
fn fault(p: &mut Platform, side: &Sidecar, kind: &str, cell: u8) -> u8 {
    match kind {
        // Healed from the agent's side at once: the agent must start it again (the TLS
        // probes measure how soon).
        SIDECAR_FAULT => {
            side.kill9();
            2
        }
        "kill9-agent" => {
            p.agents[cell as usize - 1].kill9();
            std::thread::sleep(Duration::from_millis(500));
            p.start_agent(cell);
            cell
        }
        "pause-agent" => {
            let pid = nix::unistd::Pid::from_raw(p.agents[cell as usize - 1].child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs(2));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            cell
        }
        "restart-postgres" => {
            // Control is away from its database; the cells' rules must stay as they were.
            p.pg.as_ref()
                .unwrap()
                .restart(Duration::from_secs(2))
                .expect("restarting PostgreSQL");
            0
        }
        "partition-cells" => {
            // cell1 (the probes' source) and cell2 or cell3 cannot reach each other; the
            // cut cell is excused (its probes cannot arrive), the other is not.
            let cut = 2 + (cell % 2);
            let ns = &p.cells[cut as usize - 1].ns;
            partition(&ns.name, true);
            std::thread::sleep(Duration::from_secs(2));
            partition(&ns.name, false);
            cut
        }
        _ => {
            p.kill_replica_a();
            std::thread::sleep(Duration::from_secs(2));
            p.restart_replica_a();
            0
        }
    }
}

/// How the soak runs `c2c` against the replicated control: from the underlay, either replica.
#[derive(Clone)]
struct Cli {
    underlay: String,
    state: std::path::PathBuf,
    urls: String,
}

impl Cli {
    /// Runs `c2c ARGS` until it succeeds, `stop` is set, or a minute has passed (a replica or
    /// the database may be down for seconds; every verb used is idempotent, so a retry after
    /// a lost answer is harmless). Err: what the last try said, after a minute of failing.
    fn until_ok(&self, args: &[&str], stop: &AtomicBool) -> Result<(), String> {
        let began = Instant::now();
        loop {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.underlay])
                .arg(bin("c2c"))
                .args(["--state-dir", self.state.to_str().unwrap()])
                .args(["--control", &self.urls])
                .args(args)
                .output();
            let said = match out {
                Ok(o) if o.status.success() => return Ok(()),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if began.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "c2c {} failed for a minute: {said}",
                    args.join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Cuts (or restores) the underlay between the cell in namespace `ns` and cell1 (192.0.2.1),
/// with an nft table of the soak's own beside the agent's.
fn partition(ns: &str, cut: bool) {
    let rules = if cut {
        "table inet c2c-chaos {
            chain in { type filter hook input priority -300; ip saddr 192.0.2.1 drop; }
            chain out { type filter hook output priority -300; ip daddr 192.0.2.1 drop; }
        }"
    } else {
        "delete table inet c2c-chaos"
    };
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft {rules}");
}

/// xorshift64: the fault schedule, repeatable from the seed.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}
