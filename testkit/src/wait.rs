//! Waiting for a condition, in tests: poll until it holds, or fail naming what was awaited.

use std::time::{Duration, Instant};

/// Polls `ok` until it is true; panics naming `what` after `timeout`. Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    eventually(timeout, || ok().then_some(()))
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"));
    t.elapsed()
}

/// Polls `check` every 20 ms until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
