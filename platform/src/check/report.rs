//! What `c2c check` prints: a line per check as it completes, a summary, or one JSON object.

use std::time::Instant;

use anyhow::Result;

use super::{Options, Outcome, CHECKS, PROBE_A, PROBE_B};

/// The outcomes so far, printed as they come (or as JSON at the end).
pub(super) struct Report<'a> {
    opts: &'a Options,
    out: Vec<Outcome>,
    started: Instant,
}

impl<'a> Report<'a> {
    pub(super) fn new(opts: &'a Options) -> Self {
        if !opts.json {
            println!("c2c check: probing the platform with {PROBE_A} and {PROBE_B}");
        }
        Report {
            opts,
            out: vec![],
            started: Instant::now(),
        }
    }

    fn wanted(&self, name: &str) -> bool {
        name == "probes"
            || ((self.opts.only.is_empty() || self.opts.only.iter().any(|o| o == name))
                && !self.opts.skip.iter().any(|s| s == name))
    }

    fn record(&mut self, o: Outcome) {
        if !self.opts.json {
            let mark = if o.ok { "✓" } else { "✗" };
            match &o.reason {
                None => println!("  {mark} {} ({} ms) {}", o.name, o.ms, o.detail),
                Some(r) => println!("  {mark} {} ({} ms): {r}", o.name, o.ms),
            }
        }
        self.out.push(o);
    }

    /// Runs `f` as check `name` (unless not wanted); its value when it passed.
    pub(super) fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String)>,
    ) -> Option<T> {
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_millis() as u64;
        match r {
            Ok((v, detail)) => {
                self.record(Outcome {
                    name,
                    ok: true,
                    ms,
                    reason: None,
                    detail,
                });
                Some(v)
            }
            Err(e) => {
                self.record(Outcome {
                    name,
                    ok: false,
                    ms,
                    reason: Some(format!("{e:#}")),
                    detail: String::new(),
                });
                None
            }
        }
    }

    /// A check that says what it saw; None when it did not run or failed.
    pub(super) fn step_if(
        &mut self,
        go: bool,
        name: &'static str,
        f: impl FnOnce() -> Result<String>,
    ) -> Option<()> {
        if !self.wanted(name) {
            return Some(());
        }
        if !go {
            self.not_run(name, "interrupted");
            return None;
        }
        self.step(name, || f().map(|d| ((), d)))
    }

    pub(super) fn passed_as(&mut self, name: &'static str, detail: &str) {
        if self.wanted(name) {
            self.record(Outcome {
                name,
                ok: true,
                ms: 0,
                reason: None,
                detail: detail.into(),
            });
        }
    }

    pub(super) fn not_run(&mut self, name: &str, why: &str) {
        let Some(name) = CHECKS.iter().find(|c| **c == name) else {
            return;
        };
        if self.wanted(name) {
            self.record(Outcome {
                name,
                ok: false,
                ms: 0,
                reason: Some(format!("not run: {why}")),
                detail: String::new(),
            });
        }
    }

    pub(super) fn note(&self, text: &str) {
        if !self.opts.json {
            println!("  {text}");
        }
    }

    /// Prints the summary (or the JSON); whether every check passed.
    pub(super) fn finish(self) -> bool {
        let ok = self.out.iter().all(|o| o.ok);
        let failed = self.out.iter().filter(|o| !o.ok).count();
        if self.opts.json {
            println!(
                "{}",
                serde_json::json!({"ok": ok, "checks": self.out, "ms": self.started.elapsed().as_millis() as u64})
            );
        } else {
            println!(
                "{} of {} checks passed in {} ms{}",
                self.out.len() - failed,
                self.out.len(),
                self.started.elapsed().as_millis(),
                if ok { "" } else { "; see the reasons above" }
            );
        }
        ok
    }
}
