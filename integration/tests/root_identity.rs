//! ROOT TEST: instance identity end to end on the local platform (issue #24), with curl and
//! openssl as the clients: every pushed instance holds CF_INSTANCE_CERT / CF_INSTANCE_KEY (Diego's
//! subject, SANs and usages, a SPIFFE ID) and the platform root in CF_SYSTEM_CERT_PATH; the
//! identity is renewed in place (serial changes, app and sidecar keep their PIDs); appB's sidecar
//! can require a caller's identity: no certificate is refused, appA's (with a policy) is served,
//! appC's (no policy) is refused even through the host port, which the packet filter does not
//! guard, and a deleted instance's identity is refused once its deletion reaches the cell.
//! Run as root (CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use c2c_integration::cli::*;
use c2c_integration::topo::{require_root, wait_until};

/// `c2c exec APP -- sh -c SCRIPT`: (exit code, stdout).
fn sh(dir: &Path, app: &str, script: &str) -> (i32, String) {
    let o = c2c(dir, &["exec", app, "--", "sh", "-c", script]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

fn instance_dir(dir: &Path, app: &str) -> PathBuf {
    dir.join("instances").join(app).join("0")
}

fn openssl(args: &[&str]) -> String {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn serial(cert: &Path) -> String {
    openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"])
}

fn pid(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// The app's GUID, as `c2c app` shows it.
fn guid_of(dir: &Path, app: &str) -> String {
    ok(dir, &["app", app])
        .lines()
        .find_map(|l| l.strip_prefix("guid:").map(|g| g.trim().to_string()))
        .unwrap()
}

/// The `https://CELL:PORT` host port `c2c app APP` shows for its sidecar.
fn sidecar_host_port(dir: &Path, app: &str) -> (String, String) {
    let shown = ok(dir, &["app", app]);
    let url = shown
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no https host port in: {shown}"));
    let (ip, port) = url.trim_start_matches("https://").split_once(':').unwrap();
    (ip.to_string(), port.to_string())
}

#[test]
fn root_identity_in_every_instance_and_required_by_the_sidecar() {
    if !require_root() {
        return;
    }
    // 45 s identities: renewed 30 s after each issue, so the test sees a renewal.
    let platform = TempPlatform::up(&["--cells", "2", "--identity-validity", "45s"]);
    let dir = platform.dir();
    ok(dir, &["push", "appA", "--cell", "cell1"]);
    ok(dir, &["push", "appB", "--cell", "cell2"]);
    ok(dir, &["push", "appC", "--cell", "cell1"]);

    // The files and the variables, as Diego's.
    let (code, env) = sh(
        dir,
        "appA",
        "echo $CF_INSTANCE_CERT $CF_INSTANCE_KEY $CF_SYSTEM_CERT_PATH $CF_INSTANCE_GUID $CF_INSTANCE_INTERNAL_IP",
    );
    assert_eq!(code, 0);
    let v: Vec<&str> = env.split_whitespace().collect();
    let [cert, key, system, guid, ip] = v[..] else {
        panic!("{env}")
    };
    let (cert, key) = (Path::new(cert), Path::new(key));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let root = Path::new(system).join("c2c-platform-ca.pem");
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    let app_guid = guid_of(dir, "appA");
    for want in [
        format!("CN = {guid}"),
        "OU = organization:".to_string(),
        "OU = space:".to_string(),
        format!("OU = app:{app_guid}"),
        format!("DNS:{guid}"),
        format!("IP Address:{ip}"),
        format!("URI:spiffe://c2c.internal/app/{app_guid}"),
        "TLS Web Server Authentication, TLS Web Client Authentication".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    // The leaf, then its issuer, verifying against the root the container holds.
    let verified = openssl(&[
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        cert.to_str().unwrap(),
        "-purpose",
        "sslclient",
        cert.to_str().unwrap(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    // The key belongs to the certificate.
    let pubkey = |args: &[&str]| openssl(args);
    assert_eq!(
        pubkey(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])
    );

    // Identity required at appB: appA has a policy on 61443, appC none.
    allow(dir, "appA", "appB", "61443");
    ok(
        dir,
        &["update-app", "appB", "--client-identity", "required"],
    );
    assert!(ok(dir, &["app", "appB"]).contains("client identity: required"));
    let url = "https://appb.apps.internal:61443/";
    // Without a certificate: refused, once the setting reached appB's sidecar.
    wait_until(
        "appB's sidecar to require an identity",
        Duration::from_secs(15),
        || sh(dir, "appA", &format!("curl -s --max-time 5 {url}")).0 != 0,
    );
    // With appA's own identity: served, verified against the platform CA by route name.
    let with_cert = format!(
        "curl -s --max-time 5 --cert \"$CF_INSTANCE_CERT\" --key \"$CF_INSTANCE_KEY\" {url}"
    );
    let (code, body) = sh(dir, "appA", &with_cert);
    assert_eq!(code, 0, "appA with its identity: {body}");
    assert!(body.starts_with("app=appB"), "{body}");

    // appC's valid identity, no policy: refused, also through appB's host port from the
    // underlay, where no packet filter stands between.
    let (code, _) = sh(dir, "appC", &with_cert);
    assert_ne!(code, 0, "appC has no policy");
    let (cell_ip, port) = sidecar_host_port(dir, "appB");
    let underlay = {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("platform.json")).unwrap()).unwrap();
        format!("{}-u", info["prefix"].as_str().unwrap())
    };
    let ca = dir.join("ca/ca.pem");
    let via_host_port = |app: &str| {
        let id = instance_dir(dir, app).join("identity");
        Command::new("ip")
            .args(["netns", "exec", &underlay, "curl", "-s", "--max-time", "5"])
            .args(["--cacert", ca.to_str().unwrap()])
            .args(["--resolve", &format!("appb.apps.internal:{port}:{cell_ip}")])
            .args(["--cert", id.join("instance.crt").to_str().unwrap()])
            .args(["--key", id.join("instance.key").to_str().unwrap()])
            .arg(format!("https://appb.apps.internal:{port}/"))
            .output()
            .unwrap()
    };
    let o = via_host_port("appA");
    assert!(
        o.status.success(),
        "appA's identity through the host port is served"
    );
    let o = via_host_port("appC");
    assert!(
        !o.status.success(),
        "appC's identity through the host port is refused"
    );
    let log = std::fs::read_to_string(instance_dir(dir, "appB").join("proxy.log")).unwrap();
    let c_guid = guid_of(dir, "appC");
    assert!(
        log.contains("caller refused") && log.contains(&c_guid),
        "the refusal names appC: {log}"
    );

    // Renewal in place: a new serial, verifying, the app's and sidecar's PIDs unchanged.
    let a_dir = instance_dir(dir, "appA");
    let (app_pid, proxy_pid) = (pid(&a_dir.join("app.pid")), pid(&a_dir.join("proxy.pid")));
    let first = serial(cert);
    wait_until(
        "appA's identity to be renewed",
        Duration::from_secs(60),
        || serial(cert) != first,
    );
    let verified = openssl(&[
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        cert.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    assert_eq!(pid(&a_dir.join("app.pid")), app_pid);
    assert_eq!(pid(&a_dir.join("proxy.pid")), proxy_pid);
    let (code, body) = sh(dir, "appA", &with_cert);
    assert_eq!(code, 0, "the renewed identity is served: {body}");

    // Cloud Foundry's "manual" option: appD terminates TLS itself with its own identity and
    // requires its callers' (the demo app's --mtls-listen), no sidecar in the path.
    let c2c_bin = c2c_integration::bin("c2c");
    let cmd = format!(
        "{} demo-app --name appD --index 0 --mtls-listen 0.0.0.0:9443",
        c2c_bin.display()
    );
    ok(dir, &["push", "appD", "--cell", "cell2", "--command", &cmd]);
    allow(dir, "appA", "appD", "9443");
    let d_ip = {
        let raw = std::fs::read(instance_dir(dir, "appD").join("instance.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["ip"].as_str().unwrap().to_string()
    };
    let manual = |cert: bool| {
        let id = if cert {
            "--cert \"$CF_INSTANCE_CERT\" --key \"$CF_INSTANCE_KEY\""
        } else {
            ""
        };
        sh(
            dir,
            "appA",
            &format!("curl -s --max-time 5 --cacert \"$CF_SYSTEM_CERT_PATH/c2c-platform-ca.pem\" {id} https://{d_ip}:9443/"),
        )
    };
    wait_until(
        "appD's own TLS to answer appA",
        Duration::from_secs(15),
        || manual(true).0 == 0,
    );
    let (_, body) = manual(true);
    let a_instance = guid;
    assert!(
        body.contains(&format!("caller={a_instance} app={app_guid}")),
        "appD names its caller: {body}"
    );
    assert_ne!(manual(false).0, 0, "appD requires a caller's identity");

    // A deleted instance's identity: kept by an attacker, refused once the deletion reaches
    // appB's cell (the positive control just above used the same path).
    let kept = tempfile::tempdir().unwrap();
    for f in ["instance.crt", "instance.key"] {
        std::fs::copy(a_dir.join("identity").join(f), kept.path().join(f)).unwrap();
    }
    ok(dir, &["delete", "appA", "-f"]);
    wait_until(
        "appA's kept identity to be refused",
        Duration::from_secs(15),
        || {
            !Command::new("ip")
                .args(["netns", "exec", &underlay, "curl", "-s", "--max-time", "5"])
                .args(["--cacert", ca.to_str().unwrap()])
                .args(["--resolve", &format!("appb.apps.internal:{port}:{cell_ip}")])
                .args(["--cert", kept.path().join("instance.crt").to_str().unwrap()])
                .args(["--key", kept.path().join("instance.key").to_str().unwrap()])
                .arg(format!("https://appb.apps.internal:{port}/"))
                .output()
                .unwrap()
                .status
                .success()
        },
    );
}
