//! ROOT TESTS: policy rules applied with nftables inside a cell namespace, checked the
//! way a user notices them: a refused connection, then an accepted one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use c2c_integration::topo::*;
use c2c_shim::netns::run_in;
use c2c_shim::rules::{self, Allow, CellRules, Local};

fn apply(cell: &Netns, text: &str) {
    let text = text.to_string();
    run_in(&cell.path(), move || rules::apply(&text))
        .unwrap()
        .unwrap();
}

#[test]
fn root_default_deny_then_policy_allows_only_its_source() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf("10.255.1.0/24", data.path());
    let cell = Netns::new("cell");
    let (a, b, c) = (Netns::new("ctr"), Netns::new("ctr"), Netns::new("ctr"));
    let ip_a = add(&cell, &a, "a", &conf);
    let ip_b = add(&cell, &b, "b", &conf);
    let ip_c = add(&cell, &c, "c", &conf);
    let locals = vec![
        Local {
            ip: ip_a,
            app_guid: "app-a".into(),
        },
        Local {
            ip: ip_b,
            app_guid: "app-b".into(),
        },
        Local {
            ip: ip_c,
            app_guid: "app-c".into(),
        },
    ];
    let tags = BTreeMap::from([
        ("app-a".into(), 1),
        ("app-b".into(), 2),
        ("app-c".into(), 3),
    ]);
    let subnet = "10.255.1.0/24".parse().unwrap();
    let cell_rules = |locals: &[Local]| CellRules {
        subnet,
        containers: locals.iter().map(|l| l.ip).collect(),
        peers: vec!["192.0.2.2".parse().unwrap()],
        peer_leases: vec![(
            "192.0.2.2".parse().unwrap(),
            "10.255.2.0/24".parse().unwrap(),
        )],
        remote_sources: vec![(
            "192.0.2.2".parse().unwrap(),
            "10.255.2.5".parse().unwrap(),
            1,
        )],
        egress: vec![],
        host_ports: vec![],
        log_c2c: false,
    };
    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    let to_b = SocketAddr::new(ip_b.into(), 8080);

    apply(
        &cell,
        &rules::ruleset(&cell_rules(&locals), &locals, &tags, &[]),
    );
    let refused = fetch(&a, to_b).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );

    let policy = Allow {
        source: "app-a".into(),
        destination: "app-b".into(),
        protocol: c2c_api::net::Protocol::Tcp,
        ports: c2c_api::net::PortRange::single(8080).unwrap(),
    };
    apply(
        &cell,
        &rules::ruleset(
            &cell_rules(&locals),
            &locals,
            &tags,
            std::slice::from_ref(&policy),
        ),
    );
    assert_eq!(fetch(&a, to_b).unwrap(), format!("b saw {ip_a}"));
    assert_eq!(
        fetch(&c, to_b).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "app-c has no policy"
    );

    // Re-applying is harmless: one table, replaced whole.
    apply(
        &cell,
        &rules::ruleset(
            &cell_rules(&locals),
            &locals,
            &tags,
            std::slice::from_ref(&policy),
        ),
    );
    let tables = cell.exec("nft", &["list", "tables"]);
    assert_eq!(tables.matches("table ip c2c").count(), 1, "{tables}");

    // Container b leaves and the policy goes: its elements are gone, a is refused again.
    apply(
        &cell,
        &rules::ruleset(&cell_rules(&locals[..1]), &locals[..1], &tags, &[]),
    );
    let table = cell.exec("nft", &["list", "table", "ip", "c2c"]);
    assert!(!table.contains(&ip_b.to_string()), "{table}");
    assert_eq!(
        fetch(&a, to_b).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

/// ROOT: a ruleset change that moves set elements only goes in as those elements
/// ([`rules::delta`]); the kernel then holds what the whole ruleset would have given, through
/// a run of changes: policies added and removed (single ports and ranges), an app's tag
/// changed (a map's value), security-group egress ranges moved (interval concatenations).
#[test]
fn root_a_change_of_elements_leaves_what_the_whole_ruleset_would() {
    if !require_root() {
        return;
    }
    use c2c_api::asg::Allowed;
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    let locals = vec![
        Local {
            ip: ip("10.255.1.2"),
            app_guid: "app-a".into(),
        },
        Local {
            ip: ip("10.255.1.3"),
            app_guid: "app-b".into(),
        },
    ];
    let allow = |port: u16, end: u16| Allow {
        source: "app-a".into(),
        destination: "app-b".into(),
        protocol: c2c_api::net::Protocol::Tcp,
        ports: c2c_api::net::PortRange::new(port, end).unwrap(),
    };
    let egress = |last: &str| rules::EgressRule {
        source: ip("10.255.1.2"),
        destinations: vec![(ip("192.0.2.0"), ip(last))],
        allowed: vec![Allowed::Tcp(80, 443)],
        group: "g".into(),
        log: false,
    };
    let script = |b_tag: u16, allows: &[Allow], last: &str| {
        let cell = CellRules {
            subnet: "10.255.1.0/24".parse().unwrap(),
            containers: locals.iter().map(|l| l.ip).collect(),
            peers: vec![ip("192.0.2.2")],
            peer_leases: vec![],
            remote_sources: vec![],
            egress: vec![egress(last)],
            host_ports: vec![],
            log_c2c: false,
        };
        let tags = BTreeMap::from([("app-a".into(), 1), ("app-b".into(), b_tag)]);
        rules::ruleset(&cell, &locals, &tags, allows)
    };
    let steps = [
        script(2, &[allow(8080, 8080)], "192.0.2.255"),
        script(2, &[allow(8080, 8080), allow(9000, 9100)], "192.0.2.255"),
        script(7, &[allow(9000, 9100), allow(7000, 7000)], "192.0.2.127"),
        script(7, &[], "192.0.2.127"),
    ];
    let followed = Netns::new("cell");
    apply(&followed, &steps[0]);
    for pair in steps.windows(2) {
        let d = rules::delta(&pair[0], &pair[1]).expect("elements only");
        assert!(!d.is_empty() && !d.contains("table ip c2c {"), "{d}");
        apply(&followed, &d);
        let whole = Netns::new("cell");
        apply(&whole, &pair[1]);
        let list = |n: &Netns| n.exec("nft", &["list", "table", "ip", "c2c"]);
        assert_eq!(list(&followed), list(&whole), "after {d}");
        // It is what the in-place check looks for.
        let gen = rules::generation(&pair[1]).unwrap();
        assert!(run_in(&followed.path(), move || rules::in_place(gen)).unwrap());
    }
}
