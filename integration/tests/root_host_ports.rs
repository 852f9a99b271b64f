//! ROOT TEST: host ports into containers (CNI's `portMappings` capability), end to end with the
//! real binaries: a container of an app on cell1 asks for host ports 18080 -> 8080/tcp and
//! 18053 -> 5300/udp; from the underlay they reach the container with the client's own address,
//! and nothing else of the container does: not an unmapped port, not the mapped port addressed
//! to the container directly (an underlay host that routes to the overlay). A second container
//! cannot take a host port that is held; CHECK sees the mappings in the kernel; DEL removes
//! them. Run as root (CI does); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

const CELL1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn refused(r: std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

fn wait(what: &str, ok: impl FnMut() -> bool) -> Duration {
    wait_until(what, Duration::from_secs(15), ok)
}

/// The cell's CNI config with `runtimeConfig` for instance `index` of `app` and `mappings`.
fn conf(p: &Platform, app: &str, guid: &str, mappings: serde_json::Value) -> String {
    let mut conf: serde_json::Value =
        c2c_api::cni_list::read_plugin_config(&p.cni_conf_path(1)).unwrap();
    assert_eq!(conf["capabilities"]["portMappings"], true, "{conf}");
    conf["runtimeConfig"] = serde_json::json!({
        "app_guid": p.app_guid(app), "instance_index": 0, "instance_guid": guid,
        "portMappings": mappings,
    });
    conf.to_string()
}

fn cni_env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
    ]
}

/// Apps `web` and `other`; web/0 on cell1 (container "web-0") with host ports 18080 -> 8080/tcp
/// and 18053 -> 5300/udp, served: its namespace, address and CNI config.
fn web_on_cell1(p: &Platform) -> (Netns, Ipv4Addr, String) {
    p.c2c(&["create-app", "web"]);
    p.c2c(&["create-app", "other"]);
    let guid = p.place(1, "web", 0);
    let ctr = Netns::new("ctr");
    let web_conf = conf(
        p,
        "web",
        &guid,
        serde_json::json!([
            {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp", "hostIP": ""},
            {"hostPort": 18053, "containerPort": 5300, "protocol": "udp"}
        ]),
    );
    let ip = add(&p.cells[0].ns, &ctr, "web-0", &web_conf);
    serve(&ctr, SocketAddr::new(ip.into(), 8080), "web");
    serve_udp(&ctr, SocketAddr::new(ip.into(), 5300), "web-udp");
    (ctr, ip, web_conf)
}

#[test]
fn root_host_ports_reach_only_what_is_mapped() {
    if !require_root() {
        return;
    }
    let p = Platform::start(1);
    let u = &p.underlay.ns;
    let (ctr, ip, web_conf) = web_on_cell1(&p);
    serve(&ctr, SocketAddr::new(ip.into(), 9090), "secret");

    // From the underlay (control's host, 192.0.2.254): the mapped ports, the client's address
    // kept (no SNAT on the way in).
    wait("18080 reaches the container's 8080", || {
        fetch(u, SocketAddr::new(CELL1.into(), 18080)).is_ok_and(|s| s == "web saw 192.0.2.254")
    });
    assert_eq!(
        ask_udp(u, SocketAddr::new(CELL1.into(), 18053)).unwrap(),
        "web-udp saw 192.0.2.254"
    );
    // Nothing that was not mapped.
    assert!(refused(fetch(u, SocketAddr::new(CELL1.into(), 19090))));
    // An underlay host that routes to the overlay through the cell (the attack: skip the
    // host port, go straight to the container): refused on every port, the mapped one too.
    let subnet = {
        let c: serde_json::Value =
            c2c_api::cni_list::read_plugin_config(&p.cni_conf_path(1)).unwrap();
        c["subnet"].as_str().unwrap().to_string()
    };
    u.ip(&["route", "add", &subnet, "via", &CELL1.to_string()]);
    assert!(
        refused(fetch(u, SocketAddr::new(ip.into(), 9090))),
        "an unmapped container port"
    );
    assert!(
        refused(fetch(u, SocketAddr::new(ip.into(), 8080))),
        "not through the host port"
    );
    // The mapping still works beside the refused direct path.
    assert!(fetch(u, SocketAddr::new(CELL1.into(), 18080)).is_ok());

    // CHECK sees the mappings forwarded.
    let path = ctr.path();
    let netns = path.to_str().unwrap();
    let check = cni(&p.cells[0].ns, &cni_env("CHECK", "web-0", netns), &web_conf);
    assert!(check.ok, "CHECK: {} {}", check.json, check.stderr);

    // Another container cannot take a held host port; the refusal leaks nothing.
    let guid2 = p.place(1, "other", 0);
    let ctr2 = Netns::new("ctr");
    let other_conf = conf(
        &p,
        "other",
        &guid2,
        serde_json::json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]),
    );
    let p2 = ctr2.path();
    let clash = cni(
        &p.cells[0].ns,
        &cni_env("ADD", "other-0", p2.to_str().unwrap()),
        &other_conf,
    );
    assert!(!clash.ok);
    assert!(
        clash.json["details"]
            .as_str()
            .unwrap_or_default()
            .contains("host port 18080->8080/tcp is taken"),
        "{}",
        clash.json
    );
    // The cell's own ports cannot be taken: VXLAN from the other cells, the containers' DNS.
    for (port, proto) in [(4789, "udp"), (53, "udp"), (53, "tcp")] {
        let own = conf(
            &p,
            "other",
            &guid2,
            serde_json::json!([{"hostPort": port, "containerPort": 8080, "protocol": proto}]),
        );
        let r = cni(
            &p.cells[0].ns,
            &cni_env("ADD", "other-0", p2.to_str().unwrap()),
            &own,
        );
        assert!(!r.ok, "{port}/{proto} was taken");
        assert!(
            r.json["details"]
                .as_str()
                .unwrap_or_default()
                .contains("is the cell's own"),
            "{}",
            r.json
        );
    }
    let bad = conf(
        &p,
        "other",
        &guid2,
        serde_json::json!([{"hostPort": 0, "containerPort": 8080}]),
    );
    let bad = cni(
        &p.cells[0].ns,
        &cni_env("ADD", "other-0", p2.to_str().unwrap()),
        &bad,
    );
    assert!(!bad.ok && bad.json["code"] == 7, "{}", bad.json);

    // A container of the cell does not get in through a host port (no way around policy).
    let guid3 = p.place(1, "other", 1);
    let ctr3 = Netns::new("ctr");
    let mut plain: serde_json::Value =
        c2c_api::cni_list::read_plugin_config(&p.cni_conf_path(1)).unwrap();
    plain["runtimeConfig"] = serde_json::json!({
        "app_guid": p.app_guid("other"), "instance_index": 1, "instance_guid": guid3,
    });
    add(&p.cells[0].ns, &ctr3, "other-1", &plain.to_string());
    assert!(refused(fetch(&ctr3, SocketAddr::new(CELL1.into(), 18080))));

    // DEL removes the mappings.
    let del = cni(&p.cells[0].ns, &cni_env("DEL", "web-0", netns), &web_conf);
    assert!(del.ok, "DEL: {} {}", del.json, del.stderr);
    wait("DEL closes 18080", || {
        fetch(u, SocketAddr::new(CELL1.into(), 18080)).is_err()
    });
}

/// The network address of cell `n`'s lease: its VTEP's overlay address.
fn vtep_ip(p: &Platform, n: u8) -> Ipv4Addr {
    let c: serde_json::Value = c2c_api::cni_list::read_plugin_config(&p.cni_conf_path(n)).unwrap();
    let subnet = c["subnet"].as_str().unwrap();
    subnet.split('/').next().unwrap().parse().unwrap()
}

/// Issue #23, item 1: a container on another cell reached cell1's host ports at cell1's VTEP
/// overlay address (the DNAT matched every local address, and the ingress chain accepted any
/// DNATed packet before looking at its tag). Now nothing that arrives over VXLAN or from a
/// container is forwarded to a host port, and a DNATed packet passes default deny only when it
/// came from outside the overlay; the underlay path and policies still work beside it.
#[test]
fn root_host_ports_are_no_way_in_from_the_overlay() {
    if !require_root() {
        return;
    }
    let p = Platform::start(2);
    let u = &p.underlay.ns;
    let (_ctr, web_ip, _) = web_on_cell1(&p);
    let (far, far_ip) = p.container(2, "other", 0);
    let (near, _) = p.container(1, "other", 1);
    let vtep1 = vtep_ip(&p, 1);

    // Positive control: the underlay reaches the host ports (so the mappings are in force).
    wait("18080 reaches the container from the underlay", || {
        fetch(u, SocketAddr::new(CELL1.into(), 18080)).is_ok_and(|s| s == "web saw 192.0.2.254")
    });
    assert_eq!(
        ask_udp(u, SocketAddr::new(CELL1.into(), 18053)).unwrap(),
        "web-udp saw 192.0.2.254"
    );

    // The attack: from cell2's container to cell1's VTEP overlay address, TCP and UDP.
    let r = fetch(&far, SocketAddr::new(vtep1.into(), 18080));
    assert!(
        r.is_err(),
        "cell2's container reached a host port over VXLAN: {r:?}"
    );
    let r = ask_udp(&far, SocketAddr::new(vtep1.into(), 18053));
    assert!(
        r.is_err(),
        "cell2's container reached a UDP host port over VXLAN: {r:?}"
    );
    // The same from a container on cell1 (its own cell's VTEP address, and the underlay one).
    let r = fetch(&near, SocketAddr::new(vtep1.into(), 18080));
    assert!(
        r.is_err(),
        "a same-cell container reached a host port: {r:?}"
    );
    assert!(refused(fetch(&near, SocketAddr::new(CELL1.into(), 18080))));
    // And from cell2's container to cell1's underlay address: no security group, no egress.
    assert!(refused(fetch(&far, SocketAddr::new(CELL1.into(), 18080))));
    // The underlay path still works after the attacks.
    assert!(fetch(u, SocketAddr::new(CELL1.into(), 18080)).is_ok());

    // Positive control: a policy opens the container's port to cell2's app, on the overlay
    // address, with its tag; the host port over VXLAN stays closed.
    p.allow("other", "web", "tcp", "8080");
    wait("the policy lets cell2's container in", || {
        fetch(&far, SocketAddr::new(web_ip.into(), 8080))
            .is_ok_and(|s| s == format!("web saw {far_ip}"))
    });
    assert!(fetch(&far, SocketAddr::new(vtep1.into(), 18080)).is_err());
}
