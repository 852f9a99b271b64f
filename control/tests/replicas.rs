//! Two control replicas on one PostgreSQL database, in-process (the API router of each over its
//! own connection, each following the database's revision): a cell's watch parked on replica B
//! wakes for a policy written through replica A, also when the followers' connections are cut
//! at the moment of the write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_control::api::{self, Ctx, Peer, Signers};
use c2c_control::state::State;
use c2c_testkit::conformance::OVERLAY;
use c2c_testkit::pg_cluster::PgCluster;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0ken";

fn replica(url: &str, pki_dir: &std::path::Path) -> Arc<Ctx> {
    let (pki, _) = c2c_certs::Pki::open_or_create(pki_dir).unwrap();
    let state = State::open_postgres(url, OVERLAY, 60).unwrap();
    Arc::new(Ctx::new(state, TOKEN.into()).unwrap().with_signers(
        Signers {
            cells: pki.cells,
            instances: pki.instances,
            root_pem: pki.root.cert_pem().to_string(),
        },
        Duration::from_secs(3600),
    ))
}

async fn call(
    ctx: &Arc<Ctx>,
    m: Method,
    path: &str,
    peer: Option<&Peer>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(m)
        .uri(path)
        .header("authorization", format!("bearer {TOKEN}"))
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let r = api::handle(req, ctx, peer).await;
    let status = r.status();
    let raw = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

#[test]
fn a_watch_on_one_replica_wakes_for_a_change_through_the_other() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    let url = pg.create_db("replicas").unwrap();
    let pki = tempfile::tempdir().unwrap();
    // The platform's files, shared by both replicas (an operator copies ca/ to each).
    let (a, b) = (replica(&url, pki.path()), replica(&url, pki.path()));
    let stop = CancellationToken::new();
    let followers = [
        c2c_control::replicas::follow(url.clone(), a.clone(), stop.clone()),
        c2c_control::replicas::follow(url.clone(), b.clone(), stop.clone()),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A cell registered through A is known to B: one registry.
        let (_key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
        let (code, signed) = call(&a, Method::POST, "/v1/cells", None, Some(json!({"name": "cell1", "csr": csr}))).await;
        assert_eq!(code, StatusCode::OK, "{signed}");
        let der = c2c_certs::info::first_der_from_pem(signed["cert_pem"].as_str().unwrap().as_bytes()).unwrap();
        let cell = Peer::from_der(&der).unwrap();
        let (code, lease) = call(&b, Method::POST, "/v1/cells/cell1/lease", Some(&cell), Some(json!({"underlay_ip": "192.0.2.1"}))).await;
        assert_eq!(code, StatusCode::OK, "{lease}");
        let (_, x) = call(&a, Method::POST, "/v1/apps", None, Some(json!({"name": "appa"}))).await;
        let (_, y) = call(&a, Method::POST, "/v1/apps", None, Some(json!({"name": "appb"}))).await;
        // Place and confirm an instance of appb on cell1 so the cell's view carries its policies.
        let (code, placed) = call(&a, Method::POST, "/v1/apps/appb/instances", None, Some(json!({"cell": "cell1", "index": 0}))).await;
        assert_eq!(code, StatusCode::CREATED, "{placed}");
        let guid = placed["guid"].as_str().unwrap().to_string();
        let (code, body) = call(&b, Method::PUT, &format!("/v1/cells/cell1/instances/{guid}"), Some(&cell), Some(json!({"app_guid": y["guid"], "index": 0, "ip": "10.255.0.2"}))).await;
        assert_eq!(code, StatusCode::OK, "{body}");

        for round in 0..4u16 {
            // Park a watch on B at its current revision (waiting until B has caught up).
            let deadline = Instant::now() + Duration::from_secs(5);
            while b.current_revision() < a.current_revision() {
                assert!(Instant::now() < deadline, "B never caught up");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let rev = b.current_revision().0;
            let b2 = b.clone();
            let cell2 = cell.clone();
            let watch = tokio::spawn(async move {
                let t = Instant::now();
                let r = call(&b2, Method::GET, &format!("/v1/cells/cell1/watch?after={rev}&timeout=30"), Some(&cell2), None).await;
                (t.elapsed(), r)
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!watch.is_finished(), "the watch returned before any change");
            let port: u16 = 8080 + round;
            let policy = json!({"policies": [{"source": {"id": x["guid"]}, "destination": {"id": y["guid"], "protocol": "tcp", "ports": {"start": port, "end": port}}}]});
            if round == 3 {
                // The followers' connections are cut just before the write: whether a follower
                // is back in time to hear its notification or re-reads the revision when it
                // reconnects, the change arrives.
                let admin_url = pg.url("postgres");
                let n = tokio::task::spawn_blocking(move || {
                    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap();
                    admin
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                            &[&c2c_control::replicas::APPLICATION_NAME],
                        )
                        .unwrap()
                        .len()
                })
                .await
                .unwrap();
                assert_eq!(n, 2, "one follower connection per replica");
            }
            let t = Instant::now();
            let (code, _) = call(&a, Method::POST, "/networking/v1/external/policies", None, Some(policy)).await;
            assert_eq!(code, StatusCode::OK);
            let (_, (code, view)) = watch.await.unwrap();
            let woke = t.elapsed();
            assert_eq!(code, StatusCode::OK);
            assert!(view["revision"].as_u64().unwrap() > rev);
            let ports: Vec<u64> = view["policies"].as_array().unwrap().iter().map(|p| p["start"].as_u64().unwrap()).collect();
            assert!(ports.contains(&u64::from(port)), "{view}");
            // The notification, not the watch's 30 s timeout, woke it.
            assert!(woke < Duration::from_secs(5), "woke after {woke:?}");
            eprintln!("round {round}: the change through A reached the watch on B in {woke:?}");
        }
        // B counted what it followed, and how late each notification came.
        let text = c2c_control::metrics_http::encode(&b).await;
        let count = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}")) as u64
        };
        assert!(count("c2c_control_revisions_followed_total ") >= 4, "{text}");
        assert!(count("c2c_control_notify_lag_seconds_count ") >= 3, "{text}");
    });
    stop.cancel();
    for f in followers {
        f.join().unwrap();
    }
}

/// PostgreSQL restarts (stopped as a crash would, started again): the state's next call connects
/// anew and succeeds, reads and writes alike, without control restarting; before, every call
/// failed with "connection closed" until it did. Dropping the state on a thread that drives
/// tokio tasks (where control's last handle on it may go) does not panic.
#[test]
fn the_state_connects_again_after_postgres_restarts() {
    let pg = PgCluster::start().expect("start PostgreSQL");
    let url = pg.create_db("restart").unwrap();
    // The test cluster commits without waiting for its log (fast); a crash then loses what
    // was acknowledged. This database waits, as a production server does.
    pg.execute("ALTER DATABASE restart SET synchronous_commit = on")
        .unwrap();
    let mut state = State::open_postgres(&url, OVERLAY, 60).unwrap();
    state.create_app("before").unwrap();

    pg.restart(Duration::from_millis(100))
        .expect("restart PostgreSQL");
    let names: Vec<String> = state.apps().unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["before"]);
    state.create_app("after").unwrap();
    assert_eq!(state.apps().unwrap().len(), 2);

    // Restarted again, the next call is a write.
    pg.restart(Duration::from_millis(100))
        .expect("restart PostgreSQL");
    state.create_app("after-second").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move { tokio::spawn(async move { drop(state) }).await })
        .expect("dropping the state in a task");
}
