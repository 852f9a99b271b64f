//! Control replicas as processes: two `c2c control serve --database postgres://...` on one
//! PostgreSQL server this test starts, each with its own state dir holding copies of the
//! platform's files. What one replica writes, the other serves; a cell's client given both URLs
//! keeps watching, without missing a change, when the replica it watches is killed with
//! SIGKILL.

use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use c2c_api::Revision;
use c2c_testkit::pg_cluster::PgCluster;

mod support;
use support::Control;

#[test]
fn two_replicas_serve_one_platform_and_a_cell_fails_over() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    let db = pg.create_db("platform").unwrap();
    let a = Control::start_with(&["--database", &db]);
    let b = Control::start_replica(&a, &["--database", &db]);

    // Written through A, served by B.
    a.ok(&["create-app", "appa"]);
    a.ok(&["create-app", "appb"]);
    b.ok(&["add-network-policy", "appa", "appb"]);
    let table = a.ok(&["network-policies"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["appa", "appb", "tcp", "8080"])),
        "{table}"
    );
    assert_eq!(a.app_guid("appb"), b.app_guid("appb"));

    // A cell registered through B; its client knows both replicas, A first.
    let cert = b.cell_cert("cell1");
    let read = |f: &str| std::fs::read(cert.join(f)).unwrap();
    let client = Client::new(
        &format!("{},{}", a.url, b.url),
        &read("control-ca.pem"),
        Auth::ClientCert {
            cert_pem: read("cert.pem"),
            key_pem: read("key.pem"),
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lease = client
            .acquire_lease("cell1", "192.0.2.1".parse().unwrap())
            .await
            .unwrap();
        // appa runs on cell1, so the cell's view carries appa's policies.
        let guid = b.place("appa", "cell1", 0);
        let inst = c2c_api::Instance {
            guid,
            app_guid: a.app_guid("appa").as_str().into(),
            index: 0,
            cell: "cell1".parse().unwrap(),
            ip: std::net::Ipv4Addr::from(u32::from(lease.subnet.network()) + 2),
        };
        client.confirm_instance("cell1", &inst).await.unwrap();
        let v = client.watch("cell1", Revision(0), 1).await.unwrap();
        assert_eq!(client.url(), a.url, "the first URL is watched first");

        // The replica it watches dies; the agent's loop (retry after 100 ms) goes on with B.
        let mut a = a;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(a.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = a.child.wait();
        let killed = Instant::now();
        b.ok(&[
            "add-network-policy",
            "appb",
            "appa",
            "--protocol",
            "udp",
            "--port",
            "53",
        ]);
        let mut rev = v.revision;
        let got = loop {
            assert!(killed.elapsed() < Duration::from_secs(10), "no view from B");
            match client.watch("cell1", rev, 5).await {
                Ok(v) if v.revision > rev => {
                    rev = v.revision;
                    if v.policies.iter().any(|p| p.ports.start() == 53) {
                        break v;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let after = killed.elapsed();
        assert_eq!(client.url(), b.url);
        assert!(!got.policies.is_empty());
        eprintln!("watching B, with the change made after A died, {after:?} after the kill");
        assert!(after < Duration::from_secs(2), "failover took {after:?}");
    });
}

#[test]
fn an_embedded_platform_moves_to_postgres_and_keeps_its_identities() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    let db = pg.create_db("moved").unwrap();
    let mut single = Control::start();
    single.ok(&["create-app", "appa"]);
    single.ok(&["create-app", "appb"]);
    single.ok(&["add-network-policy", "appa", "appb"]);
    let cert = single.cell_cert("cell1");
    let guid = single.app_guid("appb");
    let o = single.c2c(&["token", "create", "dev", "--app", "appa"]);
    let dev_token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    // Stop control, then move its state.
    let _ = single.child.kill();
    let _ = single.child.wait();
    let out = single.ok(&["control", "migrate", "--to", &db]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["apps", "2", "rows"])),
        "{out}"
    );
    assert!(out.contains("policies"), "{out}");
    let o = single.c2c(&["control", "migrate", "--to", &db]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a platform"));

    // A replica on PostgreSQL with the same platform files: same GUIDs, policies, tokens, and
    // the cell's certificate still accepted.
    let replica = Control::start_replica(&single, &["--database", &db]);
    assert_eq!(replica.app_guid("appb"), guid);
    let table = replica.ok(&["network-policies"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["appa", "appb", "tcp", "8080"])),
        "{table}"
    );
    let o = replica.c2c_as(Some(&dev_token), &["network-policies"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("as dev"));
    let (code, _) = replica.as_cell(
        &cert,
        &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.9"}"#],
        "/v1/cells/cell1/lease",
    );
    assert_eq!(code, 200);
}
