//! ROOT TEST: the policy workflow end to end with the real binaries. Control runs in the
//! underlay namespace, a `c2c-agent` in each of two cells, containers are wired by `c2c-cni`
//! with the config the agent wrote, and the user runs the `c2c` CLI. Run as root (CI does);
//! `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::net::SocketAddr;
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

fn refused(r: std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn wait(what: &str, ok: impl FnMut() -> bool) -> Duration {
    wait_until(what, Duration::from_secs(15), ok)
}

/// Two cells: appa on cell1, appb on cell2 and on cell1 (index 1), appc on cell2; each appb
/// instance serves TCP 8080 and UDP 5005.
struct Setup {
    p: Platform,
    a: Netns,
    c: Netns,
    ip_b: std::net::Ipv4Addr,
    to_b: SocketAddr,
    to_b1: SocketAddr,
    /// appb's two containers: removed (by their Drop) when the test ends.
    _b: (Netns, Netns),
}

fn setup() -> Setup {
    let p = Platform::start(2);
    for app in ["appa", "appb", "appc"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _ip_a) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    let (b1, ip_b1) = p.container(1, "appb", 1);
    let (c, _) = p.container(2, "appc", 0);
    for (ns, ip) in [(&b, ip_b), (&b1, ip_b1)] {
        serve(ns, SocketAddr::new(ip.into(), 8080), "appb");
        serve_udp(ns, SocketAddr::new(ip.into(), 5005), "appb");
    }
    Setup {
        _b: (b, b1),
        a,
        c,
        ip_b,
        to_b: SocketAddr::new(ip_b.into(), 8080),
        to_b1: SocketAddr::new(ip_b1.into(), 8080),
        p,
    }
}

fn policy(p: &Platform, verb: &str, src: &str, proto: &str, port: &str) {
    p.c2c(&[verb, src, "appb", "--protocol", proto, "--port", port]);
}

#[test]
fn root_policy_allows_only_its_source_across_and_within_cells() {
    if !require_root() {
        return;
    }
    let Setup {
        p,
        a,
        c,
        ip_b,
        to_b,
        to_b1,
        _b,
    } = setup();

    // Default deny, across cells and on the same cell.
    wait("appa -> appb refused", || refused(fetch(&a, to_b)));
    assert!(refused(fetch(&a, to_b1)), "same cell is denied too");

    policy(&p, "add-network-policy", "appa", "tcp", "8080");
    let took = wait("appa -> appb allowed", || fetch(&a, to_b).is_ok());
    eprintln!("policy add -> enforced across cells in {took:?}");
    assert!(fetch(&a, to_b).unwrap().starts_with("appb saw 10.255."));
    wait("appa -> appb same cell", || fetch(&a, to_b1).is_ok());
    assert!(refused(fetch(&c, to_b)), "appc has no policy");
    assert!(
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_err(),
        "udp not allowed yet"
    );

    // UDP and port ranges.
    policy(&p, "add-network-policy", "appa", "udp", "5000-5010");
    wait("udp 5005 allowed", || {
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok()
    });

    // Removing the policy blocks again.
    policy(&p, "remove-network-policy", "appa", "tcp", "8080");
    wait("appa -> appb refused again", || refused(fetch(&a, to_b)));
    assert!(
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok(),
        "the udp policy stays"
    );
}

#[test]
fn root_enforcement_outlives_flushes_agent_and_control_restarts() {
    if !require_root() {
        return;
    }
    let Setup {
        mut p,
        a,
        c,
        ip_b,
        to_b,
        _b,
        ..
    } = setup();
    policy(&p, "add-network-policy", "appa", "udp", "5000-5010");
    wait("udp 5005 allowed", || {
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok()
    });
    assert!(refused(fetch(&c, to_b)));

    // Rules flushed by hand come back on the resync.
    p.cells[1]
        .ns
        .exec("nft", &["flush", "chain", "ip", "c2c", "ingress"]);
    let r = fetch(&c, to_b);
    assert!(
        r.is_ok(),
        "with the chain flushed nothing is enforced: {r:?} {}",
        p.cells[1].ns.exec("nft", &["list", "ruleset"])
    );
    wait("flushed chain restored", || refused(fetch(&c, to_b)));

    // The agent stopping leaves enforcement in place; a new agent carries on.
    p.agents[1].stop();
    assert!(refused(fetch(&c, to_b)), "still denied with the agent down");
    assert!(
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok(),
        "still allowed with the agent down"
    );
    p.start_agent(2);
    policy(&p, "add-network-policy", "appc", "tcp", "8080");
    wait("appc -> appb allowed by the restarted agent", || {
        fetch(&c, to_b).is_ok()
    });
    assert!(refused(fetch(&a, to_b)));

    // Control restarts (crash, upgrade): enforcement never lapses, state is kept, and the
    // agents follow the new process as soon as it listens.
    p.restart_control();
    assert!(fetch(&c, to_b).is_ok(), "allowed across the restart");
    assert!(
        p.c2c(&["network-policies"]).contains("appc"),
        "policies kept"
    );
    policy(&p, "remove-network-policy", "appc", "tcp", "8080");
    wait("removal after the restart enforced", || {
        refused(fetch(&c, to_b))
    });
}
