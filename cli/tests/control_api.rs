//! `c2c control serve` and the CLI against it, as a user and as a cell would use them: real
//! TLS, real SQLite, the real binary. Requests that must carry a client certificate (or must
//! not) are made with curl, as an operator would.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::Control;

#[test]
fn the_policy_workflow_through_the_cli() {
    let ctl = Control::start();
    ctl.ok(&["create-app", "appa"]);
    ctl.ok(&["create-app", "appb"]);
    let out = ctl.ok(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    assert_eq!(
        out,
        "Adding network policy from app appa to app appb as admin...\nOK\n"
    );
    // Adding it again is a no-op, not an error.
    ctl.ok(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    ctl.ok(&[
        "add-network-policy",
        "appb",
        "appa",
        "--protocol",
        "udp",
        "--port",
        "5000-5010",
    ]);
    let table = ctl.ok(&["network-policies"]);
    let lines: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(table.starts_with("Listing network policies as admin...\n\nsource "));
    assert!(
        lines[1]
            .split_whitespace()
            .eq(["appa", "appb", "tcp", "8080"])
            || lines[2]
                .split_whitespace()
                .eq(["appa", "appb", "tcp", "8080"]),
        "{table}"
    );
    assert!(table.contains("5000-5010"));
    ctl.ok(&[
        "remove-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    let table = ctl.ok(&["network-policies", "--source", "appa"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    // `--source` is the source only, as cf: appb's policy to appa is appb's.
    let table = ctl.ok(&["network-policies", "--source", "appb"]);
    assert!(table.lines().nth(3).unwrap().starts_with("appb"), "{table}");

    // One-line errors a user can act on.
    let o = ctl.c2c(&["add-network-policy", "appa", "nope"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("app nope not found"), "{err}");
    // Names are path segments: whatever a user types stays one name, and is named back as typed.
    for name in ["no such/app", "a?b#c", "100%"] {
        let o = ctl.c2c(&["network-policies", "--source", name]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("app {name} not found")), "{err}");
    }
    for (port, proto) in [
        ("0", "tcp"),
        ("9-8", "tcp"),
        ("70000", "tcp"),
        ("80", "icmp"),
    ] {
        let o = ctl.c2c(&[
            "add-network-policy",
            "appa",
            "appb",
            "--protocol",
            proto,
            "--port",
            port,
        ]);
        // Bad values are usage errors (exit 2), found before the banner is printed.
        assert_eq!(o.status.code(), Some(2), "{port} {proto}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{port} {proto}");
    }
    // As cf: creating what exists is done (exit 0), and says so.
    let o = ctl.c2c(&["create-app", "appa"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "App 'appa' already exists.\nOK\n"
    );
}

#[test]
fn the_cli_speaks_like_cf() {
    let ctl = Control::start();
    ctl.ok(&["create-app", "appa"]);
    ctl.ok(&["create-app", "appb"]);
    let c2c = |args: &[&str]| {
        let o = ctl.c2c(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // --protocol and --port go together; with neither, tcp 8080; UDP is udp.
    for half in [["--protocol", "tcp"], ["--port", "8080"]] {
        let (code, out, err) = c2c(&[&["add-network-policy", "appa", "appb"][..], &half].concat());
        // A usage error: exit 2, before anything is printed or asked of control.
        assert_eq!(code, Some(2));
        assert_eq!(out, "");
        assert!(
            err.contains("Incorrect Usage: --protocol and --port flags must be specified together"),
            "{err}"
        );
    }
    ctl.ok(&["add-network-policy", "appa", "appb"]);
    ctl.ok(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "UDP",
        "--port",
        "53",
    ]);
    let table = ctl.ok(&["network-policies"]);
    assert!(
        table.contains("tcp        8080")
            || table
                .lines()
                .any(|l| l.split_whitespace().eq(["appa", "appb", "tcp", "8080"])),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["appa", "appb", "udp", "53"])),
        "{table}"
    );
    // remove-network-policy needs both flags, and says when there is nothing to remove.
    let (code, _, err) = c2c(&["remove-network-policy", "appa", "appb", "--port", "8080"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--protocol"), "{err}");
    let args = [
        "remove-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ];
    assert_eq!(
        ctl.ok(&args),
        "Removing network policy from app appa to app appb as admin...\nOK\n"
    );
    assert_eq!(
        ctl.ok(&args),
        "Removing network policy from app appa to app appb as admin...\nPolicy does not exist.\nOK\n"
    );
    // map-route and unmap-route, twice each.
    let map = ["map-route", "appb", "apps.internal", "--hostname", "appb"];
    assert_eq!(
        ctl.ok(&map),
        "Mapping route appb.apps.internal to app appb as admin...\nOK\n"
    );
    assert_eq!(
        ctl.ok(&map),
        "Mapping route appb.apps.internal to app appb as admin...\nApp 'appb' is already mapped to route 'appb.apps.internal'. Nothing has been updated.\nOK\n"
    );
    let unmap = ["unmap-route", "appb", "apps.internal", "--hostname", "appb"];
    ctl.ok(&unmap);
    assert!(ctl
        .ok(&unmap)
        .contains("\nRoute to be unmapped is not currently mapped to the application.\nOK\n"));

    // curl: the body as sent; POST with -d; an HTTP error exits 0, or 22 with --fail; -i; -H.
    let (code, out, _) = c2c(&["curl", "/v1/apps/nope"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!({"error": "app nope not found"})
    );
    let (code, out, err) = c2c(&["curl", "/v1/apps/nope", "--fail"]);
    assert_eq!((code, out.as_str()), (Some(22), ""));
    assert!(
        err.contains("The requested URL returned error: 404"),
        "{err}"
    );
    let (code, out, _) = c2c(&["curl", "v1/apps", "-d", r#"{"name": "appc"}"#]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], "appc");
    let (_, out, _) = c2c(&["curl", "-i", "/networking/v1/external/whoami"]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("x-content-type-options: nosniff\r\n"), "{out}");
    assert!(out.ends_with("{\"subject\":\"admin\"}\n"), "{out}");
    let (_, out, _) = c2c(&[
        "curl",
        "-H",
        "Authorization: bearer wrong",
        "/networking/v1/external/policies",
    ]);
    assert!(out.contains("failed to verify token with uaa"), "{out}");

    // A network.write user, with its token in C2C_TOKEN: its apps only, and cf's texts.
    let o = ctl.c2c(&["token", "create", "dev", "--app", "appa", "--app", "appc"]);
    assert!(o.status.success());
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let dev = |args: &[&str]| ctl.c2c_as(Some(&token), args);
    let o = dev(&["add-network-policy", "appa", "appc"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Adding network policy from app appa to app appc as dev...\nOK\n"
    );
    let o = dev(&["add-network-policy", "appa", "appb"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("app appb not found"));
    let table = String::from_utf8_lossy(&dev(&["network-policies"]).stdout).into_owned();
    assert!(
        table.starts_with("Listing network policies as dev..."),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4, "{table}");
    let o = dev(&["tokens"]);
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("provided scopes [network.write] do not include allowed scopes [network.admin]"));
    let users = ctl.ok(&["tokens"]);
    assert!(
        users.lines().any(|l| l.split_whitespace().eq([
            "dev",
            "network.write",
            "1",
            "appa,",
            "appc"
        ])),
        "{users}"
    );
    ctl.ok(&["token", "revoke", "dev"]);
    let o = dev(&["network-policies"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("failed to verify token"));
}

#[test]
fn the_api_validates_like_cf_and_refuses_without_a_token() {
    let ctl = Control::start();
    let token = std::fs::read_to_string(ctl.dir.path().join("control/token")).unwrap();
    // Issue #23: the state (token hashes, users, every tenant's policies) was world-readable.
    use std::os::unix::fs::PermissionsExt;
    for f in ["state.db", "state.db-wal", "control/token"] {
        let mode = std::fs::metadata(ctl.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is open to others: {mode:o}");
    }
    let auth = format!("Authorization: Bearer {token}");
    let (code, _) = ctl.curl(&[], "/networking/v1/external/policies");
    assert_eq!(code, 401);
    let (code, _) = ctl.curl(
        &["-H", "Authorization: Bearer wrong"],
        "/networking/v1/external/policies",
    );
    assert_eq!(code, 401);
    let (code, body) = ctl.curl(&["-H", &auth], "/networking/v1/external/policies");
    assert_eq!(
        (code, body),
        (
            200,
            serde_json::json!({"total_policies": 0, "policies": []})
        )
    );
    let (code, body) = ctl.curl(&["-H", &auth], "/networking/v2/external/policies");
    assert_eq!(code, 406);
    assert_eq!(body["error"], "api version 'v2' not supported");

    let post = |body: &str| {
        ctl.curl(
            &["-H", &auth, "-X", "POST", "-d", body],
            "/networking/v1/external/policies",
        )
    };
    let (code, body) = post(
        r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":9,"end":8}}}]}"#,
    );
    assert_eq!(code, 400);
    assert_eq!(body["error"], "mapper: validate policies: invalid port range 9-8, start must be less than or equal to end");
    let (code, body) = post(
        r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":80,"end":80}}}]}"#,
    );
    assert_eq!(code, 403);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("one or more applications cannot be found or accessed"));

    // The cell API is not reachable with the user token, nor without a client cert.
    let (code, _) = ctl.curl(
        &[
            "-H",
            &auth,
            "-X",
            "POST",
            "-d",
            r#"{"underlay_ip":"192.0.2.1"}"#,
        ],
        "/v1/cells/cell1/lease",
    );
    assert_eq!(code, 403);
}

#[test]
fn cells_lease_register_and_watch() {
    let ctl = Control::start();
    let cell1 = ctl.cell_cert("cell1");
    let (code, lease) = ctl.as_cell(
        &cell1,
        &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.1"}"#],
        "/v1/cells/cell1/lease",
    );
    assert_eq!(code, 200, "{lease}");
    assert_eq!(lease["subnet"], "10.255.0.0/24");
    // Same cell again (a restart): same lease.
    let (_, again) = ctl.as_cell(
        &cell1,
        &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.1"}"#],
        "/v1/cells/cell1/lease",
    );
    assert_eq!(again["subnet"], lease["subnet"]);
    // A cell cannot act for another.
    let (code, _) = ctl.as_cell(
        &cell1,
        &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.2"}"#],
        "/v1/cells/cell2/lease",
    );
    assert_eq!(code, 403);
    // A cert from another CA does not get through the TLS handshake.
    let other = tempfile::tempdir().unwrap();
    ctl.ok(&[
        "certs",
        "ca",
        "init",
        "--dir",
        other.path().join("ca").to_str().unwrap(),
    ]);
    ctl.ok(&[
        "certs",
        "issue",
        "--ca-dir",
        other.path().join("ca").to_str().unwrap(),
        "--out",
        other.path().join("c").to_str().unwrap(),
        "--instance-id",
        "cell1",
        "--dns",
        "cell1",
    ]);
    let (code, _) = ctl.as_cell(
        &other.path().join("c"),
        &[],
        "/v1/cells/cell1/watch?after=0&timeout=1",
    );
    assert_eq!(code, 0, "handshake refused, no HTTP status");

    ctl.ok(&["create-app", "appa"]);
    ctl.ok(&["create-app", "appb"]);
    let (_, apps) = ctl.curl(
        &[
            "-H",
            &format!(
                "Authorization: Bearer {}",
                std::fs::read_to_string(ctl.dir.path().join("control/token")).unwrap()
            ),
        ],
        "/v1/apps",
    );
    let guid = |n: &str| {
        apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()["guid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let inst = ctl.place("appb", "cell1", 0);
    let body = format!(
        r#"{{"app_guid":"{}","index":0,"ip":"10.255.0.1"}}"#,
        guid("appb")
    );
    let (code, _) = ctl.as_cell(
        &cell1,
        &["-X", "PUT", "-d", &body],
        &format!("/v1/cells/cell1/instances/{inst}"),
    );
    assert_eq!(code, 200);

    let (_, view) = ctl.as_cell(&cell1, &[], "/v1/cells/cell1/watch?after=0");
    let rev = view["revision"].as_u64().unwrap();
    assert!(view["policies"].as_array().unwrap().is_empty());
    assert_eq!(view["leases"][0]["cell"], "cell1");

    // A watch past the current revision waits, and wakes when a policy touching the cell lands.
    let watch = {
        let (cert, url, ca) = (
            cell1.clone(),
            format!("{}/v1/cells/cell1/watch?after={rev}&timeout=30", ctl.url),
            ctl.ca(),
        );
        std::thread::spawn(move || {
            let t = Instant::now();
            let o = Command::new("curl")
                .args([
                    "-s",
                    "--cacert",
                    ca.to_str().unwrap(),
                    "--cert",
                    cert.join("cert.pem").to_str().unwrap(),
                    "--key",
                    cert.join("key.pem").to_str().unwrap(),
                    &url,
                ])
                .output()
                .unwrap();
            (
                t.elapsed(),
                serde_json::from_slice::<Value>(&o.stdout).unwrap(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !watch.is_finished(),
        "the watch returned before anything changed"
    );
    ctl.ok(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    let (waited, view) = watch.join().unwrap();
    assert!(
        waited < Duration::from_secs(20),
        "the watch did not wake on the change"
    );
    assert!(view["revision"].as_u64().unwrap() > rev);
    assert_eq!(view["policies"][0]["destination"], guid("appb"));
    assert_eq!(view["policies"][0]["start"], 8080);
}

/// Space quotas from the CLI (issue #23): the admin sets one, a space user's token meets it
/// with CF's wording, the listing shows use against limit.
#[test]
fn space_quotas_from_the_cli() {
    let ctl = Control::start();
    ctl.ok(&["create-org", "o1"]);
    ctl.ok(&["create-space", "dev", "-o", "o1"]);
    // cf's creates are idempotent (issue #31, item 3): what exists is said, and OK.
    assert_eq!(
        ctl.ok(&["create-org", "o1"]),
        "Creating org o1 as admin...\nOrganization 'o1' already exists.\nOK\n"
    );
    assert!(ctl
        .ok(&["create-space", "dev", "-o", "o1"])
        .ends_with("Space 'dev' already exists.\nOK\n"));
    let o = ctl.c2c(&["create-space", "dev", "-o", "nope"]);
    assert!(!o.status.success(), "a missing org is still an error");
    let out = ctl.ok(&[
        "set-space-quota",
        "dev",
        "-o",
        "o1",
        "--apps",
        "1",
        "-a",
        "5",
    ]);
    assert!(
        out.contains("OK: 1 apps, 5 instances, 1000 routes"),
        "{out}"
    );
    let dev = ctl
        .ok(&["token", "create", "dev", "--space", "o1/dev"])
        .trim()
        .to_string();
    let o = ctl.c2c_as(Some(&dev), &["create-app", "a1", "-o", "o1", "-s", "dev"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl.c2c_as(Some(&dev), &["create-app", "a2", "-o", "o1", "-s", "dev"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exceeded the app limit"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let list = ctl.ok(&["space-quotas"]);
    let row = list.lines().find(|l| l.starts_with("o1")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["o1", "dev", "1/1", "0/5", "0/1000", "own"], "{list}");
    // A user's token may not set quotas; an unknown space is named.
    let o = ctl.c2c_as(
        Some(&dev),
        &["set-space-quota", "dev", "-o", "o1", "--apps", "99"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("network.admin"));
    let o = ctl.c2c(&["set-space-quota", "nope", "-o", "o1", "--apps", "2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("Space 'nope' not found"));
}

/// Issue #31, item 1: `c2c apps | head -1` panicked ("failed printing to stdout: Broken pipe")
/// and exited 134. A list verb whose reader stops early now ends quietly, as other CLIs do;
/// the same listing to a reader that takes it all is whole (positive control).
#[test]
fn a_list_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let ctl = Control::start();
    for app in ["appa", "appb", "appc"] {
        ctl.ok(&["create-app", app]);
    }
    let whole = ctl.ok(&["apps"]);
    assert!(
        ["appa", "appb", "appc"].iter().all(|a| whole.contains(a)),
        "{whole}"
    );
    // A reader that takes nothing: the pipe's read end is closed before c2c writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_c2c"))
        .arg("apps")
        .env("C2C_STATE_DIR", ctl.dir.path())
        .env_remove("C2C_TOKEN")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?} {stderr}", out.status);
}

/// Every list verb's `--json`, read by a JSON parser: the shape scripts rely on (names beside
/// GUIDs), and nothing else on stdout.
#[test]
fn list_verbs_print_json_for_scripts() {
    let ctl = Control::start();
    ctl.ok(&["create-app", "appa"]);
    ctl.ok(&["create-app", "appb"]);
    ctl.ok(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080-8081",
    ]);
    ctl.ok(&["update-app", "appb", "--app-protocol", "http2"]);
    ctl.ok(&["map-route", "appa", "apps.internal", "--hostname", "appa"]);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = ctl.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let apps = json(&["apps", "--json"]);
    let b = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "appb")
        .unwrap();
    assert_eq!(b["app_protocol"], "http2");
    assert_eq!(b["space"], "default/default", "{b}");
    assert_eq!(b["instances"], serde_json::json!([]));
    assert_eq!(b["guid"].as_str().unwrap().len(), 36);

    let p = json(&["network-policies", "--json"]);
    assert_eq!(p["policies"][0]["source"]["name"], "appa", "{p}");
    assert_eq!(p["policies"][0]["destination"]["name"], "appb");
    assert_eq!(
        p["policies"][0]["ports"],
        serde_json::json!({"start": 8080, "end": 8081})
    );
    let by_source = json(&["network-policies", "--source", "appb", "--json"]);
    assert_eq!(by_source["policies"], serde_json::json!([]));

    let r = json(&["routes", "--json"]);
    let route = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app"]["name"] == "appa")
        .unwrap();
    assert_eq!(route["url"], "appa.apps.internal");

    let a = json(&["app", "appa", "--json"]);
    assert_eq!(
        a["routes"],
        serde_json::json!(["appa.apps.internal"]),
        "{a}"
    );
    assert_eq!(a["app_protocol"], "http1");
    assert!(ctl
        .ok(&["app", "appa"])
        .contains("routes:  appa.apps.internal\n"));
    let cells = json(&["cells", "--json"]);
    assert_eq!(cells["cells"], serde_json::json!([]));
}
