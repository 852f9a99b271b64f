//! An operator's machine runs no control: it names control's replicas, the control issuer and
//! a token with flags or the environment (issue #30, item 2), and every command works from an
//! empty state dir. The issuer is what is trusted: another CA's file is refused.

use std::process::{Command, Output};

mod support;
use support::Control;

/// `c2c ARGS` from an empty state dir, with `env` set.
fn operator(args: &[&str], env: &[(&str, &str)]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_c2c"));
    c.args(args)
        .env("C2C_STATE_DIR", empty.path())
        .env_remove("C2C_TOKEN")
        .env_remove("C2C_CONTROL")
        .env_remove("C2C_CONTROL_CA")
        .env_remove("C2C_TOKEN_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_operators_machine_names_control_its_issuer_and_a_token() {
    let a = Control::start();
    let db = a.dir.path().join("state.db").display().to_string();
    let mut b = Control::start_replica(&a, &["--database", &db]);
    a.ok(&["create-app", "appa"]);
    let issuer = a.dir.path().join("ca/control/ca.pem");
    let token = a.dir.path().join("control/token");
    let (issuer, token) = (issuer.to_str().unwrap(), token.to_str().unwrap());
    let urls = format!("{},{}", b.url, a.url);

    // Flags.
    let o = operator(
        &[
            "apps",
            "--control",
            &urls,
            "--control-ca",
            issuer,
            "--token-file",
            token,
        ],
        &[],
    );
    assert!(
        o.status.success() && text(&o).contains("appa"),
        "{}",
        text(&o)
    );
    // The environment; the first replica gone, the next answers.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let env = [
        ("C2C_CONTROL", urls.as_str()),
        ("C2C_CONTROL_CA", issuer),
        ("C2C_TOKEN_FILE", token),
    ];
    let o = operator(&["apps"], &env);
    assert!(
        o.status.success() && text(&o).contains("appa"),
        "{}",
        text(&o)
    );

    // Without them: a message that says what to give.
    let o = operator(&["apps"], &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--control URL[,URL...] --control-ca FILE --token-file FILE"),
        "{}",
        text(&o)
    );
    // The platform root is not the control issuer: control's certificate does not chain to a
    // file that is not its issuer (here the cells' issuer).
    let cells = a.dir.path().join("ca/cells/ca.pem");
    let o = operator(
        &[
            "apps",
            "--control",
            &a.url,
            "--control-ca",
            cells.to_str().unwrap(),
            "--token-file",
            token,
        ],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("UnknownIssuer") || text(&o).contains("unknown issuer"),
        "{}",
        text(&o)
    );
    // A wrong token is refused by control.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "nope").unwrap();
    let o = operator(
        &[
            "apps",
            "--control",
            &a.url,
            "--control-ca",
            issuer,
            "--token-file",
            bad.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("control refused the token") && text(&o).contains("c2c token create"),
        "{}",
        text(&o)
    );
}
