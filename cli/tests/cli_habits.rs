//! The CLI as a cf user's hands expect it, driven as a user does: `--json` on the security-group
//! and token lists, cf's `FAILED` line, an unknown verb (never answered with a destructive
//! suggestion), and help grouped with examples and related verbs.

mod support;

use support::Control;

fn run(ctl: &Control, args: &[&str]) -> (Option<i32>, String, String) {
    let o = ctl.c2c(args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn security_groups_and_tokens_print_json() {
    let ctl = Control::start();
    ctl.ok(&["create-app", "appa"]);
    ctl.ok(&["create-org", "o1"]);
    ctl.ok(&["create-space", "s1", "-o", "o1"]);
    let rules = ctl.dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"protocol":"udp","destination":"10.0.0.2","ports":"53"}]"#,
    )
    .unwrap();
    ctl.ok(&["create-security-group", "dns", rules.to_str().unwrap()]);
    ctl.ok(&["bind-security-group", "dns", "o1", "--space", "s1"]);
    ctl.ok(&["bind-running-security-group", "dns"]);
    ctl.ok(&[
        "token", "create", "alice", "--app", "appa", "--space", "o1/s1",
    ]);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = ctl.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let all = json(&["security-groups", "--json"]);
    let dns = all["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "dns")
        .unwrap_or_else(|| panic!("{all}"))
        .clone();
    assert_eq!(dns["rules"][0]["destination"], "10.0.0.2", "{dns}");
    assert_eq!(dns["running_default"], true);
    assert_eq!(dns["staging_default"], false);
    assert_eq!(dns["spaces"][0]["org"], "o1", "{dns}");
    assert_eq!(dns["spaces"][0]["space"], "s1");
    assert_eq!(dns["spaces"][0]["lifecycle"], "running");
    // One group: the same shape.
    assert_eq!(json(&["security-group", "dns", "--json"]), dns);

    let users = json(&["tokens", "--json"]);
    let alice = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap_or_else(|| panic!("{users}"))
        .clone();
    assert_eq!(alice["scope"], "network.write");
    assert_eq!(alice["apps"], serde_json::json!(["appa"]), "{alice}");
    assert_eq!(alice["app_guids"][0].as_str().unwrap().len(), 36);
    assert_eq!(alice["spaces"], serde_json::json!(["o1/s1"]));
    assert_eq!(alice["tokens"], 1);
    // The table's columns line up: each row's grants start where the header's do.
    let table = ctl.ok(&["tokens"]);
    let col = table.lines().next().unwrap().find("apps / spaces").unwrap();
    let row = table.lines().find(|l| l.starts_with("alice")).unwrap();
    assert_eq!(row.find("appa"), Some(col), "{table}");
}

#[test]
fn failures_end_with_cf_failed_line_but_not_in_json() {
    let ctl = Control::start();
    let (code, out, err) = run(&ctl, &["app", "nosuch"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "FAILED\n");
    assert!(err.starts_with("c2c: "), "{err}");
    // Where stdout is a program's, it stays empty: a script's parser sees no stray line.
    let (code, out, _) = run(&ctl, &["app", "nosuch", "--json"]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    // A usage error did nothing: exit 2, nothing on stdout.
    let (code, out, _) = run(&ctl, &["scale", "appa", "-i", "many"]);
    assert_eq!((code, out.as_str()), (Some(2), ""));
    // Positive control: success has no FAILED.
    ctl.ok(&["create-app", "appa"]);
    assert!(!ctl.ok(&["app", "appa"]).contains("FAILED"));
}

#[test]
fn an_unknown_verb_never_suggests_a_destructive_one() {
    let ctl = Control::start();
    // Clap's own suggestion for "domains" is "down", which would take the platform away.
    let (code, out, err) = run(&ctl, &["domains"]);
    assert_eq!(code, Some(2));
    assert_eq!(out, "");
    assert_eq!(
        err,
        "'domains' is not a registered command. See 'c2c --help'.\n"
    );
    for typo in ["delet", "remove-network-polic", "unmap-rout", "dow"] {
        let (code, _, err) = run(&ctl, &[typo]);
        assert_eq!(code, Some(2));
        let suggested = err.split("Did you mean?").nth(1).unwrap_or("");
        for verb in ["delete", "remove-network-policy", "unmap-route", "down"] {
            assert!(!suggested.contains(verb), "{typo}: {err}");
        }
    }
    // A harmless one is still suggested.
    let (code, _, err) = run(&ctl, &["network-polices"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("Did you mean?\n"), "{err}");
    assert!(err.contains("\n  network-policies\n"), "{err}");
}

#[test]
fn help_is_grouped_with_examples_and_related_verbs() {
    let ctl = Control::start();
    let top = ctl.ok(&["--help"]);
    let at = |s: &str| top.find(s).unwrap_or_else(|| panic!("{s} not in {top}"));
    // The everyday verbs first, in cf's groups.
    assert!(at("Apps:\n  push") < at("Routes:\n"), "{top}");
    assert!(at("Routes:\n") < at("Network policies:\n"));
    assert!(at("Network policies:\n") < at("Security groups:\n"));
    assert!(at("Security groups:\n") < at("Orgs and spaces:\n"));
    assert!(at("Orgs and spaces:\n") < at("Local platform (needs root):\n"));
    assert!(at("Local platform (needs root):\n") < at("Operator:\n"));
    assert!(top.contains("Exit codes: 0 done"));
    let push = ctl.ok(&["push", "--help"]);
    assert!(push.contains("Examples:\n  c2c push appA\n"), "{push}");
    assert!(
        push.contains("See also: apps, app, scale, stop, start"),
        "{push}"
    );
    let policy = ctl.ok(&["add-network-policy", "--help"]);
    assert!(
        policy.contains("See also: remove-network-policy, network-policies"),
        "{policy}"
    );
}

/// ROOT TEST (as root it drops to `nobody`; skipped otherwise): a user who may not read the
/// state dir's admin token is told so once, with how to get a token of their own; with one, the
/// same command works.
#[test]
fn root_a_user_without_the_admin_token_is_told_how_to_get_one() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the CLI as nobody)");
        return;
    }
    let ctl = Control::start();
    ctl.ok(&["create-app", "appa"]);
    // Others may walk to the files: only the token keeps its 0600.
    for d in [ctl.dir.path().to_path_buf(), ctl.dir.path().join("control")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let token = ctl.ok(&["token", "create", "bob", "--app", "appa"]);
    let as_nobody = |token: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_c2c"));
        c.args(["--state-dir", ctl.dir.path().to_str().unwrap(), "apps"])
            .env_remove("C2C_TOKEN")
            .env_remove("C2C_TOKEN_FILE")
            .uid(65534)
            .gid(65534);
        if let Some(t) = token {
            c.env("C2C_TOKEN", t.trim());
        }
        c.output().unwrap()
    };
    let o = as_nobody(None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
    assert!(err.contains("`c2c token create NAME ...`"), "{err}");
    assert!(
        err.contains("--token-file FILE, C2C_TOKEN_FILE or C2C_TOKEN"),
        "{err}"
    );
    let o = as_nobody(Some(&token));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("appa"));
}

/// `c2c check` where there is no local platform but a control (a control host's state dir):
/// the cells' agents would host its probes; with no cell it fails on `probes`, saying so,
/// rather than "no platform". Root: check may enter namespaces, so it asks for root first.
#[test]
fn root_check_on_a_control_host_says_what_it_cannot_do_there() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ctl = Control::start();
    let (code, out, err) = run(&ctl, &["check", "--json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let probes = &report["checks"][0];
    assert_eq!(probes["name"], "probes", "{out}");
    assert!(
        probes["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no healthy cell to host the probes")),
        "{out}"
    );
}
