//! ROOT TESTS: two cells joined by the VXLAN overlay (cells are namespaces on an underlay bridge
//! in its own namespace), containers wired by `c2c-cni`, and the GBP mark carried across.

use std::net::SocketAddr;

use c2c_integration::topo::*;
use c2c_shim::netlink::Netlink;
use c2c_shim::netns::block_on_in;
use c2c_shim::vtep::{self, Change, Remote, Vtep, VtepConfig};

fn ensure(cell: &Cell, cfg: &VtepConfig) -> Vtep {
    let cfg = cfg.clone();
    block_on_in(&cell.ns.path(), move || async move {
        vtep::ensure(&Netlink::open().unwrap(), &cfg).await
    })
    .unwrap()
    .unwrap()
}

fn converge(cell: &Cell, cfg: &VtepConfig, remotes: &[Remote]) -> Vec<Change> {
    let (cfg, remotes) = (cfg.clone(), remotes.to_vec());
    block_on_in(&cell.ns.path(), move || async move {
        vtep::converge(&Netlink::open().unwrap(), &cfg, &remotes).await
    })
    .unwrap()
    .unwrap()
}

/// Packet count of the first rule in `chain` of `table` whose text contains `needle`.
fn counter(cell: &Cell, table: &str, chain: &str, needle: &str) -> u64 {
    let out = cell.ns.exec(
        "iptables",
        &["-w", "-t", table, "-L", chain, "-v", "-x", "-n"],
    );
    let line = out
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle} in {out}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn root_two_cells_over_vxlan_carry_the_gbp_mark() {
    if !require_root() {
        return;
    }
    let underlay = Underlay::new();
    let (c1, c2) = (underlay.cell(1), underlay.cell(2));
    let cfg1 = VtepConfig::new(c1.underlay_ip, "10.255.1.0/24".parse().unwrap());
    let cfg2 = VtepConfig::new(c2.underlay_ip, "10.255.2.0/24".parse().unwrap());
    let v1 = ensure(&c1, &cfg1);
    assert!(v1.created);
    assert_eq!(v1.mtu, 1450, "underlay 1500 - 50");
    assert!(!ensure(&c1, &cfg1).created, "ensure is idempotent");
    ensure(&c2, &cfg2);
    let details = c1.ns.ip(&["-d", "link", "show", "silk-vtep"]);
    for want in [
        "vxlan id 1",
        "local 192.0.2.1",
        "dstport 4789",
        "nolearning",
        "gbp",
        "mtu 1450",
    ] {
        assert!(details.contains(want), "{want} missing from {details}");
    }

    let all = [
        Remote {
            underlay_ip: c1.underlay_ip,
            subnet: cfg1.subnet,
        },
        Remote {
            underlay_ip: c2.underlay_ip,
            subnet: cfg2.subnet,
        },
    ];
    let first = converge(&c1, &cfg1, &all);
    assert_eq!(
        first.len(),
        3,
        "route + neighbour + fdb for cell 2: {first:?}"
    );
    let again = converge(&c1, &cfg1, &all);
    assert!(
        again.is_empty(),
        "converging the same set twice changes nothing: {again:?}"
    );
    converge(&c2, &cfg2, &all);
    assert!(c1
        .ns
        .ip(&["route"])
        .contains("10.255.2.0/24 via 10.255.2.0 dev silk-vtep"));
    assert!(c1
        .ns
        .exec("bridge", &["fdb", "show", "dev", "silk-vtep"])
        .contains("ee:ee:0a:ff:02:00 dst 192.0.2.2"));

    // A container on each cell, wired by the plugin; its MTU follows the VTEP's.
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Netns::new("ctr"), Netns::new("ctr"));
    let conf1 = conf("10.255.1.0/24", d1.path());
    let ip_a = add(&c1.ns, &a, "a", &conf1);
    let ip_b = add(&c2.ns, &b, "b", &conf("10.255.2.0/24", d2.path()));
    assert!(a.ip(&["link", "show", "eth0"]).contains("mtu 1450"));

    // Mark what leaves container a on cell 1 (as policy will: the app's tag), count marks on cell 2.
    c1.ns.exec(
        "iptables",
        &[
            "-w",
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-s",
            &ip_a.to_string(),
            "-j",
            "MARK",
            "--set-mark",
            "0x2a",
        ],
    );
    for mark in ["0x2a", "0x0"] {
        let dst = ip_b.to_string();
        let rule = [
            "-w", "-A", "FORWARD", "-d", &dst, "-m", "mark", "--mark", mark, "-j", "ACCEPT",
        ];
        c2.ns.exec("iptables", &rule);
    }

    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    assert_eq!(
        fetch(&a, SocketAddr::new(ip_b.into(), 8080)).unwrap(),
        format!("b saw {ip_a}")
    );
    // Marks never cross namespaces on their own (veths scrub them): only the GBP header
    // carries 0x2a from cell 1 to cell 2.
    assert!(
        counter(&c2, "filter", "FORWARD", "mark match 0x2a") > 0,
        "marked packets arrived"
    );
    assert_eq!(
        counter(&c2, "filter", "FORWARD", "mark match 0x0"),
        0,
        "no packet lost its mark"
    );

    // Cell 2 leaves: converging without it removes its route, neighbour and FDB entry.
    let gone = converge(&c1, &cfg1, &all[..1]);
    assert_eq!(gone.len(), 3, "{gone:?}");
    assert!(!c1.ns.ip(&["route"]).contains("10.255.2.0"));
    assert!(!c1
        .ns
        .exec("bridge", &["fdb", "show", "dev", "silk-vtep"])
        .contains("192.0.2.2"));
    assert!(fetch(&a, SocketAddr::new(ip_b.into(), 8080)).is_err());
}

#[test]
fn root_vtep_follows_a_new_lease_and_refuses_a_missing_underlay() {
    if !require_root() {
        return;
    }
    let underlay = Underlay::new();
    let c1 = underlay.cell(1);
    let cfg = VtepConfig::new(c1.underlay_ip, "10.255.1.0/24".parse().unwrap());
    ensure(&c1, &cfg);
    let moved = VtepConfig::new(c1.underlay_ip, "10.255.9.0/24".parse().unwrap());
    ensure(&c1, &moved);
    let addrs = c1.ns.ip(&["addr", "show", "silk-vtep"]);
    assert!(
        addrs.contains("10.255.9.0/32") && !addrs.contains("10.255.1.0"),
        "{addrs}"
    );
    assert!(addrs.contains("ee:ee:0a:ff:09:00"), "{addrs}");

    let wrong = VtepConfig::new("192.0.2.99".parse().unwrap(), cfg.subnet);
    let err = block_on_in(&c1.ns.path(), move || async move {
        vtep::ensure(&Netlink::open().unwrap(), &wrong).await
    })
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("192.0.2.99"), "{err}");
}
