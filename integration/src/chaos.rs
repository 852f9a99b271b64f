//! The chaos soak: a replicated platform (PostgreSQL, control replicas A and B, three cells)
//! with probe traffic from `src` on cell1 to `dst` on cell2 and cell3 every 20 ms, a churn
//! driver adding and removing the policy between them several times a second, and a fault
//! driver that, at random intervals, kills an agent (-9, then starts it again), pauses one
//! (SIGSTOP for 2 s), or kills replica A (-9, then starts it again). An invariant checker
//! compares every probe with the policy as control acknowledged it:
//!
//! - no connection through while the policy is absent, past the convergence window after its
//!   removal; no refusal while it is present, past the window after its addition;
//! - both relaxed only on the cell a fault stopped, until the fault heals plus the window
//!   (while its agent is away the rules stay as they were, which is what enforcement should do).
//!
//! It reports minutes run, faults by kind, probes, violations, how long each change took to be
//! enforced on each cell (p50/p99) overall and after each kind of fault heals, and the memory
//! of replica B and the agents at the start and the end. `bench/chaos.sh` runs it for 30
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
            "chaos soak: {:.1} min, {} probes, {} policy changes, {} violations\n",
            self.ran.as_secs_f64() / 60.0,
            self.probes,
            self.changes,
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
    for app in ["src", "dst"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _) = p.container(1, "src", 0);
    let targets: Vec<(u8, Ipv4Addr)> = [(2u8, 0u32), (3, 1)]
        .iter()
        .map(|(cell, index)| {
            let (ns, ip) = p.container(*cell, "dst", *index);
            serve(&ns, SocketAddr::new(ip.into(), 8080), "dst");
            // Kept alive for the soak: the namespace goes when its handle drops.
            std::mem::forget(ns);
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
    let churner = {
        let (stop, changes) = (stop.clone(), changes.clone());
        let state = p.dir.path().join("state");
        let urls = format!(
            "{},{}",
            p.url.trim(),
            p.replica_b.as_ref().unwrap().1.trim()
        );
        let underlay = p.underlay.ns.name.clone();
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
                loop {
                    let ok = std::process::Command::new("ip")
                        .args(["netns", "exec", &underlay])
                        .arg(bin("c2c"))
                        .args(["--state-dir", state.to_str().unwrap(), "--control", &urls])
                        .args([verb, "src", "dst", "--protocol", "tcp", "--port", "8080"])
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if ok || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                present = !present;
                changes.lock().unwrap().push(Change {
                    sent,
                    acked: Instant::now(),
                    present,
                });
            }
        })
    };

    // Faults, on this thread: one every 4-8 s, kinds in turn, cells at random.
    let mut faults: Vec<Fault> = vec![];
    let kinds = ["kill9-agent", "pause-agent", "kill9-control"];
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
    churner.join().unwrap();
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
    report
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
