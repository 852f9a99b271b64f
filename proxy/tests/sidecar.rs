//! End-to-end tests of the real `c2c-proxy` binary with a real rustls client.

mod support;

use std::time::Duration;

use c2c_certs::ca::LeafKey;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// A CA, a cert for appb.apps.internal, and a sidecar with it in front of `upstream`.
async fn appb_sidecar(upstream: std::net::SocketAddr, extra: &[&str]) -> (Pki, Proxy) {
    let pki = Pki::new();
    pki.rotate(&["appb.apps.internal"]);
    let proxy = Proxy::simple(&pki.cert_dir(), upstream, extra);
    (pki, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_by_route_name_over_tls12_and_tls13_and_without_sni() {
    let (pki, proxy) = appb_sidecar(echo_backend().await, &[]).await;

    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let cfg = client_config(&pki.ca_pem(), versions);
        let mut s = tls_connect_with(proxy.addr(), "appb.apps.internal", cfg)
            .await
            .unwrap();
        let expect = versions[0].version;
        assert_eq!(s.get_ref().1.protocol_version(), Some(expect));
        assert_eq!(
            roundtrip(&mut s, b"hello through the sidecar").await,
            b"hello through the sidecar"
        );
    }
    // An IP server name makes rustls send no SNI; the same cert is served and verifies by IP SAN.
    let mut s = tls_connect(proxy.addr(), "127.0.0.1", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"no sni").await, b"no sni");
    // A name the cert does not carry fails verification on the client.
    let err = tls_connect(proxy.addr(), "appc.apps.internal", &pki.ca_pem())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // So does a client trusting another CA.
    let other = Pki::new();
    assert!(
        tls_connect(proxy.addr(), "appb.apps.internal", &other.ca_pem())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_new_sans_without_restart_and_keeps_open_connections() {
    let (pki, mut proxy) = appb_sidecar(echo_backend().await, &[]).await;
    let pid = proxy.pid();

    let mut open = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut open, b"before").await, b"before");
    assert!(
        tls_connect(proxy.addr(), "appb-v2.apps.internal", &pki.ca_pem())
            .await
            .is_err()
    );

    let new = pki.rotate(&["appb.apps.internal", "appb-v2.apps.internal"]);
    let want = leaf_fingerprint(&new);
    let ca = pki.ca_pem();
    eventually_handshake(
        proxy.addr(),
        "appb-v2.apps.internal",
        &ca,
        true,
        "new SAN served to new handshakes",
    )
    .await;
    let mut s = tls_connect(proxy.addr(), "appb-v2.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(peer_fingerprint(&s), want);
    assert_eq!(roundtrip(&mut s, b"new").await, b"new");

    // The connection opened before the rotation still works, on the same process.
    assert_eq!(
        roundtrip(&mut open, b"after rotation").await,
        b"after rotation"
    );
    assert_eq!(proxy.pid(), pid);
    assert!(proxy.is_running());
    assert_eq!(proxy.served_fingerprint(), want);
    assert!(proxy.metric("c2c_proxy_cert_reloads_total{result=\"ok\"") >= 1.0);

    // Unmapping a route removes the name the same way.
    pki.rotate(&["appb.apps.internal"]);
    eventually_handshake(
        proxy.addr(),
        "appb-v2.apps.internal",
        &ca,
        false,
        "removed SAN no longer served",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_without_a_directory_event() {
    let pki = Pki::new();
    pki.rotate(&["appb.apps.internal"]);
    // A debounce longer than the test, so only SIGHUP can explain the reload.
    let proxy = Proxy::simple(
        &pki.cert_dir(),
        echo_backend().await,
        &["--reload-debounce", "1h"],
    );
    // The start-up reload (which catches a pair written while the watch was being set up)
    // runs after ready: wait for it, or it can pick up the rewrite below before SIGHUP does.
    eventually(T, "the start-up reload", || {
        proxy.metric("c2c_proxy_cert_reloads_total{result=\"unchanged\"") >= 1.0
    });
    // Rewritten in place inside the current generation (a subdirectory the watch does not
    // cover), so no event reaches the proxy: only SIGHUP can explain the reload.
    let new = pki.issue(&["appb.apps.internal", "hup.apps.internal"]);
    let gen = pki
        .cert_dir()
        .join(std::fs::read_link(pki.cert_dir().join(c2c_certs::pair::DATA_LINK)).unwrap());
    std::fs::write(gen.join("cert.pem"), &new.cert_pem).unwrap();
    std::fs::write(gen.join("key.pem"), &new.key_pem).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let want = leaf_fingerprint(&new);
    assert_ne!(
        proxy.served_fingerprint(),
        want,
        "nothing told the proxy yet"
    );
    proxy.signal("HUP");
    eventually(T, "SIGHUP reload", || proxy.served_fingerprint() == want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_pair_is_served_without_waiting_for_the_debounce() {
    let pki = Pki::new();
    pki.rotate(&["appb.apps.internal"]);
    // The `..data` swap commits a complete pair: it is loaded at once, whatever the debounce
    // (an hour here, far beyond the test's patience) and the timer (also an hour).
    let proxy = Proxy::simple(
        &pki.cert_dir(),
        echo_backend().await,
        &["--reload-debounce", "1h", "--reload-interval", "1h"],
    );
    for names in [
        &["appb.apps.internal", "v2.apps.internal"][..],
        &["appb.apps.internal"][..],
    ] {
        let want = leaf_fingerprint(&pki.rotate(names));
        eventually(T, "commit reload", || proxy.served_fingerprint() == want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_pair_is_refused_and_the_last_good_one_kept() {
    let pki = Pki::new();
    let dir = pki.cert_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Plain files, rewritten in place: the case atomic writers avoid and the proxy must survive.
    let good = pki.issue(&["appb.apps.internal"]);
    std::fs::write(dir.join("cert.pem"), &good.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &good.key_pem).unwrap();
    let proxy = Proxy::simple(&dir, echo_backend().await, &[]);
    let good_fp = leaf_fingerprint(&good);

    let other = pki.issue(&["appb.apps.internal"]);
    let expired = pki.issue_with(
        &["appb.apps.internal"],
        Duration::from_secs(1),
        LeafKey::EcdsaP256,
    );
    std::thread::sleep(Duration::from_millis(1100)); // `expired` is now past its not_after
    let half = &other.cert_pem[..other.cert_pem.len() / 2];
    let cases: Vec<(&str, &str, &str)> = vec![
        ("key_mismatch", &other.cert_pem, &good.key_pem),
        ("no_certificate", half, &other.key_pem),
        ("no_certificate", "garbage\n", &good.key_pem),
        ("bad_key", &good.cert_pem, "not a key\n"),
        ("expired", &expired.cert_pem, &expired.key_pem),
    ];
    for (reason, cert, key) in cases {
        let metric =
            format!("c2c_proxy_cert_reloads_total{{result=\"refused\",reason=\"{reason}\"}}");
        let before = proxy.metric(&metric);
        std::fs::write(dir.join("key.pem"), key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        eventually(T, &format!("reload refused as {reason}"), || {
            proxy.metric(&metric) > before
        });
        assert_eq!(
            proxy.served_fingerprint(),
            good_fp,
            "{reason}: last good cert stays"
        );
        let mut s = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
            .await
            .unwrap();
        assert_eq!(
            peer_fingerprint(&s),
            good_fp,
            "{reason}: clients still get the good cert"
        );
        assert_eq!(roundtrip(&mut s, b"ok").await, b"ok");
    }
    assert!(proxy.log().contains("certificate reload refused"));

    // A good pair written in place, key first, is then picked up.
    std::fs::write(dir.join("key.pem"), &other.key_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &other.cert_pem).unwrap();
    let want = leaf_fingerprint(&other);
    eventually(T, "in-place rewrite picked up", || {
        proxy.served_fingerprint() == want
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_closes_the_client_promptly() {
    let (pki, proxy) = appb_sidecar(closed_port(), &[]).await;
    let mut s = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    // Far below the handshake and connect timeouts: the refusal is passed on at once.
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("client connection left open after upstream refused");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(
        proxy.metric("c2c_proxy_upstream_connect_failures_total{reason=\"refused\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reaches_the_app_and_the_reply_comes_back() {
    let (pki, proxy) = appb_sidecar(reverse_after_eof_backend().await, &[]).await;
    let mut s = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    let msg: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    s.write_all(&msg).await.unwrap();
    s.shutdown().await.unwrap(); // close_notify + FIN: our half is done
    let mut back = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    let mut want = msg.clone();
    want.reverse();
    assert_eq!(back.len(), want.len());
    assert!(back == want, "bytes lost or reordered");
    eventually(T, "bytes counted", || {
        proxy.metric("c2c_proxy_bytes_total{direction=\"downstream_to_upstream\"}") == 300_000.0
            && proxy.metric("c2c_proxy_bytes_total{direction=\"upstream_to_downstream\"}")
                == 300_000.0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_drains_open_connections_and_exits_zero() {
    let (pki, mut proxy) = appb_sidecar(echo_backend().await, &["--drain-timeout", "30s"]).await;
    let mut open = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut open, b"before").await, b"before");
    proxy.signal("TERM");
    let addr = proxy.addr();
    eventually(T, "listener closed after SIGTERM", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    assert!(proxy.is_running(), "exited while a connection was open");
    assert_eq!(
        roundtrip(&mut open, b"still served while draining").await,
        b"still served while draining"
    );
    open.shutdown().await.unwrap();
    drop(open);
    let status = proxy.wait_exit(T, "exit after the last connection closed");
    assert!(status.success(), "exit status {status}");
    assert!(proxy.log().contains("all connections drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_ends_connections_that_never_close() {
    let (pki, mut proxy) = appb_sidecar(echo_backend().await, &["--drain-timeout", "200ms"]).await;
    let mut open = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut open, b"x").await, b"x");
    proxy.signal("TERM");
    let status = proxy.wait_exit(T, "exit at the drain timeout");
    assert!(status.success(), "exit status {status}");
    assert!(proxy.log().contains("drain timeout reached"));
}

/// A ClientHello offering only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1), with no
/// supported_versions extension, as an old client sends it.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let [vh, vl] = version.to_be_bytes();
    let mut body = vec![vh, vl];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
                                           // signature_algorithms: ecdsa_secp256r1_sha256, so the version is the only thing wrong.
    body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert() {
    let (_pki, proxy) = appb_sidecar(echo_backend().await, &[]).await;
    for version in [0x0301u16, 0x0302] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(&legacy_client_hello(version)).await.unwrap();
        let mut resp = Vec::new();
        tokio::time::timeout(T, s.read_to_end(&mut resp))
            .await
            .unwrap()
            .ok();
        // An alert record: type 21, level fatal (2), description protocol_version (70).
        assert!(
            resp.len() >= 7,
            "no alert for version {version:#06x}: {resp:?}"
        );
        assert_eq!(
            (resp[0], resp[5], resp[6]),
            (21, 2, 70),
            "version {version:#06x}: {resp:?}"
        );
    }
    assert!(
        proxy.metric("c2c_proxy_handshake_failures_total{reason=\"peer_incompatible\"}") >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_garbage_and_resets_neither_panic_nor_leak() {
    let (pki, mut proxy) = appb_sidecar(echo_backend().await, &[]).await;
    for i in 0..60u32 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        match i % 3 {
            0 => {} // port scan: connect and close
            1 => {
                let _ = s
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\xff\xff")
                    .await;
            }
            _ => {
                // Half a ClientHello, then an abrupt reset.
                let _ = s.write_all(&legacy_client_hello(0x0303)[..20]).await;
                #[allow(deprecated)] // SO_LINGER 0: close with RST, as a crashed client does
                s.set_linger(Some(Duration::ZERO)).unwrap();
            }
        }
        drop(s);
    }
    let mut s = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"still fine").await, b"still fine");
    drop(s);
    eventually(T, "no connection left open", || {
        proxy.metric("c2c_proxy_connections_active{") == 0.0
    });
    assert!(proxy.is_running());
    assert!(!proxy.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_idle_clients() {
    let (_pki, proxy) = appb_sidecar(echo_backend().await, &["--handshake-timeout", "200ms"]).await;
    let mut idle = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(T, idle.read(&mut buf))
        .await
        .expect("idle client never closed");
    assert!(matches!(r, Ok(0) | Err(_)));
    assert_eq!(
        proxy.metric("c2c_proxy_handshake_failures_total{reason=\"timeout\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let (pki, proxy) = appb_sidecar(echo_backend().await, &["--max-connections", "1"]).await;
    let mut first = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut first, b"1").await, b"1");
    let second = tokio::spawn({
        let (addr, ca) = (proxy.addr(), pki.ca_pem());
        async move { tls_connect(addr, "appb.apps.internal", &ca).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second client got through while the first held the only slot"
    );
    first.shutdown().await.unwrap();
    drop(first);
    let mut s = tokio::time::timeout(T, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"2").await, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_cannot_hold_every_slot() {
    // The attack: a peer a policy allows opens --max-connections TLS connections and sends
    // nothing, so every other client waits. The idle timeout frees the slots.
    let (pki, proxy) = appb_sidecar(
        echo_backend().await,
        &["--max-connections", "20", "--idle-timeout", "1s"],
    )
    .await;
    let mut idle = vec![];
    for _ in 0..20 {
        idle.push(
            tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
                .await
                .unwrap(),
        );
    }
    // A busy client's bytes keep its connection (ours checks after each of 4 idle periods).
    let legit = tokio::spawn({
        let (addr, ca) = (proxy.addr(), pki.ca_pem());
        async move {
            let mut s = tls_connect(addr, "appb.apps.internal", &ca).await.unwrap();
            assert_eq!(roundtrip(&mut s, b"served").await, b"served");
            s
        }
    });
    // Positive control: the normal client is served once the idle ones are closed.
    let mut served = tokio::time::timeout(T, legit)
        .await
        .expect("a normal client was locked out by idle connections")
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(roundtrip(&mut served, b"busy").await, b"busy");
    }
    for s in idle.iter_mut() {
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("an idle connection was kept");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert!(proxy.metric("c2c_proxy_idle_timeouts_total") >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_slot() {
    // Issue #23: one policy-allowed peer held 9,992 handshaken idle connections of the 10,000
    // and every other client timed out. Now a peer holds its share at most, and a client that
    // says nothing after its handshake is closed after the short first-byte limit.
    let (pki, proxy) = appb_sidecar(
        echo_backend().await,
        &[
            "--max-connections",
            "20",
            "--max-connections-per-source",
            "5",
            "--first-byte-timeout",
            "1s",
        ],
    )
    .await;
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = vec![];
    for _ in 0..5 {
        let mut s = tls_connect_from(attacker, proxy.addr(), "appb.apps.internal", &pki.ca_pem())
            .await
            .unwrap();
        assert_eq!(roundtrip(&mut s, b"x").await, b"x");
        held.push(s);
    }
    // The sixth from the same address is closed at once, before any handshake.
    let sixth = tls_connect_from(attacker, proxy.addr(), "appb.apps.internal", &pki.ca_pem()).await;
    assert!(
        sixth.is_err(),
        "a sixth connection from one peer was served"
    );
    assert_eq!(proxy.metric("c2c_proxy_source_limited_total"), 1.0);
    // Positive control: another peer is served beside it.
    let mut other = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut other, b"served").await, b"served");
    // A slot given back is the attacker's again.
    drop(held.pop());
    let mut again = tokio::time::timeout(T, async {
        loop {
            match tls_connect_from(attacker, proxy.addr(), "appb.apps.internal", &pki.ca_pem())
                .await
            {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("the freed slot never came back");
    assert_eq!(roundtrip(&mut again, b"y").await, b"y");
    // Silent after the handshake: closed after --first-byte-timeout, not the hour of
    // --idle-timeout.
    let mut silent = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(T, silent.read(&mut buf))
        .await
        .expect("a silent client was kept");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_reports_ready_metrics_and_cert() {
    let pki = Pki::new();
    let pair = pki.rotate(&["appb.apps.internal", "0.appb.apps.internal"]);
    let proxy = Proxy::simple(&pki.cert_dir(), echo_backend().await, &[]);
    assert_eq!(proxy.admin_get("/ready"), (200, "ready\n".into()));
    let (status, body) = proxy.admin_get("/cert");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["sans"]["dns"],
        serde_json::json!(["0.appb.apps.internal", "appb.apps.internal"])
    );
    assert_eq!(v["sans"]["ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(v["sha256_fingerprint"], leaf_fingerprint(&pair));
    assert_eq!(v["serial"].as_str().unwrap().len(), 32);
    assert!(v["not_after_unix"].as_i64().unwrap() > v["not_before_unix"].as_i64().unwrap());
    let mut s = tls_connect(proxy.addr(), "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    roundtrip(&mut s, b"m").await;
    let (_, metrics) = proxy.admin_get("/metrics");
    for name in [
        "c2c_proxy_connections_accepted_total",
        "c2c_proxy_connections_active",
        "c2c_proxy_bytes_total",
        "c2c_proxy_cert_not_after_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert_eq!(
        proxy.metric("c2c_proxy_cert_not_after_seconds"),
        v["not_after_unix"].as_f64().unwrap()
    );
    assert_eq!(proxy.admin_get("/nope").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_runs_several_listeners() {
    let pki = Pki::new();
    pki.rotate(&["appb.apps.internal"]);
    let (echo, rev) = (echo_backend().await, reverse_after_eof_backend().await);
    let file = pki.tmp.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "cert_dir = {:?}\nhandshake_timeout = \"5s\"\n\
             [[listeners]]\nlisten = \"127.0.0.1:0\"\nupstream = \"{echo}\"\n\
             [[listeners]]\nlisten = \"127.0.0.1:0\"\nupstream = \"{rev}\"\n",
            pki.cert_dir()
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&["--config", file.to_str().unwrap()]);
    assert_eq!(proxy.listens.len(), 2);
    let mut a = tls_connect(proxy.listens[0], "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut a, b"echo").await, b"echo");
    let mut b = tls_connect(proxy.listens[1], "appb.apps.internal", &pki.ca_pem())
        .await
        .unwrap();
    b.write_all(b"abc").await.unwrap();
    b.shutdown().await.unwrap();
    let mut back = Vec::new();
    b.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"cba");
}

#[test]
fn no_valid_cert_at_start_is_a_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(proxy_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--cert-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no valid certificate in"), "{err}");
}

#[test]
fn bad_usage_and_config_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "cert_dir = 3\n").unwrap();
    for args in [
        vec!["--cert-dir", "/x"],
        vec!["--config", file.to_str().unwrap()],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--cert-dir",
            "/x",
            "--workers",
            "0",
        ],
    ] {
        let out = std::process::Command::new(proxy_bin())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("c2c-proxy: "));
    }
    let help = std::process::Command::new(proxy_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--cert-dir",
        "--admin",
        "--config",
        "--handshake-timeout",
        "--max-connections",
        "--max-connections-per-source",
        "--first-byte-timeout",
        "--drain-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("[default: 10s]"));
}
