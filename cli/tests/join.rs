//! Cells that join over the network: `c2c cell token create` on the operator's side, `c2c cell
//! join` on the new host (which has no platform files, only the token). Each refusal beside the
//! join that works: a token used twice, an expired one, a guessed one, a token whose pinned CA
//! is not the one control presents (nothing is sent, and the token stays usable), and a user
//! without network.admin making tokens.

use std::path::Path;

mod support;
use support::Control;

fn join(ctl: &Control, token: &str, name: &str, out: &Path) -> std::process::Output {
    // The joining host has no state dir: only the URL and the token.
    std::process::Command::new(env!("CARGO_BIN_EXE_c2c"))
        .args([
            "--state-dir",
            "/nonexistent",
            "cell",
            "join",
            "--control",
            &ctl.url,
            "--token",
            token,
            "--name",
            name,
            "--underlay-ip",
            "192.0.2.7",
            "--out",
            out.to_str().unwrap(),
        ])
        .env_remove("C2C_STATE_DIR")
        .output()
        .unwrap()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_cell_joins_once_with_a_token_that_pins_controls_ca() {
    let ctl = Control::start();
    let token = ctl.ok(&["cell", "token", "create"]).trim().to_string();
    assert!(token.starts_with("c2cjoin."), "{token}");
    let host = tempfile::tempdir().unwrap();

    // A token whose pin is another CA's (here the platform root's, not control's issuer):
    // refused before anything is sent, and the token stays usable.
    let (prefix, _) = token.rsplit_once('.').unwrap();
    let root_der = c2c_certs::info::first_der_from_pem(&std::fs::read(ctl.ca()).unwrap()).unwrap();
    let wrong = format!("{prefix}.{}", c2c_api::pin::sha256_hex(&root_der));
    let o = join(&ctl, &wrong, "cell7", &host.path().join("x"));
    assert!(!o.status.success());
    assert!(
        err(&o).contains("fingerprint in the join token"),
        "{}",
        err(&o)
    );
    assert!(!host.path().join("x").exists());

    // The join.
    let out = host.path().join("tls");
    let o = join(&ctl, &token, "cell7", &out);
    assert!(o.status.success(), "{}", err(&o));
    for f in [
        "cert.pem",
        "key.pem",
        "control-ca.pem",
        "agent.env",
        "platform-ca.pem",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The platform root the host was handed is the platform's own (what apps verify against).
    assert_eq!(
        std::fs::read(out.join("platform-ca.pem")).unwrap(),
        std::fs::read(ctl.ca()).unwrap()
    );
    let env = std::fs::read_to_string(out.join("agent.env")).unwrap();
    assert!(
        env.contains("C2C_CELL=cell7\n") && env.contains(&format!("C2C_CONTROL_URL={}\n", ctl.url)),
        "{env}"
    );
    // The key never left the host: control holds only the certificate's fingerprint, and the
    // cell API answers this identity.
    let (code, lease) = ctl.as_cell(
        &out,
        &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.7"}"#],
        "/v1/cells/cell7/lease",
    );
    assert_eq!(code, 200, "{lease}");
    assert!(ctl.ok(&["cells"]).contains("cell7"));

    // Used once only.
    let o = join(&ctl, &token, "cell8", &host.path().join("y"));
    assert!(
        err(&o).contains("already used (by cell cell7)"),
        "{}",
        err(&o)
    );
    // The attack: a (leaked) token for a new cell used to take over cell7's name. Refused; the
    // real cell7 keeps working. A token made for that name replaces its identity (a
    // reinstalled host), and the old certificate is refused from then on.
    let loose = ctl.ok(&["cell", "token", "create"]).trim().to_string();
    let o = join(&ctl, &loose, "cell7", &host.path().join("evil"));
    assert!(err(&o).contains("registered already"), "{}", err(&o));
    let lease = |dir: &Path| {
        ctl.as_cell(
            dir,
            &["-X", "POST", "-d", r#"{"underlay_ip":"192.0.2.7"}"#],
            "/v1/cells/cell7/lease",
        )
        .0
    };
    assert_eq!(lease(&out), 200);
    let bound = ctl
        .ok(&["cell", "token", "create", "--name", "cell7"])
        .trim()
        .to_string();
    let o = join(&ctl, &bound, "cell8", &host.path().join("y"));
    assert!(err(&o).contains("for cell cell7, not cell8"), "{}", err(&o));
    let out2 = host.path().join("tls2");
    let o = join(&ctl, &bound, "cell7", &out2);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(lease(&out2), 200);
    assert_eq!(lease(&out), 403);

    // A guessed secret.
    let parts: Vec<&str> = token.split('.').collect();
    let guessed = format!("c2cjoin.{}.{}", "0".repeat(64), parts[2]);
    let o = join(&ctl, &guessed, "cell8", &host.path().join("y"));
    assert!(err(&o).contains("invalid join token"), "{}", err(&o));
    // Expired.
    let short = ctl
        .ok(&["cell", "token", "create", "--ttl", "1s"])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = join(&ctl, &short, "cell8", &host.path().join("y"));
    assert!(err(&o).contains("expired"), "{}", err(&o));
    assert!(!ctl.ok(&["cells"]).contains("cell8"));

    // Only network.admin makes join tokens.
    ctl.ok(&["create-app", "appa"]);
    let o = ctl.c2c(&["token", "create", "dev", "--app", "appa"]);
    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = ctl.c2c_as(Some(&dev), &["cell", "token", "create"]);
    assert!(
        err(&o).contains("provided scopes [network.write]"),
        "{}",
        err(&o)
    );
    // Nor lists or revokes them.
    let o = ctl.c2c_as(Some(&dev), &["cell", "token", "list"]);
    assert!(
        err(&o).contains("provided scopes [network.write]"),
        "{}",
        err(&o)
    );

    // Issue #23: an unused token that leaked could be neither listed nor revoked (it lived up
    // to 30 days). The admin lists tokens (ids, never secrets) and revokes the leaked one; a
    // used token stays listed as used, and another unused one keeps working.
    let leaked = ctl.ok(&["cell", "token", "create"]).trim().to_string();
    let kept = ctl.ok(&["cell", "token", "create"]).trim().to_string();
    let id_of = |t: &str| {
        let secret = t.split('.').nth(1).unwrap();
        c2c_api::pin::sha256_hex(secret.as_bytes())[..12].to_string()
    };
    let list = ctl.ok(&["cell", "token", "list"]);
    let leaked_secret = leaked.split('.').nth(1).unwrap();
    assert!(!list.contains(leaked_secret), "a secret listed: {list}");
    let row = |id: &str| list.lines().find(|l| l.starts_with(id)).map(str::to_string);
    assert!(row(&id_of(&leaked)).unwrap().ends_with("unused"), "{list}");
    assert!(
        row(&id_of(&token)).unwrap().ends_with("used by cell7"),
        "{list}"
    );
    assert!(row(&id_of(&bound)).unwrap().contains("cell7"), "{list}");
    let out = ctl.ok(&["cell", "token", "revoke", &id_of(&leaked)]);
    assert!(out.contains("Revoked"), "{out}");
    let o = join(&ctl, &leaked, "cell9", &host.path().join("leaked"));
    assert!(err(&o).contains("invalid join token"), "{}", err(&o));
    assert!(!ctl.ok(&["cells"]).contains("cell9"));
    // A used token cannot be revoked (it is spent); a bad id is a clear error.
    assert!(ctl
        .ok(&["cell", "token", "revoke", &id_of(&token)])
        .contains("No unused join token"));
    let o = ctl.c2c(&["cell", "token", "revoke", "../x"]);
    assert!(err(&o).contains("12 hex digits"), "{}", err(&o));
    // Positive control: the other unused token still joins.
    let o = join(&ctl, &kept, "cell9", &host.path().join("kept"));
    assert!(o.status.success(), "{}", err(&o));
}
