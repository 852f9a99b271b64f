//! The soak's invariants: what it records (changes as control acknowledged them, probes,
//! faults), the checker that compares every probe with the policy, and the report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    /// TLS probes sent to the sidecar, and how many were not served.
    pub tls_probes: (u64, u64),
    /// Probes that disagreed with the policy outside every window (goal: none).
    pub violations: Vec<String>,
    /// Milliseconds from a change's acknowledgement to its first probe agreeing, per cell.
    pub convergence_ms: Vec<u64>,
    /// Milliseconds from a fault's healing to the cell's first probe agreeing, by fault kind.
    pub healed_ms: BTreeMap<&'static str, Vec<u64>>,
    /// Resident memory (kB) of replica B and each agent, at the start and the end.
    pub rss_kb: Vec<(String, u64, u64)>,
    /// Replica B's resident memory (kB) after each fault, in order (never restarted: whether
    /// its memory levels off or keeps growing).
    pub replica_b_kb: Vec<u64>,
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
        out.push_str(&format!(
            "  TLS to dst's sidecar: {} probes, {} not served (all inside a sidecar kill's or cell2 partition's window, or counted below)\n",
            self.tls_probes.0, self.tls_probes.1
        ));
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
        let b = &self.replica_b_kb;
        if b.len() >= 5 {
            let at = |q: usize| b[(b.len() - 1) * q / 4];
            out.push_str(&format!(
                "  memory control replica B by quarter of the run: {} / {} / {} / {} / {} kB\n",
                at(0),
                at(1),
                at(2),
                at(3),
                at(4)
            ));
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
pub(super) struct Change {
    /// When the request was first sent (it may be in effect from here).
    pub(super) sent: Instant,
    /// When control acknowledged it (it must be in effect by here plus [`WINDOW`]).
    pub(super) acked: Instant,
    /// The policy exists after it.
    pub(super) present: bool,
}

/// A probe: when, to which cell's instance, and whether it got through.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) at: Instant,
    pub(super) cell: u8,
    pub(super) open: bool,
}

/// A TLS probe to dst's sidecar on cell2: when, and whether the app behind it answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct TlsProbe {
    pub(super) at: Instant,
    /// None if served; else the step that failed.
    pub(super) failed: Option<&'static str>,
    /// How long it took.
    pub(super) took: Duration,
}

impl TlsProbe {
    /// Whether the app behind the sidecar answered.
    pub(super) fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

/// The fault that kills dst's sidecar on cell2 (its agent must start it again). It excuses no
/// probe to the app's port: only the TLS probes, until the window after it.
pub(super) const SIDECAR_FAULT: &str = "kill9-sidecar";

/// A fault on a cell (0: control, every cell's path to it), from start until healed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    pub(super) kind: &'static str,
    pub(super) cell: u8,
    pub(super) start: Instant,
    pub(super) healed: Instant,
}

/// Compares every probe with the policy, and measures convergence.
pub(super) fn check(probes: &[Probe], changes: &[Change], faults: &[Fault], report: &mut Report) {
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
        faults.iter().any(|f| {
            f.kind != SIDECAR_FAULT && f.cell == cell && t >= f.start && t < f.healed + WINDOW
        })
    };
    for pr in probes {
        let Some(want) = expected(pr.at) else {
            continue;
        };
        if pr.open != want && !excused(pr.cell, pr.at) {
            report.violations.push(format!(
                "cell{} at {:?}: {} while the policy was {}{}",
                pr.cell,
                pr.at,
                if pr.open { "open" } else { "refused" },
                if want { "present" } else { "absent" },
                last_fault(faults, pr.at)
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
        for f in faults
            .iter()
            .filter(|f| f.kind != SIDECAR_FAULT && (f.cell == cell || f.cell == 0))
        {
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

/// Every TLS probe to the sidecar must be served (its policy never changes), except within a
/// window after the sidecar was killed or while cell2 was cut off (and the window after); how
/// long the agent took to serve again after each kill.
pub(super) fn check_tls(probes: &[TlsProbe], faults: &[Fault], report: &mut Report) {
    let excused = |t: Instant| {
        faults.iter().any(|f| {
            (f.kind == SIDECAR_FAULT || f.cell == 2 && f.kind == "partition-cells")
                && t >= f.start
                && t < f.healed + WINDOW
        })
    };
    report.tls_probes = (
        probes.len() as u64,
        probes.iter().filter(|p| !p.ok()).count() as u64,
    );
    for pr in probes.iter().filter(|p| !p.ok() && !excused(p.at)) {
        report.violations.push(format!(
            "TLS to dst's sidecar at {:?} not served ({} after {} ms), with its policy in place and no fault excusing it{}",
            pr.at,
            pr.failed.unwrap_or_default(),
            pr.took.as_millis(),
            last_fault(faults, pr.at)
        ));
    }
    for f in faults.iter().filter(|f| f.kind == SIDECAR_FAULT) {
        if let Some(first) = probes.iter().find(|p| p.at >= f.healed && p.ok()) {
            report
                .healed_ms
                .entry(f.kind)
                .or_default()
                .push(first.at.duration_since(f.healed).as_millis() as u64);
        }
    }
}

/// The last fault begun before `t`, as "(N ms after KIND on cellC began, M ms after it healed)",
/// so that a violation says what it followed.
fn last_fault(faults: &[Fault], t: Instant) -> String {
    faults
        .iter()
        .filter(|f| f.start <= t)
        .max_by_key(|f| f.start)
        .map(|f| {
            let since = |i: Instant| t.saturating_duration_since(i).as_millis();
            format!(
                " ({} ms after {} on cell{} began, {} ms after it healed)",
                since(f.start),
                f.kind,
                f.cell,
                since(f.healed)
            )
        })
        .unwrap_or_default()
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

    /// The TLS checker: a probe not served is a violation unless a sidecar kill's or cell2
    /// partition's window covers it; another cell's partition and an agent fault excuse none.
    #[test]
    fn the_tls_checker_excuses_only_sidecar_kills_and_cell2_cuts() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let fault = |kind, cell, ms| Fault {
            kind,
            cell,
            start: at(ms),
            healed: at(ms),
        };
        let faults = [
            fault(SIDECAR_FAULT, 2, 1_000),
            fault("partition-cells", 2, 10_000),
            fault("partition-cells", 3, 20_000),
            fault("kill9-agent", 2, 30_000),
        ];
        let probe = |ms, ok: bool| TlsProbe {
            at: at(ms),
            failed: (!ok).then_some("refused"),
            took: Duration::ZERO,
        };
        let probes = [
            probe(500, true),
            probe(1_500, false),  // in the sidecar kill's window: excused
            probe(2_000, true),   // served again 1 s after the kill
            probe(10_500, false), // cell2 cut off: excused
            probe(20_500, false), // cell3 cut off: not an excuse
            probe(30_500, false), // cell2's agent killed: the sidecar must still serve
        ];
        let mut r = Report::default();
        check_tls(&probes, &faults, &mut r);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
        assert_eq!(r.tls_probes, (6, 4));
        assert_eq!(r.healed_ms[SIDECAR_FAULT], vec![1_000]);
    }
}
