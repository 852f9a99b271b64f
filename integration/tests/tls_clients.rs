//! The sidecar and `c2c certs` driven by the clients users have: curl and openssl s_client
//! (scripts/tls-clients.sh), in front of a small HTTP app on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// A tiny HTTP/1.1 app on 127.0.0.1 that answers every request with "hello from app".
fn spawn_app() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from app\n";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

#[test]
fn curl_and_openssl_against_the_sidecar() {
    let app = spawn_app();
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tls-clients.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("C2C", c2c_integration::bin("c2c"))
        .env("C2C_PROXY", c2c_integration::bin("c2c-proxy"))
        .env("APP_ADDR", app.to_string())
        .env("WORK", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Each check prints "ok - ..."; make sure they all ran.
    assert_eq!(stdout.matches("ok - ").count(), 13, "{stdout}");
}
