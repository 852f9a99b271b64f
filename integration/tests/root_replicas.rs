//! ROOT TEST: many hosts. PostgreSQL, two control replicas and two cells as namespaces on one
//! underlay; the cells joined with one-time tokens (`c2c cell join`), cell1's agent pointed at
//! replica A first and cell2's at replica B. The policy workflow across them; then replica A
//! is killed with SIGKILL and a policy added through B is enforced on both cells (cell1 fails
//! over); a join token used twice is refused; a removed cell's certificate is refused and its
//! lease freed; a lease left to expire leaves the other cell's routes. Run as root (CI does);
//! `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::net::SocketAddr;
use std::time::Duration;

use c2c_integration::bin;
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

fn refused(r: std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn wait(what: &str, ok: impl FnMut() -> bool) -> Duration {
    wait_until(what, Duration::from_secs(15), ok)
}

#[test]
fn root_two_replicas_on_postgres_with_joined_cells() {
    if !require_root() {
        return;
    }
    let mut p = Platform::start_replicated(2, "4s");
    for app in ["appa", "appb", "appc"] {
        p.c2c(&["create-app", app]);
    }
    // appa on cell1 (watching A), appb on cell2 (watching B) and on cell1.
    let (a, _) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    let (b1, ip_b1) = p.container(1, "appb", 1);
    let (c, _) = p.container(2, "appc", 0);
    for (ns, ip) in [(&b, ip_b), (&b1, ip_b1)] {
        serve(ns, SocketAddr::new(ip.into(), 8080), "appb");
    }
    let (to_b, to_b1) = (
        SocketAddr::new(ip_b.into(), 8080),
        SocketAddr::new(ip_b1.into(), 8080),
    );

    // The seed workflow, written through A, enforced by both cells.
    wait("appa -> appb refused", || refused(fetch(&a, to_b)));
    p.allow("appa", "appb", "tcp", "8080");
    wait("appa -> appb allowed across cells", || {
        fetch(&a, to_b).is_ok()
    });
    wait("appa -> appb allowed on cell1", || fetch(&a, to_b1).is_ok());
    assert!(refused(fetch(&c, to_b)));

    // Replica A dies; a policy through B is enforced on both cells, also on cell1, which
    // watched A. Enforcement never lapsed meanwhile.
    p.kill_replica_a();
    assert!(
        fetch(&a, to_b).is_ok(),
        "rules stay while a replica is away"
    );
    p.c2c_b(&[
        "add-network-policy",
        "appc",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    let took = wait("appc -> appb (cell2) allowed through B", || {
        fetch(&c, to_b).is_ok()
    });
    eprintln!("after A's SIGKILL, a policy through B enforced in {took:?}");
    // appc on cell2 reaches appb's instance on cell1: cell1's agent (watching A first) moved to B.
    let took = wait("cell1 enforces the policy written through B", || {
        fetch(&c, to_b1).is_ok()
    });
    eprintln!("cell1 (A first) enforcing B's change {took:?} later");
    assert!(
        p.agents[0].log().contains("using the next"),
        "cell1's agent says it moved: {}",
        p.agents[0].log()
    );

    // A join token works once.
    let token = p.c2c_b(&["cell", "token", "create"]).trim().to_string();
    let join = |name: &str| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &p.cells[0].ns.name])
            .arg(bin("c2c"))
            .args([
                "--state-dir",
                "/nonexistent",
                "cell",
                "join",
                "--control",
                &p.replica_b.as_ref().unwrap().1,
                "--token",
                &token,
                "--name",
                name,
                "--underlay-ip",
                "192.0.2.9",
                "--out",
                p.dir.path().join(format!("{name}-tls")).to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    assert!(join("cell9").status.success());
    let again = join("cell10");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already used"));

    // A lease left to expire (cell2's agent stopped) leaves cell1's routes; the container
    // addresses stay enforced as they were on cell1.
    let cells = p.c2c_b(&["cells"]);
    assert!(cells.contains("/26"), "cells lease /26s here: {cells}");
    let subnet2 = cells
        .lines()
        .find(|l| l.starts_with("cell2 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    assert!(
        p.cells[0].ns.ip(&["route"]).contains(&subnet2),
        "cell1 routes to cell2"
    );
    p.agents[1].stop();
    wait_until("cell2's lease expires", Duration::from_secs(30), || {
        p.c2c_b(&["cells"])
            .lines()
            .any(|l| l.starts_with("cell2 ") && l.contains("no lease"))
    });
    wait("cell1 drops its route to cell2", || {
        !p.cells[0].ns.ip(&["route"]).contains(&subnet2)
    });

    // A removed cell's certificate is refused.
    p.c2c_b(&["cell", "remove", "cell2"]);
    let certs = p.dir.path().join("cell2-tls");
    let curl = p.cells[1].ns.exec(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            certs.join("control-ca.pem").to_str().unwrap(),
            "--cert",
            certs.join("cert.pem").to_str().unwrap(),
            "--key",
            certs.join("key.pem").to_str().unwrap(),
            "-X",
            "POST",
            "-d",
            r#"{"underlay_ip":"192.0.2.2"}"#,
            &format!("{}/v1/cells/cell2/lease", p.replica_b.as_ref().unwrap().1),
        ],
    );
    assert_eq!(curl.trim(), "403");
    assert!(!p.c2c_b(&["cells"]).contains("cell2 "));
}
