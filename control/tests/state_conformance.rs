//! The state layer's conformance suite (`c2c_testkit::conformance`) on both engines: every
//! scenario on SQLite, and against a real PostgreSQL server this test starts, one fresh
//! database per scenario. Then two stores on one database, as two
//! replicas: a change written through one is read, with its revision, through the other.

use c2c_control::state::State;
use c2c_testkit::conformance::{scenarios, OVERLAY};
use c2c_testkit::pg_cluster::PgCluster;

#[test]
fn every_scenario_on_sqlite() {
    for (name, run) in scenarios() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        let open = |overlay, ttl| State::open(&path, overlay, ttl).unwrap();
        eprintln!("sqlite: {name}");
        run(&open);
    }
}

#[test]
fn every_scenario_on_postgres() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    for (i, (name, run)) in scenarios().into_iter().enumerate() {
        let url = pg.create_db(&format!("conf{i}")).unwrap();
        eprintln!("postgres: {name}");
        let open = |overlay, ttl| State::open_postgres(&url, overlay, ttl).unwrap();
        run(&open);
    }
}

#[test]
fn two_replicas_share_one_state_and_migrate_once() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    let url = pg.create_db("shared").unwrap();
    // Both start together: the migration runs once, under the writers' lock.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| State::open_postgres(&url, OVERLAY, 60));
        let b = s.spawn(|| State::open_postgres(&url, OVERLAY, 60));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let (mut a, mut b) = (a, b);
    let before = b.revision().unwrap();
    let app = a.create_app("appa").unwrap();
    assert!(b.revision().unwrap() > before);
    assert_eq!(b.app("appa").unwrap(), app);
    // Tags come from one space, whichever replica allocates them, even when racing.
    let names: Vec<String> = (0..20).map(|i| format!("app{i}")).collect();
    std::thread::scope(|s| {
        let (na, nb) = names.split_at(10);
        let ha = s.spawn(|| {
            na.iter()
                .map(|n| a.create_app(n).unwrap().tag)
                .collect::<Vec<_>>()
        });
        let hb = s.spawn(|| {
            nb.iter()
                .map(|n| b.create_app(n).unwrap().tag)
                .collect::<Vec<_>>()
        });
        let mut tags = ha.join().unwrap();
        tags.extend(hb.join().unwrap());
        tags.sort();
        assert_eq!(tags, (2..=21).collect::<Vec<u16>>());
    });
}

#[test]
fn migrate_moves_a_whole_platform_from_sqlite_to_postgres() {
    use c2c_api::net::PortRange;
    use c2c_api::types::Scope;
    use c2c_control::state::Policy;
    let dir = tempfile::tempdir().unwrap();
    let mut src = State::open(&dir.path().join("state.db"), OVERLAY, 60).unwrap();
    let a = src.create_app("appa").unwrap();
    let b = src.create_app("appb").unwrap();
    src.create_tag("router-guid", "router").unwrap();
    src.register_cell("cell1", "ab12").unwrap();
    let lease = src
        .acquire_lease("cell1", "192.0.2.1".parse().unwrap())
        .unwrap();
    let placed = src.place_instance(b.guid.as_str(), "cell1", None).unwrap();
    let ip = std::net::Ipv4Addr::from(u32::from(lease.subnet.network()) + 2);
    src.confirm_instance("cell1", &placed.guid, b.guid.as_str(), 0, ip)
        .unwrap();
    src.place_instance_by(
        a.guid.as_str(),
        "cell1",
        Some(3),
        Some("podman 3f2a9c1b0d2e"),
    )
    .unwrap();
    for port in [8080, 9000] {
        src.add_policies(&[Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: "tcp".parse().unwrap(),
            ports: PortRange::new(port, port + 5).unwrap(),
        }])
        .unwrap();
    }
    src.create_domain("corp.internal").unwrap();
    src.map_route(b.guid.as_str(), "apps.internal", "appb")
        .unwrap();
    let token = src
        .create_token("dev", Scope::Write, &["appa".into()])
        .unwrap();
    // A space grant, a space's own quota and a cell's tag group move too.
    let org = src.create_org("o").unwrap();
    src.create_space(&org.guid, "dev").unwrap();
    src.grant_spaces("dev", &["o/dev".parse().unwrap()])
        .unwrap();
    src.set_space_quota("o", "dev", Some(7), Some(9), Some(11))
        .unwrap();
    src.create_tag_by("lb-guid", "router", Some("cell1"))
        .unwrap();
    // An unused join token (its NULL use columns cross into BIGINT ones) moves too.
    let join = src.create_join_token(3600, Some("cell9")).unwrap();

    let pg = PgCluster::start().expect("start PostgreSQL");
    let url = pg.create_db("migrated").unwrap();
    let mut dst = State::open_postgres(&url, OVERLAY, 60).unwrap();
    let moved = c2c_control::migrate::migrate(&src, &mut dst).unwrap();
    let count = |t: &str| moved.iter().find(|(n, _)| *n == t).unwrap().1;
    assert_eq!(
        (
            count("apps"),
            count("policies"),
            count("instances"),
            count("tokens")
        ),
        (2, 2, 2, 1)
    );

    // Everything reads back the same.
    assert_eq!(dst.apps().unwrap(), src.apps().unwrap());
    assert_eq!(dst.policies(None).unwrap(), src.policies(None).unwrap());
    assert_eq!(dst.placements(None).unwrap(), src.placements(None).unwrap());
    assert!(dst
        .placements(None)
        .unwrap()
        .iter()
        .any(|p| p.runtime.as_deref() == Some("podman 3f2a9c1b0d2e")));
    assert_eq!(dst.leases().unwrap(), src.leases().unwrap());
    assert_eq!(dst.routes().unwrap(), src.routes().unwrap());
    assert_eq!(dst.domains().unwrap(), src.domains().unwrap());
    assert_eq!(dst.cells().unwrap(), src.cells().unwrap());
    assert_eq!(dst.tags().unwrap(), src.tags().unwrap());
    assert_eq!(dst.users().unwrap(), src.users().unwrap());
    assert!(dst.cell_identity_ok("cell1", "ab12").unwrap());
    let hash = c2c_control::tokens::sha256_hex(token.token.as_bytes());
    assert_eq!(dst.caller(&hash).unwrap(), src.caller(&hash).unwrap());
    assert_eq!(dst.space_quotas().unwrap(), src.space_quotas().unwrap());
    dst.check_join_token(&join.secret, "cell9").unwrap();
    assert_eq!(dst.join_tokens().unwrap(), src.join_tokens().unwrap());
    // The group's owner came along: removing its cell frees its tag there too.
    dst.remove_cell("cell1").unwrap();
    assert!(!dst.tags().unwrap().iter().any(|t| t.id == "lb-guid"));
    assert_eq!(
        dst.policies_last_updated().unwrap(),
        src.policies_last_updated().unwrap()
    );
    assert!(dst.revision().unwrap() > src.revision().unwrap());
    // The platform goes on: a new app gets the next free tag (the router holds 3).
    assert_eq!(dst.create_app("appc").unwrap().tag, 4);
    // Into a database that already holds a platform: refused, nothing changed.
    let again = c2c_control::migrate::migrate(&src, &mut dst);
    assert!(
        matches!(again, Err(c2c_control::state::StateError::Conflict(_))),
        "{again:?}"
    );
    assert_eq!(dst.apps().unwrap().len(), 3);
}
