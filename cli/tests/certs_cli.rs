//! `c2c certs` as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use c2c_certs::CertInfo;

fn c2c(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_c2c"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn leaf(dir: &Path) -> CertInfo {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    CertInfo::from_der(&c2c_certs::info::first_der_from_pem(&pem).unwrap()).unwrap()
}

#[test]
fn ca_init_writes_a_ca_and_refuses_to_overwrite_it() {
    let t = tempfile::tempdir().unwrap();
    let o = c2c(&["certs", "ca", "init", "--dir", "ca"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.path().join("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read(t.path().join("ca/ca.pem")).unwrap();

    let o = c2c(&["certs", "ca", "init", "--dir", "ca"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "c2c: a CA already exists in ca (use --force to replace it)\n"
    );
    assert_eq!(
        std::fs::read(t.path().join("ca/ca.pem")).unwrap(),
        first,
        "CA kept"
    );

    let o = c2c(&["certs", "ca", "init", "--dir", "ca", "--force"], t.path());
    assert!(o.status.success());
    assert_ne!(std::fs::read(t.path().join("ca/ca.pem")).unwrap(), first);
}

#[test]
fn issue_writes_a_leaf_with_the_requested_names() {
    let t = tempfile::tempdir().unwrap();
    assert!(c2c(&["certs", "ca", "init", "--dir", "ca"], t.path())
        .status
        .success());
    let o = c2c(
        &[
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--out",
            "out",
            "--dns",
            "AppB.apps.internal",
            "--dns",
            "0.appb.apps.internal",
            "--ip",
            "10.255.1.2",
            "--instance-id",
            "guid-1",
            "--ttl",
            "2h",
        ],
        t.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("DNS: 0.appb.apps.internal, appb.apps.internal"),
        "{stdout}"
    );
    let info = leaf(&t.path().join("out"));
    assert_eq!(info.common_name.as_deref(), Some("guid-1"));
    assert_eq!(
        info.sans.dns.iter().map(String::as_str).collect::<Vec<_>>(),
        ["0.appb.apps.internal", "appb.apps.internal"]
    );
    assert!(info.sans.ips.contains(&"10.255.1.2".parse().unwrap()));
    let life = info.not_after - info.not_before;
    assert!(
        (life - (2 * 3600 + 300)).abs() < 10,
        "2h plus the 5 min back-dating, got {life}"
    );
    // The chain holds the leaf then the CA.
    let pem = std::fs::read_to_string(t.path().join("out/cert.pem")).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(pem.ends_with(&std::fs::read_to_string(t.path().join("ca/ca.pem")).unwrap()));
}

#[test]
fn issue_refuses_bad_input_with_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    assert!(c2c(&["certs", "ca", "init", "--dir", "ca"], t.path())
        .status
        .success());
    let cases: [(&[&str], &str); 5] = [
        (
            &["--ca-dir", "ca", "--dns", "bad_name.apps.internal"],
            "is not valid",
        ),
        (
            &["--ca-dir", "ca"],
            "give at least one --dns NAME or --ip IP",
        ),
        (
            &["--ca-dir", "ca", "--dns", "a.apps.internal", "--ttl", "0s"],
            "TTL",
        ),
        (
            &["--ca-dir", "missing", "--dns", "a.apps.internal"],
            "reading missing/ca.pem",
        ),
        (&["--ca-dir", "ca", "--ip", "300.1.1.1"], "invalid value"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["certs", "issue", "--out", "out"];
        args.extend_from_slice(extra);
        let o = c2c(&args, t.path());
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
    assert!(
        !t.path().join("out/cert.pem").exists(),
        "nothing written on refusal"
    );
}
