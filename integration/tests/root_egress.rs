//! ROOT TEST: egress under security groups, end to end with the real binaries. A host on the
//! underlay (a namespace of its own at 192.0.2.200) serves TCP 8000 and 9000 and UDP 5300; a
//! container of an app in space o1/dev and one of an app in the default space run on one cell.
//! Nothing outside the overlay is reachable until a security group allows it, and then only
//! what it names, from the cell's underlay address (NAT); changes are enforced on the running
//! containers without a restart. Run as root (CI does); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

fn refused(r: std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

fn wait(what: &str, ok: impl FnMut() -> bool) -> Duration {
    wait_until(what, Duration::from_secs(15), ok)
}

fn ping(ns: &Netns) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c1", "-W1", "-q"])
        .arg(OUTSIDE.to_string())
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn root_egress_follows_security_groups() {
    if !require_root() {
        return;
    }
    let p = Platform::start(1);
    let outside = p.underlay.cell(200);
    serve(
        &outside.ns,
        SocketAddr::new(OUTSIDE.into(), 8000),
        "ext8000",
    );
    serve(
        &outside.ns,
        SocketAddr::new(OUTSIDE.into(), 9000),
        "ext9000",
    );
    serve_udp(
        &outside.ns,
        SocketAddr::new(OUTSIDE.into(), 5300),
        "ext5300",
    );
    let (to8000, to9000, to5300) = (
        SocketAddr::new(OUTSIDE.into(), 8000),
        SocketAddr::new(OUTSIDE.into(), 9000),
        SocketAddr::new(OUTSIDE.into(), 5300),
    );
    // The cell itself reaches the host: the path exists; only the rules stand in between.
    assert!(fetch(&p.cells[0].ns, to8000).is_ok());

    p.c2c(&["create-org", "o1"]);
    p.c2c(&["create-space", "dev", "-o", "o1"]);
    p.c2c(&["create-app", "web", "-o", "o1", "-s", "dev"]);
    p.c2c(&["create-app", "other"]);
    let (web, _) = p.container(1, "web", 0);
    let (other, _) = p.container(1, "other", 0);

    // Default deny, failing fast: a reset, not a timeout.
    assert!(refused(fetch(&web, to8000)), "egress before any group");
    assert!(!ping(&web));

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, rules: serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, rules.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    // CF's validation, CF's words; nothing is created.
    let bad = file(
        "bad.json",
        serde_json::json!([{"protocol": "tcp", "destination": "10.0.0.300", "ports": "80"}]),
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &p.underlay.ns.name])
        .arg(c2c_integration::bin("c2c"))
        .args(["--state-dir", p.dir.path().join("state").to_str().unwrap()])
        .args(["create-security-group", "bad", &bad])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Rules[0]: destination must be a valid CIDR, IP address, or IP address range"),
        "{err}"
    );
    assert!(!p.c2c(&["security-groups"]).contains("bad"));

    let ext = file(
        "ext.json",
        serde_json::json!([
            {"protocol": "tcp", "destination": "192.0.2.200", "ports": "8000"},
            {"protocol": "icmp", "destination": "192.0.2.0/24", "type": 8, "code": -1}
        ]),
    );
    p.c2c(&["create-security-group", "ext", &ext]);
    let out = p.c2c(&["bind-security-group", "ext", "o1", "--space", "dev"]);
    assert!(
        out.contains("Assigning running security group ext to space dev in org o1 as admin..."),
        "{out}"
    );
    // Allowed, with the cell's underlay address as the source the host sees.
    wait("web reaches the host on 8000", || {
        fetch(&web, to8000).is_ok_and(|s| s == "ext8000 saw 192.0.2.1")
    });
    assert!(ping(&web), "the ICMP rule");
    // Only what the group names: another port, another space.
    assert!(refused(fetch(&web, to9000)));
    assert!(refused(fetch(&other, to8000)), "an app in another space");
    assert!(!ping(&other));

    // Ports as a list, then as a range: the running container follows each update.
    let list = file(
        "list.json",
        serde_json::json!([{"protocol": "tcp", "destination": "192.0.2.200", "ports": "8000, 9000"}]),
    );
    p.c2c(&["update-security-group", "ext", &list]);
    wait("the list opens 9000", || fetch(&web, to9000).is_ok());
    assert!(fetch(&web, to8000).is_ok());
    assert!(!ping(&web), "the ICMP rule is gone");
    let range = file(
        "range.json",
        serde_json::json!([{"protocol": "tcp", "destination": "192.0.2.0-192.0.2.255", "ports": "8500-9500"}]),
    );
    p.c2c(&["update-security-group", "ext", &range]);
    wait("the range closes 8000", || refused(fetch(&web, to8000)));
    assert!(fetch(&web, to9000).is_ok());

    // A staging binding is not enforced on running apps; a running default reaches every space.
    let dns = file(
        "udp.json",
        serde_json::json!([{"protocol": "udp", "destination": "192.0.2.200", "ports": "5300"}]),
    );
    p.c2c(&["create-security-group", "udp", &dns]);
    p.c2c(&[
        "bind-security-group",
        "udp",
        "o1",
        "--space",
        "dev",
        "--lifecycle",
        "staging",
    ]);
    p.c2c(&["bind-staging-security-group", "udp"]);
    // Proof the cell has applied a revision past both staging bindings: a later change to a
    // running group (8000 opened again) is enforced; only then is UDP's refusal meaningful.
    let wider = file(
        "wider.json",
        serde_json::json!([{"protocol": "tcp", "destination": "192.0.2.0-192.0.2.255", "ports": "8000-9500"}]),
    );
    p.c2c(&["update-security-group", "ext", &wider]);
    wait("the wider range opens 8000", || fetch(&web, to8000).is_ok());
    assert!(
        ask_udp(&web, to5300).is_err(),
        "staging bindings do not apply to running apps"
    );
    p.c2c(&["bind-running-security-group", "udp"]);
    wait("web asks the host over UDP", || {
        ask_udp(&web, to5300).is_ok_and(|s| s == "ext5300 saw 192.0.2.1")
    });
    wait("other asks the host over UDP", || {
        ask_udp(&other, to5300).is_ok()
    });
    let listed = p.c2c(&["running-security-groups"]);
    assert!(listed.lines().any(|l| l == "udp"), "{listed}");
    let shown = p.c2c(&["security-group", "ext"]);
    assert!(
        shown.contains("o1") && shown.contains("dev") && shown.contains("running"),
        "{shown}"
    );

    // Unbind: refused again, without a restart of anything.
    p.c2c(&["unbind-security-group", "ext", "o1", "dev"]);
    wait("unbinding closes 9000", || refused(fetch(&web, to9000)));
    p.c2c(&["unbind-running-security-group", "udp"]);
    wait("unbinding closes UDP", || ask_udp(&other, to5300).is_err());
    p.c2c(&["delete-security-group", "ext", "-f"]);
    assert!(!p.c2c(&["security-groups"]).contains("ext "));
    // The cell's DNS stays reachable whatever the groups say (no group allows UDP 53).
    assert!(
        dns_answers(&web),
        "the cell's DNS from a container without any group"
    );
}

/// Whether the cell's DNS (the container's gateway, port 53) answers a query for a name in
/// the internal domain (NXDOMAIN is an answer).
fn dns_answers(ns: &Netns) -> bool {
    let route = ns.ip(&["-4", "route", "show", "default"]);
    let gw: Ipv4Addr = route
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no default route: {route}"));
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["nothing", "apps", "internal"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    spawn_in(&ns.path(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.send_to(&q, (gw, 53)).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        Some(n >= 12 && buf[..2] == [0x12, 0x34] && buf[2] & 0x80 != 0)
    })
    .join()
    .unwrap()
    .unwrap_or(false)
}
