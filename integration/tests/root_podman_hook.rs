//! ROOT TEST: the sidecar injected into containers a real runtime starts. podman (CNI backend,
//! runc, a busybox rootfs) on a platform's cell with `c2c-hook` installed in its hooks
//! directory: `podman run --network c2c --annotation c2c.app=APP` gives the container what
//! `c2c push` gives an instance (placement in control by the runtime's token, a certificate
//! with the app's routes, the sidecar on 61443 in its namespace, the cell DNS, policies by app);
//! `podman stop` takes all of it away and `podman start` gives it back; so does `podman rm`. Attacks beside the positive controls: a container of an
//! app the runtime's token may not place is refused; a container without the annotation gets an
//! address and nothing else; default deny holds between podman's apps until a policy names them.
//! Run as root (CI installs podman, runc and busybox-static); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use c2c_api::layout::Layout;
use c2c_integration::podman::{tls_get, Podman};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

/// c2c-hook's config for cell `n` (its data dir, the runtime's `token`, new apps in o1/dev),
/// installed by `c2c-hook install` into a hooks directory of its own, which is returned.
fn install_hook(p: &Platform, n: u8, token: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path();
    std::fs::write(h.join("token"), token).unwrap();
    let layout = Layout::new(&p.dir.path().join("state"));
    std::fs::write(
        h.join("hook.json"),
        serde_json::json!({
            "control": p.url.trim(),
            "ca_file": layout.control_issuer(),
            "token_file": h.join("token"),
            "cell": format!("cell{n}"),
            "data_dir": p.dir.path().join(format!("cell{n}-cni")),
            "space": "o1/dev",
            "wait": 5,
        })
        .to_string(),
    )
    .unwrap();
    let hooks = h.join("hooks.d");
    let install = || {
        Command::new(c2c_integration::bin("c2c-hook"))
            .arg("--config")
            .arg(h.join("hook.json"))
            .args(["install", "--hooks-dir"])
            .arg(&hooks)
            .output()
            .unwrap()
    };
    // A token file other users can read (written with the usual umask) is refused, and
    // nothing is installed; made private, it is taken.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(h.join("token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = install();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!hooks.exists());
    std::fs::set_permissions(h.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = install();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, hooks)
}

/// Control's placements: (app guid, index, cell, ip) by instance GUID.
fn placements(p: &Platform) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&p.c2c(&["curl", "/v1/instances"])).unwrap();
    v["instances"].as_array().unwrap().clone()
}

fn ip_of(p: &Platform, app: &str) -> Option<String> {
    let guid = p.app_guid(app);
    placements(p)
        .iter()
        .find(|i| i["app_guid"] == guid.as_str())
        .and_then(|i| i["ip"].as_str().map(str::to_string))
}

fn pid_in(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn running(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

#[test]
fn root_podman_containers_with_the_annotation_get_identity_sidecar_dns_and_policy() {
    if !require_root() {
        return;
    }
    let mut p = Platform::start(2);
    let state = p.dir.path().join("state");
    let layout = Layout::new(&state);
    let ca = layout.ca_dir().join("ca.pem");

    // The runtime's credential on this host: a user's token for one space (what `c2c push`
    // needs), not the cell's certificate. An app of another space exists too.
    p.c2c(&["create-org", "o1"]);
    p.c2c(&["create-space", "dev", "-o", "o1"]);
    p.c2c(&["create-app", "other"]);
    let token = p.c2c(&["token", "create", "podman", "--space", "o1/dev"]);
    let (_h1, hooks1) = install_hook(&p, 1, token.trim());
    let (_h2, hooks2) = install_hook(&p, 2, token.trim());
    let data_dir = p.dir.path().join("cell1-cni");
    let podman = Podman::new(&p, 1, Some(&hooks1));
    let podman2 = Podman::new(&p, 2, Some(&hooks2));
    let httpd = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"];

    let id_a = podman
        .start("a", &["--annotation", "c2c.app=appa"], &httpd)
        .expect("podman run appa");
    let id_b = podman
        .start("b", &["--annotation", "c2c.app=appb"], &httpd)
        .expect("podman run appb");
    // A second instance of appb, on the other cell.
    podman2
        .start("b2", &["--annotation", "c2c.app=appb"], &httpd)
        .expect("podman run appb on cell2");
    let ips_b: Vec<String> = {
        let g = p.app_guid("appb");
        placements(&p)
            .iter()
            .filter(|i| i["app_guid"] == g.as_str())
            .map(|i| {
                i["ip"]
                    .as_str()
                    .expect("confirmed with its address")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(ips_b.len(), 2);
    let ip_b = ip_of(&p, "appb").unwrap();
    assert_eq!(ip_b, ips_b[0], "index 0 is the first container's");
    assert!(ip_of(&p, "appa").is_some());
    let apps = p.c2c(&["apps"]);
    for app in ["appa", "appb"] {
        let row = apps
            .lines()
            .find(|l| l.starts_with(app))
            .unwrap_or_else(|| panic!("{app} in:\n{apps}"));
        assert!(
            row.contains("#0") && row.contains("on cell1 (podman "),
            "{row}"
        );
    }
    let rec_a: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir.join(format!("containers/{id_a}.json"))).unwrap(),
    )
    .unwrap();
    let netns_a = rec_a["netns"].as_str().unwrap().to_string();

    // Its identity at Cloud Foundry's paths, mounted by the hook from the agent's identity dir
    // (the same files the agent renews in place), with the platform root beside it.
    let (code, pem) = podman.exec("a", &["cat", "/etc/cf-instance-credentials/instance.crt"]);
    assert_eq!(code, 0, "{pem}");
    let subject = {
        let mut child = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-ext", "subjectAltName"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pem.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let a_guid = p.app_guid("appa");
    assert!(
        subject.contains(&format!("OU = app:{a_guid}"))
            && subject.contains(&format!("URI:spiffe://c2c.internal/app/{a_guid}")),
        "{subject}"
    );
    let (code, out) = podman.exec(
        "a",
        &["sh", "-c", "test -f /etc/cf-instance-credentials/instance.key && test -f /etc/cf-system-certificates/c2c-platform-ca.pem"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, _) = podman.exec("a", &["touch", "/etc/cf-instance-credentials/x"]);
    assert_ne!(code, 0, "the identity is mounted read-only");
    let (_, root_in) = podman.exec(
        "a",
        &["cat", "/etc/cf-system-certificates/c2c-platform-ca.pem"],
    );
    assert_eq!(
        root_in,
        std::fs::read_to_string(&ca).unwrap(),
        "the platform root"
    );

    // The cell DNS is the container's resolver, and knows podman's instances by app name.
    let (_, resolv) = podman.exec("a", &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("169.254.0.1"), "resolv.conf: {resolv}");
    let (code, answer) = podman.exec("a", &["nslookup", "appb.apps.internal"]);
    assert!(
        code == 0 && ips_b.iter().all(|ip| answer.contains(ip.as_str())),
        "the route names both instances: {code} {answer}"
    );
    let (_, answer) = podman.exec("a", &["nslookup", "1.appb.apps.internal"]);
    assert!(
        answer.contains(&ips_b[1]) && !answer.contains(&ips_b[0]),
        "{answer}"
    );

    // Default deny between the two apps, then a policy by app name opens 8080 (and 61443).
    // (busybox's own wget crashes when static; nc speaks the HTTP/1.0 request instead.)
    let http_get = |ip: &str| {
        let req = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080");
        let (code, out) = podman.exec("a", &["sh", "-c", &req]);
        code == 0 && out.ends_with("hello from podman\n")
    };
    assert!(!http_get(&ip_b), "default deny");
    assert_ne!(tls_get(&netns_a, &ca, "appb.apps.internal", &ip_b).0, 0);
    p.allow("appa", "appb", "tcp", "8080");
    p.allow("appa", "appb", "tcp", "61443");
    wait_until("appa reaches appb:8080", Duration::from_secs(10), || {
        http_get(&ip_b)
    });

    // TLS to the sidecar, verified against the platform CA under appb's internal name.
    wait_until(
        "appb's sidecar answers TLS",
        Duration::from_secs(10),
        || tls_get(&netns_a, &ca, "appb.apps.internal", &ip_b) == (0, "hello from podman\n".into()),
    );
    // The second instance, on the other cell, by its own name.
    wait_until(
        "appb/1's sidecar answers as 1.appb.apps.internal",
        Duration::from_secs(10),
        || tls_get(&netns_a, &ca, "1.appb.apps.internal", &ips_b[1]).0 == 0,
    );
    let sidecar_b = data_dir.join(format!("sidecars/{id_b}"));
    let pid = pid_in(&sidecar_b.join("proxy.pid")).expect("sidecar pidfile");
    // The key is root's, on the host: not in the container's filesystem.
    let certs = sidecar_b.join("certs");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&certs).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_ne!(
        podman
            .exec("b", &["cat", certs.join("key.pem").to_str().unwrap()])
            .0,
        0
    );

    // map-route: the running sidecar serves the new name, without a restart.
    assert_ne!(
        tls_get(&netns_a, &ca, "appb-alias.apps.internal", &ip_b).0,
        0
    );
    p.c2c(&[
        "map-route",
        "appb",
        "apps.internal",
        "--hostname",
        "appb-alias",
    ]);
    wait_until(
        "the new route is in appb's certificate",
        Duration::from_secs(10),
        || tls_get(&netns_a, &ca, "appb-alias.apps.internal", &ip_b).0 == 0,
    );
    assert_eq!(
        pid_in(&sidecar_b.join("proxy.pid")),
        Some(pid),
        "not restarted"
    );
    assert!(running(pid));

    // A container that declares its app's protocol (c2c.app-protocol): the app's setting, and
    // its sidecar offers h2 in ALPN (openssl, from appa's namespace).
    podman2
        .start(
            "g",
            &[
                "--annotation",
                "c2c.app=appg",
                "--annotation",
                "c2c.app-protocol=http2",
            ],
            &httpd,
        )
        .expect("podman run appg");
    assert!(
        p.c2c(&["app", "appg"]).contains("app protocol:    http2"),
        "{}",
        p.c2c(&["app", "appg"])
    );
    p.allow("appa", "appg", "tcp", "61443");
    let ip_g = ip_of(&p, "appg").unwrap();
    let alpn = |offer: &str| {
        let o = Command::new("nsenter")
            .arg(format!("--net={netns_a}"))
            .args(["openssl", "s_client", "-connect", &format!("{ip_g}:61443")])
            .args(["-servername", "appg.apps.internal", "-alpn", offer])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    wait_until(
        "appg's sidecar agrees on h2",
        Duration::from_secs(10),
        || alpn("h2").contains("ALPN protocol: h2"),
    );
    assert!(
        alpn("http/1.1").contains("no application protocol"),
        "an HTTP/1.1-only client is refused"
    );
    // A bad declaration keeps the container from starting, and says why.
    let err = podman2
        .start(
            "bad",
            &[
                "--annotation",
                "c2c.app=appg",
                "--annotation",
                "c2c.app-protocol=h3",
            ],
            &httpd,
        )
        .unwrap_err();
    assert!(err.contains("annotation c2c.app-protocol"), "{err}");
    podman2.ok(&["rm", "-f", "-t", "0", "g", "bad"]);

    // An agent restart leaves the sidecar serving; the new agent adopts it and restarts it
    // when it dies.
    p.start_agent(1);
    // Proof the new agent has looked at the sidecar (its log says it adopted it) before
    // asserting it did not start another.
    let log = p.dir.path().join("agent1.log");
    wait_until(
        "the new agent adopts the sidecar",
        Duration::from_secs(15),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("adopted")),
    );
    assert_eq!(pid_in(&sidecar_b.join("proxy.pid")), Some(pid));
    assert!(running(pid));
    assert_eq!(tls_get(&netns_a, &ca, "appb.apps.internal", &ip_b).0, 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the sidecar is back", Duration::from_secs(10), || {
        pid_in(&sidecar_b.join("proxy.pid")).is_some_and(|p| p != pid && running(p))
            && tls_get(&netns_a, &ca, "appb.apps.internal", &ip_b).0 == 0
    });

    // A container without the annotation: an address, default deny, and nothing else.
    let before = placements(&p).len();
    let id_plain = podman
        .start("plain", &[], &httpd)
        .expect("podman run without c2c.app");
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir.join(format!("containers/{id_plain}.json"))).unwrap(),
    )
    .unwrap();
    assert!(rec["ip"].is_string());
    assert!(
        rec.get("instance_guid").is_none() && rec.get("sidecar").is_none(),
        "{rec}"
    );
    assert_eq!(placements(&p).len(), before);
    assert!(!data_dir.join(format!("sidecars/{id_plain}")).exists());

    // The attack: an annotation naming an app of a space the runtime's token does not hold.
    let err = podman
        .start("forged", &["--annotation", "c2c.app=other"], &httpd)
        .expect_err("a container of an app the token may not place must not start");
    assert!(
        err.contains("may not place instances of app \"other\""),
        "podman said: {err}"
    );
    assert_eq!(placements(&p).len(), before, "nothing placed");
    let records = std::fs::read_dir(data_dir.join("containers"))
        .unwrap()
        .count();
    assert_eq!(
        records, 3,
        "a, b and plain: the refused container's address went back"
    );
    let other = p.app_guid("other");
    assert!(!placements(&p)
        .iter()
        .any(|i| i["app_guid"] == other.as_str()));

    // Issue #23: a container that fails after `createRuntime` (here: no such program) never
    // gets `poststop`; its sidecar directory (the instance's private key) stayed on the cell,
    // also after `podman rm`. The agent sweeps the directory of every container without a
    // CNI record, and withdraws its instance (control removes unconfirmed placements after
    // --placement-ttl).
    let broken = podman.start(
        "broken",
        &[
            "--annotation",
            "c2c.app=appb",
            "--annotation",
            "c2c.index=7",
        ],
        &["/no/such/program"],
    );
    assert!(broken.is_err(), "a container without its program started");
    let out = podman.run(&["inspect", "--format", "{{.Id}}", "broken"]);
    let broken_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !broken_id.is_empty(),
        "podman kept no record of the failed container"
    );
    // podman took its network down (the CNI record went); the agent removed the directory the
    // hook had made (the hook had returned: its `createRuntime` succeeded).
    wait_until(
        "the agent sweeps the failed container's sidecar directory (after its 10 s grace)",
        Duration::from_secs(30),
        || {
            p.agents[0]
                .log()
                .lines()
                .any(|l| l.contains("removed the sidecar directory") && l.contains(&broken_id))
        },
    );
    assert!(!data_dir.join(format!("sidecars/{broken_id}")).exists());
    podman.ok(&["rm", "-f", "broken"]);
    let is_b7 = |i: &serde_json::Value| i["index"] == 7 && !i["ip"].is_string();
    wait_until(
        "the failed container's instance is not confirmed",
        Duration::from_secs(10),
        || placements(&p).iter().all(|i| i["index"] != 7 || is_b7(i)),
    );
    let leftover: Vec<String> = std::fs::read_dir(data_dir.join("sidecars"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftover.len(),
        2,
        "only a's and b's sidecar dirs: {leftover:?}"
    );

    // podman stop: the runtime deletes the container (poststop), so the instance, its sidecar
    // and its certificate dir go at once, not at `podman rm`; podman start places it again
    // (the same index, a new address) with a new sidecar serving its names.
    let stopped_pid = pid_in(&sidecar_b.join("proxy.pid")).unwrap();
    podman.ok(&["stop", "-t", "0", "b"]);
    let appb = p.app_guid("appb");
    let is_b0 = |i: &serde_json::Value| i["index"] == 0 && i["app_guid"] == appb.as_str();
    wait_until(
        "a stopped container's instance is gone from control",
        Duration::from_secs(10),
        || !placements(&p).iter().any(is_b0),
    );
    wait_until("its sidecar stopped", Duration::from_secs(10), || {
        !running(stopped_pid)
    });
    assert!(!sidecar_b.exists(), "{} left", sidecar_b.display());
    podman.ok(&["start", "b"]);
    wait_until(
        "the started container is appb/0 again",
        Duration::from_secs(10),
        || placements(&p).iter().any(is_b0),
    );
    let ip_b = ip_of(&p, "appb").unwrap();
    wait_until(
        "its new sidecar answers TLS as 0.appb.apps.internal",
        Duration::from_secs(10),
        || {
            tls_get(&netns_a, &ca, "0.appb.apps.internal", &ip_b)
                == (0, "hello from podman\n".into())
        },
    );
    assert_ne!(pid_in(&sidecar_b.join("proxy.pid")), Some(stopped_pid));

    // podman rm: instance, sidecar, certificate dir and DNS name go.
    let pid = pid_in(&sidecar_b.join("proxy.pid")).unwrap();
    podman.ok(&["rm", "-f", "-t", "0", "b"]);
    wait_until(
        "appb/0's instance is gone from control",
        Duration::from_secs(10),
        || {
            !placements(&p).iter().any(|i| {
                i["ip"] == ip_b.as_str()
                    || i["index"] == 0 && i["app_guid"] == p.app_guid("appb").as_str()
            })
        },
    );
    wait_until("appb's sidecar stopped", Duration::from_secs(10), || {
        !running(pid)
    });
    assert!(!sidecar_b.exists(), "{} left", sidecar_b.display());
    wait_until(
        "appb/0's address is gone from the cell DNS",
        Duration::from_secs(10),
        || {
            let answer = podman.exec("a", &["nslookup", "appb.apps.internal"]).1;
            !answer.contains(&ip_b) && answer.contains(&ips_b[1])
        },
    );
    assert_ne!(
        podman.exec("a", &["nslookup", "0.appb.apps.internal"]).0,
        0,
        "its own name too"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(data_dir.join("sidecars"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 1, "only appa's: {left:?}");

    // With cell2's agent gone, an annotated container cannot get its certificate: it does not
    // start, and the hook takes back its placement and directory.
    let before = placements(&p).len();
    drop(p.agents.remove(1));
    let err = podman2
        .start("late", &["--annotation", "c2c.app=appb"], &httpd)
        .expect_err("no agent, no certificate, no start");
    assert!(err.contains("did not issue"), "podman said: {err}");
    assert_eq!(placements(&p).len(), before);
    let cell2_sidecars = std::fs::read_dir(p.dir.path().join("cell2-cni/sidecars"))
        .unwrap()
        .count();
    assert_eq!(cell2_sidecars, 1, "b2's only");
}
