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
