//! A control replica that goes silent (its host powered off, a partition: packets dropped, no
//! reset) holds no caller: connect plus TLS handshake to one replica is bounded, and the next
//! replica of the list answers (issue #30: the CLI stalled for over 60 s). The silent replica is
//! a listener that takes connections and never answers, so a ClientHello waits forever there.

use std::net::TcpListener;

mod support;
use support::Control;

#[test]
fn a_silent_replica_first_in_the_list_is_passed_over() {
    let real = Control::start();
    real.ok(&["create-app", "appa"]);

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in silent.incoming().flatten() {
            held.push(s); // never read, never answered, never closed
        }
    });
    // The operator's list, the silent replica first (control wrote only its own URL at start).
    std::fs::write(
        real.dir.path().join("control/url"),
        format!("{silent_url},{}", real.url),
    )
    .unwrap();
    let apps = real.ok(&["apps"]);
    assert!(
        apps.contains("appa"),
        "answered through the live replica: {apps}"
    );

    // Alone, the silent replica is a clear error, not a hang.
    std::fs::write(real.dir.path().join("control/url"), &silent_url).unwrap();
    let o = real.c2c(&["apps"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no answer within 3s"), "{err}");
}

/// A TCP relay to `to` that forwards both ways until `frozen` is set, then holds every socket
/// open and moves nothing: the replica behind it has gone silent mid-connection.
fn freezable_relay(
    rt: &tokio::runtime::Runtime,
    to: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((a, _)) = l.accept().await {
            let Ok(b) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(ar) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(bw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(br), Box::new(aw)),
            ] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if frozen.load(Ordering::SeqCst) {
                            // Silent: the bytes go nowhere and the socket stays open.
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    addr
}

#[test]
fn a_replica_silent_after_the_handshake_fails_the_request_and_the_next_goes_elsewhere() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let real = Control::start();
    real.ok(&["create-app", "appa"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let real_addr: std::net::SocketAddr = real.url.trim_start_matches("https://").parse().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let relay = freezable_relay(&rt, real_addr, frozen.clone());
    // Both names are the same control; control's certificate holds 127.0.0.1.
    let relay_url = format!("https://{relay}");
    std::fs::write(
        real.dir.path().join("control/url"),
        format!("{relay_url},{}", real.url),
    )
    .unwrap();
    let client = c2c_api::client::Client::from_state_dir(real.dir.path())
        .unwrap()
        .with_response_timeout(std::time::Duration::from_secs(1));

    // Positive control: through the relay while it forwards, on a kept-alive connection.
    rt.block_on(async {
        assert_eq!(client.app("appa").await.unwrap().name.as_str(), "appa");
        assert_eq!(client.url(), relay_url);
        frozen.store(true, Ordering::SeqCst);
        // The kept connection goes silent: this request fails instead of waiting on TCP...
        let err = client.app("appa").await.unwrap_err().to_string();
        assert!(err.contains("no answer within 1s"), "{err}");
        assert!(err.contains(&relay_url), "{err}");
        // ... and the next one goes to the other replica.
        assert_eq!(client.app("appa").await.unwrap().name.as_str(), "appa");
        assert_eq!(client.url(), real.url);
    });
}

/// A control that is not running (its port refuses): the error says so, and what starts it.
#[test]
fn a_refused_connection_says_how_to_start_control() {
    let real = Control::start();
    // A port nothing listens on (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        real.dir.path().join("control/url"),
        format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let o = real.c2c(&["apps"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        err.contains("control is not running for") && err.contains("`c2c up` starts"),
        "{err}"
    );
}
