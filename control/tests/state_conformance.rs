//! The state layer's conformance suite on PostgreSQL: every scenario of
//! `c2c_control::conformance` (run on SQLite by the crate's unit tests) against a real server
//! this test starts, one fresh database per scenario. Then two stores on one database, as two
//! replicas: a change written through one is read, with its revision, through the other.

use c2c_control::conformance::{scenarios, OVERLAY};
use c2c_control::pg_cluster::PgCluster;
use c2c_control::state::State;

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
