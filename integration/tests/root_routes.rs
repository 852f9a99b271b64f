//! ROOT TEST: internal routes drive certificates and DNS on the local platform. From a
//! container of appA on another cell, with the platform CA as the only trust root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use c2c_integration::cli::*;
use c2c_integration::topo::require_root;

fn curl(dir: &Path, url: &str) -> (i32, String) {
    let o = c2c(
        dir,
        &["exec", "appA", "--", "curl", "-sS", "--max-time", "3", url],
    );
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

fn until(what: &str, f: impl FnMut() -> bool) {
    c2c_integration::topo::wait_until(what, Duration::from_secs(10), f);
}

fn instance(dir: &Path, app: &str, i: u32) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.join(format!("instances/{app}/{i}/instance.json"))).unwrap(),
    )
    .unwrap()
}

/// A TCP connection made from inside namespace `ns`.
fn connect_in(ns: &str, to: SocketAddr) -> TcpStream {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn root_routes_drive_certificates_and_dns() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "2"]);
    let dir = platform.dir();
    ok(dir, &["push", "appA", "--cell", "cell1"]);
    ok(
        dir,
        &[
            "push",
            "appB",
            "--no-route",
            "--instances",
            "2",
            "--cell",
            "cell2",
        ],
    );
    allow(dir, "appA", "appB", "61443");

    // No route: no name.
    let (code, _) = curl(dir, "https://appb.apps.internal:61443/");
    assert_eq!(code, 6, "curl: could not resolve host");

    ok(
        dir,
        &["map-route", "appB", "apps.internal", "--hostname", "appb"],
    );
    until("appb.apps.internal resolves and verifies", || {
        curl(dir, "https://appb.apps.internal:61443/").0 == 0
    });
    let b0 = instance(dir, "appB", 0);
    let ip0 = b0["ip"].as_str().unwrap();
    let ip1 = instance(dir, "appB", 1)["ip"].as_str().unwrap().to_string();
    assert_eq!(
        curl(dir, "https://0.appb.apps.internal:61443/"),
        (0, format!("app=appB index=0 ip={ip0}"))
    );
    assert_eq!(
        curl(dir, "https://1.appb.apps.internal:61443/"),
        (0, format!("app=appB index=1 ip={ip1}"))
    );
    let routes = ok(dir, &["routes"]);
    assert!(
        routes.contains("appb") && routes.contains("appB"),
        "{routes}"
    );

    // A connection opened before a rotation keeps working after it; the sidecar is not restarted.
    let pid = std::fs::read_to_string(dir.join("instances/appB/0/proxy.pid")).unwrap();
    let ca = std::fs::read(dir.join("ca/ca.pem")).unwrap();
    let a_ns = instance(dir, "appA", 0)["netns"]
        .as_str()
        .unwrap()
        .to_string();
    let tcp = connect_in(&a_ns, SocketAddr::new(ip0.parse().unwrap(), 61443));
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn =
        rustls::ClientConnection::new(tls_client(&ca), "0.appb.apps.internal".try_into().unwrap())
            .unwrap();
    let mut open = rustls::StreamOwned::new(conn, tcp);
    while open.conn.is_handshaking() {
        open.conn.complete_io(&mut open.sock).unwrap();
    }
    ok(
        dir,
        &[
            "map-route",
            "appB",
            "apps.internal",
            "--hostname",
            "appb-v2",
        ],
    );
    until("appb-v2 served", || {
        curl(dir, "https://appb-v2.apps.internal:61443/").0 == 0
    });
    write!(open, "GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = open.read_to_string(&mut answer);
    assert!(
        answer.contains(&format!("app=appB index=0 ip={ip0}")),
        "old connection answered: {answer}"
    );

    // Unmap: the name leaves DNS and the certificate.
    ok(
        dir,
        &[
            "unmap-route",
            "appB",
            "apps.internal",
            "--hostname",
            "appb-v2",
        ],
    );
    until("appb-v2 gone from DNS", || {
        curl(dir, "https://appb-v2.apps.internal:61443/").0 == 6
    });
    until("appb-v2 gone from the cert", || {
        let tcp = connect_in(&a_ns, SocketAddr::new(ip0.parse().unwrap(), 61443));
        let conn = rustls::ClientConnection::new(
            tls_client(&ca),
            "appb-v2.apps.internal".try_into().unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // The handshake fails once the served cert no longer names appb-v2.
        s.conn.complete_io(&mut s.sock).is_err() || s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err()
    });
    assert_eq!(
        curl(dir, "https://appb.apps.internal:61443/").0,
        0,
        "the other route stays"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("instances/appB/0/proxy.pid")).unwrap(),
        pid,
        "same sidecar"
    );
    assert!(Path::new(&format!("/proc/{}", pid.trim())).exists());

    // A cell cannot get a certificate for an instance it does not host: cell1 asks for appB/0,
    // which runs on cell2. Control refuses, whatever names the CSR carries.
    let (_key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("platform.json")).unwrap()).unwrap();
    let underlay = info["underlay_ns"].as_str().unwrap();
    let cell1 = dir.join("cells/cell1/tls");
    let url = format!(
        "https://192.0.2.254:4002/v1/cells/cell1/instances/{}/certificate",
        b0["guid"].as_str().unwrap()
    );
    let body = serde_json::json!({ "csr": csr }).to_string();
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            underlay,
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(dir.join("ca/ca.pem"))
        .arg("--cert")
        .arg(cell1.join("cert.pem"))
        .arg("--key")
        .arg(cell1.join("key.pem"))
        .args(["-X", "POST", "-d", &body, &url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.trim_end().ends_with("403"), "{out}");
    assert!(out.contains("is not placed on cell cell1"), "{out}");
}
