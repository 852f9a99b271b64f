//! The API answered in-process: requests go straight to `api::handle` with a real SQLite state
//! and real issuers, no TLS or sockets, so every status code and message is cheap to check.

mod support;

use c2c_control::api::Peer;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Api, TOKEN};

#[test]
fn the_external_api_needs_the_token_and_speaks_cf() {
    let api = Api::new();
    let path = "/networking/v1/external/policies";
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("bearer wrong"),
        Some("Basic t0ken"),
    ] {
        let (code, body) = api.call(Method::GET, path, auth, None, None);
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    // As CF's policy server: the cf CLI's lower-case `bearer` (UAA's token type) and a bare
    // token are accepted too.
    for auth in [format!("bearer {TOKEN}"), TOKEN.to_string()] {
        let (code, body) = api.call(Method::GET, path, Some(&auth), None, None);
        assert_eq!(code, StatusCode::OK, "{auth}: {body}");
    }
    assert_eq!(
        api.admin(Method::GET, path, None),
        (StatusCode::OK, json!({"total_policies": 0, "policies": []}))
    );
    let (code, body) = api.admin(Method::GET, "/networking/v2/external/policies", None);
    assert_eq!(code, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(body["error"], "api version 'v2' not supported");
    let (code, body) = api.admin(Method::GET, "/v1/nope", None);
    assert_eq!(
        (code, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no such endpoint: /v1/nope"))
    );

    // CF's validation messages, as the policy server words them.
    let post = |dst: Value| {
        api.admin(
            Method::POST,
            path,
            Some(json!({"policies": [{"source": {"id": "a"}, "destination": dst}]})),
        )
    };
    for (dst, want) in [
        (
            json!({"id": "b", "protocol": "icmp", "ports": {"start": 1, "end": 1}}),
            "mapper: validate policies: invalid destination protocol, specify either udp or tcp",
        ),
        (
            json!({"id": "b", "protocol": "tcp", "ports": {"start": 9, "end": 8}}),
            "mapper: validate policies: invalid port range 9-8, start must be less than or equal to end",
        ),
        (
            json!({"protocol": "tcp", "ports": {"start": 1, "end": 1}}),
            "mapper: validate policies: missing destination id",
        ),
    ] {
        let (code, body) = post(dst);
        assert_eq!(
            (code, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(want))
        );
    }
    let (code, body) =
        post(json!({"id": "b", "protocol": "tcp", "ports": {"start": 80, "end": 80}}));
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("one or more applications cannot be found or accessed"));

    // Apps, routes, domains and their errors.
    let (code, app) = api.admin(Method::POST, "/v1/apps", Some(json!({"name": "appb"})));
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(app["tag"], 1);
    let again = api.admin(Method::POST, "/v1/apps", Some(json!({"name": "appb"})));
    assert_eq!(again.0, StatusCode::CONFLICT);
    let (code, body) = api.admin(Method::POST, "/v1/apps", Some(json!({"nom": "x"})));
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("body must be {\"name\": \"...\"}"),
        "{body}"
    );
    let route = |domain: &str| {
        api.admin(
            Method::POST,
            "/v1/routes",
            Some(json!({"app": "appb", "domain": domain, "hostname": "appb"})),
        )
    };
    assert_eq!(route("example.com").0, StatusCode::BAD_REQUEST);
    assert_eq!(
        route("apps.internal"),
        (StatusCode::OK, json!({"changed": true}))
    );
    let (code, body) = api.admin(
        Method::POST,
        "/v1/domains",
        Some(json!({"name": "localhost"})),
    );
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}

#[test]
fn the_cell_api_answers_only_the_registered_certificate_of_its_cell() {
    let api = Api::new();
    let cell1 = api.cell("cell1");
    let watch = "/v1/cells/cell1/watch?after=0&timeout=0";
    let as_cell = |method: Method, path: &str, peer: &Peer, body: Option<Value>| {
        api.call(method, path, None, Some(peer), body)
    };
    // No certificate, the token, another cell's identity: refused.
    assert_eq!(
        api.call(Method::GET, watch, None, None, None).0,
        StatusCode::FORBIDDEN
    );
    let token = format!("Bearer {TOKEN}");
    assert_eq!(
        api.call(Method::GET, watch, Some(&token), None, None).0,
        StatusCode::FORBIDDEN
    );
    let cell2 = api.cell("cell2");
    assert_eq!(
        as_cell(Method::GET, watch, &cell2, None).0,
        StatusCode::FORBIDDEN
    );
    // A certificate with the right name from the cell issuer that control did not register
    // (an old one, say): refused.
    let stray = {
        let pair = api
            .pki
            .cells
            .issue(&c2c_certs::LeafRequest {
                common_name: "cell1".into(),
                sans: c2c_certs::SanSet::new(["cell1"], []).unwrap(),
                ttl: std::time::Duration::from_secs(60),
                key: Default::default(),
                usage: c2c_certs::Usage::Client,
            })
            .unwrap();
        let der = c2c_certs::info::first_der_from_pem(pair.cert_pem.as_bytes()).unwrap();
        Peer::from_der(&der).unwrap()
    };
    assert_eq!(
        as_cell(Method::GET, watch, &stray, None).0,
        StatusCode::FORBIDDEN
    );
    // Positive control.
    let (code, view) = as_cell(Method::GET, watch, &cell1, None);
    assert_eq!(code, StatusCode::OK, "{view}");
    // The lease, then an instance placed with the token and confirmed by its own cell only.
    let (code, lease) = as_cell(
        Method::POST,
        "/v1/cells/cell1/lease",
        &cell1,
        Some(json!({"underlay_ip": "192.0.2.1"})),
    );
    assert_eq!(
        (code, lease["subnet"].as_str()),
        (StatusCode::OK, Some("10.255.0.0/24"))
    );
    api.admin(Method::POST, "/v1/apps", Some(json!({"name": "a"})));
    let (code, placed) = api.admin(
        Method::POST,
        "/v1/apps/a/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{placed}");
    let guid = placed["guid"].as_str().unwrap();
    let confirm = json!({"app_guid": placed["app_guid"], "index": 0, "ip": "10.255.0.3"});
    let path = format!("/v1/cells/cell1/instances/{guid}");
    let other = path.replace("cell1", "cell2");
    assert_eq!(
        as_cell(Method::PUT, &other, &cell2, Some(confirm.clone())).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        as_cell(Method::PUT, &path, &cell1, Some(confirm)).0,
        StatusCode::OK
    );
    let (_, view) = as_cell(Method::GET, watch, &cell1, None);
    assert_eq!(view["instances"][0]["ip"], "10.255.0.3");
    // A malformed CSR is the caller's fault (400); a revoked cell is refused from then on.
    let (code, _) = as_cell(
        Method::POST,
        &format!("{path}/certificate"),
        &cell1,
        Some(json!({"csr": "nope"})),
    );
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // The instance's identity (CF_INSTANCE_CERT): its own cell gets it, with names from
    // control's tables and the root to trust; another cell does not.
    let (_, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
    let (code, _) = as_cell(
        Method::POST,
        &format!("{other}/identity"),
        &cell2,
        Some(json!({"csr": csr})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN, "another cell's instance");
    let (code, signed) = as_cell(
        Method::POST,
        &format!("{path}/identity"),
        &cell1,
        Some(json!({"csr": csr})),
    );
    assert_eq!(code, StatusCode::OK, "{signed}");
    assert!(signed["root_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::from_pem_slice(
        signed["cert_pem"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let id = c2c_certs::Identity::from_der(&leaf).unwrap();
    assert_eq!(
        (id.instance_guid.as_str(), id.app_guid.as_str()),
        (guid, placed["app_guid"].as_str().unwrap())
    );
    assert_eq!(
        id.spiffe_id,
        format!("spiffe://c2c.internal/app/{}", id.app_guid)
    );
    assert_eq!(
        api.admin(Method::DELETE, "/v1/cells/cell1", None).0,
        StatusCode::OK
    );
    assert_eq!(
        as_cell(Method::GET, watch, &cell1, None).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.admin(Method::DELETE, "/v1/cells/cell1", None).0,
        StatusCode::NOT_FOUND
    );
}

/// Reads `r` line by line onto a channel, on `rt`.
fn forward_lines(
    rt: &tokio::runtime::Runtime,
    r: tokio::io::DuplexStream,
) -> std::sync::mpsc::Receiver<String> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let mut lines = tokio::io::BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line that is not a heartbeat, within 5 s.
fn next_view(rx: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("no watch line within 5 s");
        if !l.is_empty() {
            return l;
        }
    }
}

fn ended_within(task: &tokio::task::JoinHandle<()>, within: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if task.is_finished() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn a_cell_cannot_hold_watch_streams_open_by_not_reading_or_by_opening_many() {
    use c2c_control::api::Budget;
    use c2c_control::watch_stream::write_views;
    use std::time::{Duration, Instant};
    let limit = Duration::from_millis(300);
    let api = Api::with(|ctx| {
        ctx.with_budget(Budget {
            watch_write: limit,
            ..Budget::default()
        })
    });
    let (cell1, cell2) = (api.cell("cell1"), api.cell("cell2"));
    api.app("appa");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stream = |peer: &Peer, pipe: usize| {
        let (r, w) = tokio::io::duplex(pipe);
        let task = rt.spawn(write_views(
            w,
            api.ctx.clone(),
            peer.clone(),
            c2c_api::Revision(0),
        ));
        (r, task)
    };

    // The attack: a cell opens a stream and never reads it. Its first view does not fit the
    // pipe, so the write waits; the stream is closed at the limit, not held for ever.
    let started = Instant::now();
    let (_unread, stuck) = stream(&cell1, 64);
    // Positive control: a cell that reads keeps its stream past the limit and gets changes.
    let (r, live) = stream(&cell2, 1 << 20);
    let live_lines = forward_lines(&rt, r);
    assert!(next_view(&live_lines).contains("appa"));
    assert!(
        ended_within(&stuck, Duration::from_secs(5)),
        "a stream nobody reads was kept"
    );
    assert!(started.elapsed() >= limit, "closed before the limit");
    std::thread::sleep(3 * limit);
    assert!(!live.is_finished(), "a reading cell lost its stream");
    api.app("appb");
    assert!(next_view(&live_lines).contains("appb"));

    // The attack: one cell opens stream after stream (each parked, each reading). It holds
    // two at most; each newer one closes the oldest.
    let (r3, s3) = stream(&cell2, 1 << 20);
    let l3 = forward_lines(&rt, r3);
    next_view(&l3);
    assert!(!live.is_finished(), "two streams of a cell are allowed");
    let (r4, s4) = stream(&cell2, 1 << 20);
    let l4 = forward_lines(&rt, r4);
    next_view(&l4);
    assert!(
        ended_within(&live, Duration::from_secs(5)),
        "a third stream of one cell left the oldest open"
    );
    assert_eq!(api.ctx.open_watch_streams("cell2"), 2);
    // The two newest still get changes; the other cell's streams are not touched by any of it.
    let (r5, s5) = stream(&cell1, 1 << 20);
    let l5 = forward_lines(&rt, r5);
    next_view(&l5);
    api.app("appc");
    for l in [&l3, &l4, &l5] {
        assert!(next_view(l).contains("appc"));
    }
    assert!(!s3.is_finished() && !s4.is_finished() && !s5.is_finished());
    assert_eq!(api.ctx.open_watch_streams("cell1"), 1);
}

/// A flow as a cell reports it.
fn flow(src: (&str, &str), dst: (&str, &str), verdict: &str) -> Value {
    json!({
        "time": "2026-12-05T10:00:00.000Z", "kind": "c2c", "verdict": verdict, "protocol": "tcp",
        "source": {"ip": "10.255.0.1", "port": 40000, "app": src.0, "app_guid": src.1},
        "destination": {"ip": "10.255.1.1", "port": 8080, "app": dst.0, "app_guid": dst.1},
        // What a cell says of itself is not taken: control names the cell.
        "cell": "someone-else", "seq": 12345,
    })
}

#[test]
fn flows_are_reported_by_their_own_cell_and_read_only_by_who_may_read_their_apps() {
    let api = Api::new();
    let (ga, gb, gc) = (api.app("appa"), api.app("appb"), api.app("appc"));
    let cell1 = api.cell("cell1");
    let cell2 = api.cell("cell2");
    let report = |path: &str, peer: Option<&Peer>, flows: Vec<Value>| {
        api.call(
            Method::POST,
            path,
            None,
            peer,
            Some(json!({ "flows": flows, "dropped": 0 })),
        )
    };
    let a_to_b = flow(("appa", &ga), ("appb", &gb), "deny");
    let c_to_c = flow(("appc", &gc), ("appc", &gc), "accept");
    // Attacks: no certificate, the admin's token, another cell's certificate.
    assert_eq!(
        report("/v1/cells/cell1/flows", None, vec![a_to_b.clone()]).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            Method::POST,
            "/v1/cells/cell1/flows",
            Some(&format!("Bearer {TOKEN}")),
            None,
            Some(json!({ "flows": [a_to_b.clone()] })),
        )
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        report("/v1/cells/cell1/flows", Some(&cell2), vec![a_to_b.clone()]).0,
        StatusCode::FORBIDDEN
    );
    // A report past the budget, or with a field past its bound, is refused whole.
    let flood = vec![a_to_b.clone(); c2c_api::types::MAX_FLOWS_PER_BATCH + 1];
    assert_eq!(
        report("/v1/cells/cell1/flows", Some(&cell1), flood).0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let mut long = a_to_b.clone();
    long["source"]["app"] = json!("x".repeat(100_000));
    assert_eq!(
        report("/v1/cells/cell1/flows", Some(&cell1), vec![long]).0,
        StatusCode::BAD_REQUEST
    );
    let (code, all) = api.admin(Method::GET, "/v1/flows", None);
    assert_eq!(
        (code, all["flows"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    // Positive control: each cell reports its own.
    let (code, kept) = report("/v1/cells/cell1/flows", Some(&cell1), vec![a_to_b]);
    assert_eq!(
        (code, kept["kept"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{kept}"
    );
    assert_eq!(
        report("/v1/cells/cell2/flows", Some(&cell2), vec![c_to_c]).0,
        StatusCode::OK
    );
    let (_, all) = api.admin(Method::GET, "/v1/flows", None);
    let cells: Vec<&str> = all["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["cell"].as_str().unwrap())
        .collect();
    assert_eq!(cells, ["cell1", "cell2"], "{all}");
    assert_eq!(all["flows"][0]["seq"], 1);
    // Narrowed by the query.
    let (_, denied) = api.admin(Method::GET, "/v1/flows?verdict=deny&to=appb", None);
    assert_eq!(denied["flows"].as_array().unwrap().len(), 1, "{denied}");
    let (code, _) = api.admin(Method::GET, "/v1/flows?verdict=maybe", None);
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (_, after) = api.admin(Method::GET, "/v1/flows?after=1", None);
    assert_eq!(after["flows"][0]["seq"], 2, "{after}");
    // Counted for Prometheus: two taken (the refused reports are not).
    let text = api.rt.block_on(c2c_control::metrics_http::encode(&api.ctx));
    assert!(
        text.contains("c2c_control_flows_received_total 2\n"),
        "{text}"
    );
    // A user of appb reads flows into appb, and nothing of appc's, also when it asks by name.
    let alice = format!("Bearer {}", api.token("alice", "network.write", &["appb"]));
    let as_alice = |path: &str| api.call(Method::GET, path, Some(&alice), None, None);
    let (code, mine) = as_alice("/v1/flows");
    assert_eq!(code, StatusCode::OK);
    let apps: Vec<&str> = mine["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["destination"]["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["appb"], "{mine}");
    assert!(as_alice("/v1/flows?from=appc").1["flows"]
        .as_array()
        .unwrap()
        .is_empty());
    // A read-only token without apps: nothing.
    let bob = format!("Bearer {}", api.token("bob", "network.write", &[]));
    let (_, none) = api.call(Method::GET, "/v1/flows", Some(&bob), None, None);
    assert!(none["flows"].as_array().unwrap().is_empty(), "{none}");
}
