//! Control replicas as processes: two `c2c control serve --database postgres://...` on one
//! PostgreSQL server this test starts, each with its own state dir holding copies of the
//! platform's files. What one replica writes, the other serves; a cell's client given both URLs
//! keeps watching, without missing a change, when the replica it watches is killed with
//! SIGKILL.

use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client};
use c2c_api::Revision;
use c2c_control::pg_cluster::PgCluster;

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
