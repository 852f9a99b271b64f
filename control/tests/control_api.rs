//! `c2c control serve` and the CLI against it, as a user and as a cell would use them: real
//! TLS, real SQLite, the real binary. Requests that must carry a client certificate (or must
//! not) are made with curl, as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Control {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Control {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_c2c"))
            .args([
                "--state-dir",
                dir.path().to_str().unwrap(),
                "control",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url_file = dir.path().join("control/url");
        let end = Instant::now() + Duration::from_secs(10);
        while !url_file.exists() {
            assert!(Instant::now() < end, "control did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = std::fs::read_to_string(url_file).unwrap();
        Self { child, dir, url }
    }

    fn c2c(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_c2c"))
            .args(args)
            .env("C2C_STATE_DIR", self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.c2c(args);
        assert!(
            o.status.success(),
            "c2c {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// A client cert from the platform CA with CN `cn`.
    fn cell_cert(&self, cn: &str) -> PathBuf {
        let out = self.dir.path().join(format!("cell-{cn}"));
        self.ok(&[
            "certs",
            "issue",
            "--ca-dir",
            self.dir.path().join("ca").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--instance-id",
            cn,
            "--dns",
            cn,
        ]);
        out
    }

    /// curl with the platform CA; returns (status, body).
    fn curl(&self, extra: &[&str], path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let mut args = vec![
            "-s",
            "--max-time",
            "20",
            "--cacert",
            self.ca().to_str().unwrap().to_owned().leak(),
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let o = Command::new("curl").args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    fn as_cell(&self, cert: &Path, extra: &[&str], path: &str) -> (u16, Value) {
        let c = cert.join("cert.pem");
        let k = cert.join("key.pem");
        let mut args = vec!["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.curl(&args, path)
    }
}

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
    assert!(
        out.contains("Adding network policy to app appb from app appa... OK"),
        "{out}"
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
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
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
    let table = ctl.ok(&["network-policies", "--app", "appa"]);
    assert_eq!(table.lines().count(), 2, "{table}");

    // One-line errors a user can act on.
    let o = ctl.c2c(&["add-network-policy", "appa", "nope"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("app nope not found"), "{err}");
    // Names are path segments: whatever a user types stays one name, and is named back as typed.
    for name in ["no such/app", "a?b#c", "100%"] {
        let o = ctl.c2c(&["network-policies", "--app", name]);
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
        assert!(!o.status.success(), "{port} {proto}");
    }
    let o = ctl.c2c(&["create-app", "appa"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn the_api_validates_like_cf_and_refuses_without_a_token() {
    let ctl = Control::start();
    let token = std::fs::read_to_string(ctl.dir.path().join("control/token")).unwrap();
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
    let body = format!(
        r#"{{"app_guid":"{}","index":0,"ip":"10.255.0.1"}}"#,
        guid("appb")
    );
    let (code, _) = ctl.as_cell(
        &cell1,
        &["-X", "PUT", "-d", &body],
        "/v1/cells/cell1/instances/inst-b0",
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
    ctl.ok(&["add-network-policy", "appa", "appb", "--port", "8080"]);
    let (waited, view) = watch.join().unwrap();
    assert!(
        waited < Duration::from_secs(20),
        "the watch did not wake on the change"
    );
    assert!(view["revision"].as_u64().unwrap() > rev);
    assert_eq!(view["policies"][0]["destination"], guid("appb"));
    assert_eq!(view["policies"][0]["start"], 8080);
}
