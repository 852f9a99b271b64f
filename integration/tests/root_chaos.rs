//! ROOT TEST: the chaos soak (`c2c_integration::chaos`), two minutes by default
//! (`C2C_SOAK_SECS` sets it; `bench/chaos.sh` runs 30). Probes between apps across cells while
//! the policy between them churns, apps come and go with routes and policies, and agents, a
//! control replica and PostgreSQL are killed, paused or restarted, cells cut apart and a
//! sidecar killed (TLS probes go through it the whole soak): no probe
//! may disagree with the policy outside the convergence window, except on a cell while a fault
//! stops its agent or cuts it off; at the end the database is consistent and, once the
//! platform is gone, nothing of it is left on the host.

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
        r.faults.len() == 6,
        "not every kind of fault was injected: {:?}",
        r.faults
    );
    assert!(r.app_cycles > 3, "too few app cycles: {}", r.app_cycles);
    assert!(r.violations.is_empty(), "{}", r.text());
    assert!(r.inconsistencies.is_empty(), "{}", r.text());
    assert!(r.leaks.is_empty(), "{}", r.text());
}
