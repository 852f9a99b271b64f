//! The chaos soak: a replicated platform (PostgreSQL, control replicas A and B, three cells)
//! with probe traffic from `src` on cell1 to `dst` on cell2 and cell3 every 20 ms, a churn
//! driver adding and removing the policy between them several times a second, and a fault
//! driver that, at random intervals, kills an agent (-9, then starts it again), pauses one
//! (SIGSTOP for 2 s), kills replica A (-9, then starts it again), restarts PostgreSQL as a
//! crash would (immediate stop, 2 s down), or cuts the underlay between cell1 and another cell
//! for 2 s (an nft table of the soak's own in that cell; this kernel has no netem, so there is
//! no delay fault). A second churner creates apps, maps routes and policies to them and deletes
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

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bin;
use crate::testbed::Platform;
use crate::topo::*;

/// The window within which a change must be enforced before a probe that disagrees counts.
pub const WINDOW: Duration = Duration::from_secs(3);

/// What a soak found.
#[derive(Debug, Default)]
pub struct Report {
    /// How long it ran.
    pub ran: Duration,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Probes sent.
    pub probes: u64,
    /// Policy changes control acknowledged.
    pub changes: u64,
    /// Probes that disagreed with the policy outside every window (goal: none).
    pub violations: Vec<String>,
    /// Milliseconds from a change's acknowledgement to its first probe agreeing, per cell.
    pub convergence_ms: Vec<u64>,
    /// Milliseconds from a fault's healing to the cell's first probe agreeing, by fault kind.
    pub healed_ms: BTreeMap<&'static str, Vec<u64>>,
    /// Resident memory (kB) of replica B and each agent, at the start and the end.
    pub rss_kb: Vec<(String, u64, u64)>,
    /// Apps the second churner created and deleted again (each with a route and a policy).
    pub app_cycles: u64,
    /// What the database holds at the end that it should not (goal: nothing).
    pub inconsistencies: Vec<String>,
    /// What the soak left on the host once its platform was gone (goal: nothing).
    pub leaks: Vec<String>,
}

impl Report {
    /// The report as text, one figure per line.
    pub fn text(&self) -> String {
        let pct = |v: &[u64], p: f64| -> String {
            if v.is_empty() {
                return "-".into();
            }
            let mut s = v.to_vec();
            s.sort_unstable();
            let i = ((s.len() as f64 - 1.0) * p).round() as usize;
            format!("{} ms", s[i])
        };
        let mut out = format!(
            "chaos soak: {:.1} min, {} probes, {} policy changes, {} apps created and deleted, {} violations\n",
            self.ran.as_secs_f64() / 60.0,
            self.probes,
            self.changes,
            self.app_cycles,
            self.violations.len()
        );
        for (k, n) in &self.faults {
            out.push_str(&format!(
                "  fault {k}: {n} injected; converged after healing p50 {} p99 {}\n",
                pct(self.healed_ms.get(k).map_or(&[], |v| v), 0.5),
                pct(self.healed_ms.get(k).map_or(&[], |v| v), 0.99),
            ));
        }
        out.push_str(&format!(
            "  policy change -> enforced on a cell: p50 {} p99 {} ({} samples)\n",
            pct(&self.convergence_ms, 0.5),
            pct(&self.convergence_ms, 0.99),
            self.convergence_ms.len()
        ));
        for (who, start, end) in &self.rss_kb {
            out.push_str(&format!("  memory {who}: {start} kB -> {end} kB\n"));
        }
        out.push_str(&format!(
            "  database at the end: {}\n  host after teardown: {}\n",
            if self.inconsistencies.is_empty() {
                "consistent".to_string()
            } else {
                self.inconsistencies.join("; ")
            },
            if self.leaks.is_empty() {
                "nothing left".to_string()
            } else {
                self.leaks.join("; ")
            }
        ));
        for v in self.violations.iter().take(20) {
            out.push_str(&format!("  VIOLATION {v}\n"));
        }
        out
    }
}

/// A policy change as control acknowledged it.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// When the request was first sent (it may be in effect from here).
    sent: Instant,
    /// When control acknowledged it (it must be in effect by here plus [`WINDOW`]).
    acked: Instant,
    /// The policy exists after it.
    present: bool,
}

/// A probe: when, to which cell's instance, and whether it got through.
#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    cell: u8,
    open: bool,
}

/// A fault on a cell (0: control, every cell's path to it), from start until healed.
#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: &'static str,
    cell: u8,
    start: Instant,
    healed: Instant,
}

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
    for app in ["src", "dst"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _) = p.container(1, "src", 0);
    // The destinations' namespaces live until the platform is gone (dropped at the end).
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
    let mut report = Report::default();
    let pids = |p: &Platform| -> Vec<(String, u32)> {
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
    };
    let start_rss: Vec<(String, u64)> = pids(&p)
        .into_iter()
        .map(|(w, pid)| (w, rss_kb(pid)))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let began = Instant::now();

    // Probes, from inside src's namespace: a new connection to each target every 20 ms.
    let prober = {
        let (stop, probes, targets) = (stop.clone(), probes.clone(), targets.clone());
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
    };

    // Churn: the policy on and off every 300-700 ms, through either replica.
    let cli = Cli {
        underlay: p.underlay.ns.name.clone(),
        state: p.dir.path().join("state"),
        urls: format!(
            "{},{}",
            p.url.trim(),
            p.replica_b.as_ref().unwrap().1.trim()
        ),
    };
    let churner = {
        let (stop, changes, cli) = (stop.clone(), changes.clone(), cli.clone());
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
    };

    // Churn of apps: created, given a route and a policy from src, deleted, one after another.
    // A cycle begun is finished, also after the stop, so the end state is known.
    let app_churner = {
        let (stop, cli) = (stop.clone(), cli.clone());
        std::thread::spawn(move || {
            let never = AtomicBool::new(false);
            let mut cycles = 0u64;
            let mut failed = None;
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
                        failed = Some(e);
                        break;
                    }
                }
                if failed.is_some() {
                    break;
                }
                cycles += 1;
            }
            (cycles, failed)
        })
    };

    // Faults, on this thread: one every 4-8 s, kinds in turn, cells at random.
    let mut faults: Vec<Fault> = vec![];
    let kinds = [
        "kill9-agent",
        "pause-agent",
        "kill9-control",
        "restart-postgres",
        "partition-cells",
    ];
    let mut rng = seed;
    let mut k = 0;
    while began.elapsed() + Duration::from_secs(10) < duration {
        std::thread::sleep(Duration::from_millis(4000 + next(&mut rng) % 4000));
        let kind = kinds[k % kinds.len()];
        k += 1;
        let cell = 1 + (next(&mut rng) % 3) as u8;
        let start = Instant::now();
        let fault_cell = match kind {
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
        };
        *report.faults.entry(kind).or_default() += 1;
        faults.push(Fault {
            kind,
            cell: fault_cell,
            start,
            healed: Instant::now(),
        });
    }
    // The last changes settle, then everything stops.
    std::thread::sleep(WINDOW + Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
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
    for ((who, start), (_, pid)) in start_rss.into_iter().zip(pids(&p)) {
        report.rss_kb.push((who, start, rss_kb(pid)));
    }
    // Memory of a process killed and started again is not comparable: said so.
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
    report
        .inconsistencies
        .extend(consistency(p.pg.as_ref().unwrap(), last));

    // The platform goes; nothing of it may stay on the host.
    let dirs = [
        p.dir.path().to_path_buf(),
        p.pg.as_ref().unwrap().dir().to_path_buf(),
    ];
    drop((a, dst_ns, p));
    report.leaks = leaks(&dirs);
    report
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

/// What the database holds that it should not, once the churn has stopped: `present` is the
/// policy between src and dst as last acknowledged.
fn consistency(pg: &c2c_testkit::pg_cluster::PgCluster, present: bool) -> Vec<String> {
    let q = |sql: &str| -> Vec<Vec<Option<String>>> {
        pg.query("c2c", sql).unwrap_or_else(|e| panic!("{e}"))
    };
    let one = |sql: &str| -> String { q(sql)[0][0].clone().unwrap_or_default() };
    let mut bad = vec![];
    let left: Vec<String> = q("SELECT name FROM apps WHERE name LIKE 'churn%'")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    if !left.is_empty() {
        bad.push(format!("apps the churn deleted are still there: {left:?}"));
    }
    let shared = one("SELECT count(*) FROM apps a JOIN tag_groups t ON t.tag = a.tag");
    if shared != "0" {
        bad.push(format!(
            "{shared} tags held by an app and a tag group at once"
        ));
    }
    let lost = one("SELECT count(*) FROM instances WHERE cell NOT IN (SELECT name FROM cells)");
    if lost != "0" {
        bad.push(format!("{lost} instances on cells control does not know"));
    }
    let instances = one("SELECT count(*) FROM instances");
    if instances != "3" {
        bad.push(format!("{instances} instances, not the soak's 3"));
    }
    let leases = q("SELECT count(*), count(DISTINCT subnet) FROM cells");
    if leases[0] != [Some("3".into()), Some("3".into())] {
        bad.push(format!(
            "cells and distinct leases: {:?}, not 3 and 3",
            leases[0]
        ));
    }
    let policies = one("SELECT count(*) FROM policies");
    if policies != if present { "1" } else { "0" } {
        bad.push(format!(
            "{policies} policies; the last acknowledged change left {}",
            u8::from(present)
        ));
    }
    bad
}

/// What is left on the host of a soak whose platform is gone: this process's test namespaces,
/// processes still running from its directories, the directories themselves.
fn leaks(dirs: &[std::path::PathBuf]) -> Vec<String> {
    let mut left = vec![];
    let mine = format!("-{}-", std::process::id());
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("c2ct-") && n.contains(&mine) {
            left.push(format!("namespace {n}"));
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if dirs
            .iter()
            .any(|d| cmd.contains(d.to_str().unwrap_or("\0")))
        {
            left.push(format!("process {pid}: {}", cmd.trim()));
        }
    }
    for d in dirs {
        if d.exists() {
            left.push(format!("directory {}", d.display()));
        }
    }
    left
}

/// Compares every probe with the policy, and measures convergence.
fn check(probes: &[Probe], changes: &[Change], faults: &[Fault], report: &mut Report) {
    // The policy as of `t`: Some(present) if no change is in flight, None in a window.
    let expected = |t: Instant| -> Option<bool> {
        let mut state = false;
        for c in changes {
            if c.sent > t {
                break;
            }
            if t < c.acked + WINDOW {
                return None;
            }
            state = c.present;
        }
        Some(state)
    };
    let excused = |cell: u8, t: Instant| {
        faults
            .iter()
            .any(|f| f.cell == cell && t >= f.start && t < f.healed + WINDOW)
    };
    for pr in probes {
        let Some(want) = expected(pr.at) else {
            continue;
        };
        if pr.open != want && !excused(pr.cell, pr.at) {
            report.violations.push(format!(
                "cell{} at {:?}: {} while the policy was {}",
                pr.cell,
                pr.at,
                if pr.open { "open" } else { "refused" },
                if want { "present" } else { "absent" }
            ));
        }
    }
    // Convergence: each change, each cell, to the first agreeing probe.
    for cell in [2u8, 3] {
        for c in changes {
            if let Some(first) = probes
                .iter()
                .find(|p| p.cell == cell && p.at >= c.acked && p.open == c.present)
            {
                report
                    .convergence_ms
                    .push(first.at.duration_since(c.acked).as_millis() as u64);
            }
        }
        for f in faults.iter().filter(|f| f.cell == cell || f.cell == 0) {
            let state_at = |t: Instant| {
                changes
                    .iter()
                    .take_while(|c| c.acked <= t)
                    .last()
                    .is_some_and(|c| c.present)
            };
            if let Some(first) = probes
                .iter()
                .find(|p| p.cell == cell && p.at >= f.healed && p.open == state_at(p.at))
            {
                report
                    .healed_ms
                    .entry(f.kind)
                    .or_default()
                    .push(first.at.duration_since(f.healed).as_millis() as u64);
            }
        }
    }
}

/// xorshift64: the fault schedule, repeatable from the seed.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Resident memory of `pid` in kB (0 if gone).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker itself: a probe that disagrees with the policy outside the window is a
    /// violation; inside the window, or on a cell while a fault stops its agent, it is not.
    #[test]
    fn the_checker_counts_only_disagreements_outside_the_windows() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // The policy is added at 0 (acked at 100 ms) and removed at 10 s (acked at 10.1 s).
        let changes = [
            Change {
                sent: at(0),
                acked: at(100),
                present: true,
            },
            Change {
                sent: at(10_000),
                acked: at(10_100),
                present: false,
            },
        ];
        let probe = |ms, cell, open| Probe {
            at: at(ms),
            cell,
            open,
        };
        let probes = [
            probe(50, 2, false),    // in the window after the add: fine
            probe(5_000, 2, true),  // present and open: fine
            probe(5_000, 3, false), // present, refused, no fault: violation
            probe(10_050, 2, true), // in the window after the removal: fine
            probe(14_000, 2, true), // absent, open, no fault: violation
            probe(14_000, 3, true), // absent, open, cell3's agent paused: excused
        ];
        let faults = [Fault {
            kind: "pause-agent",
            cell: 3,
            start: at(12_000),
            healed: at(13_000),
        }];
        let mut r = Report::default();
        check(&probes, &changes, &faults, &mut r);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
        assert!(
            r.violations[0].starts_with("cell3")
                && r.violations[0].contains("refused while the policy was present")
        );
        assert!(
            r.violations[1].starts_with("cell2")
                && r.violations[1].contains("open while the policy was absent")
        );
    }
}
