//! ROOT TEST: the chaos soak (`c2c_integration::chaos`), two minutes by default
//! (`C2C_SOAK_SECS` sets it; `bench/chaos.sh` runs 30). Probes between apps across cells while
//! the policy between them churns and agents and a control replica are killed or paused: no
//! probe may disagree with the policy outside the convergence window, except on a cell while a
//! fault stops its agent.

use std::time::Duration;

use c2c_integration::topo::require_root;

#[test]
fn root_chaos_soak_keeps_every_invariant() {
    if !require_root() {
        return;
    }
    let secs: u64 = std::env::var("C2C_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("C2C_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000_001);
    let r = c2c_integration::chaos::soak(Duration::from_secs(secs), seed);
    eprintln!("{}", r.text());
    assert!(r.probes > 1000, "too few probes: {}", r.probes);
    assert!(r.changes > 10, "too few policy changes: {}", r.changes);
    assert!(
        r.faults.values().sum::<u32>() >= 3,
        "too few faults: {:?}",
        r.faults
    );
    assert!(r.violations.is_empty(), "{}", r.text());
}
