//! ROOT TEST: `c2c check` on a live local platform. It passes on a fresh one (every check, as
//! JSON a script reads) and leaves nothing behind; with a destination's certificate directory
//! made immutable, route-hot names the stale certificate; with a cell's rules removed by hand while its
//! agent is stopped (so nothing puts them back), it fails, naming the cell and what it saw:
//! default deny broken there, and a policy change that cell never applied. Its own security
//! group: a group of that name it did not make is left alone (and the check says so), a group
//! bound to every space that opens egress fails `egress`, and a token scoped to the probe
//! space runs every check but `egress`, which it is told to skip. An app of a probe's name in
//! another space is left alone too.

use std::process::Command;

use c2c_integration::cli::*;
use c2c_integration::topo::require_root;

fn checks(out: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v["checks"].as_array().unwrap().clone()
}

fn by_name<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

/// A check run that must fail (exit 1): the reason the check `name` gave.
fn failed_reason(o: std::process::Output, name: &str) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let all = checks(&String::from_utf8_lossy(&o.stdout));
    by_name(&all, name)["reason"].as_str().unwrap().to_string()
}

fn probe_apps(dir: &std::path::Path) -> usize {
    let v: serde_json::Value = serde_json::from_str(&ok(dir, &["apps", "--json"])).unwrap();
    v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"].as_str().unwrap().starts_with("c2c-check-"))
        .count()
}

#[test]
fn root_check_passes_on_a_fresh_platform_and_names_a_broken_cell() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "2"]);
    let dir = platform.dir();

    // A fresh platform: every check passes, and the probes are gone afterwards.
    let all = checks(&ok(dir, &["check", "--json"]));
    assert_eq!(all.len(), 15, "{all:?}");
    for c in &all {
        assert_eq!(c["ok"], true, "{c}");
    }
    let detail = |name: &str| by_name(&all, name)["detail"].as_str().unwrap().to_string();
    assert!(detail("deny-cross-cell").contains("on cell2:8080: refused"));
    assert!(
        detail("deny-udp").contains("c2c-check-b/1 on cell2: "),
        "{all:?}"
    );
    assert!(
        detail("policy-protocol").contains(
            "a udp policy: c2c-check-a/0 on cell1 -> c2c-check-b:8080/udp open on every cell"
        ),
        "{all:?}"
    );
    // Egress from the cell's underlay address (cell1 is 192.0.2.1), the other port refused.
    assert!(
        detail("egress").contains("(seen from 192.0.2.1)"),
        "{all:?}"
    );
    assert!(detail("egress").contains("stayed refused"), "{all:?}");
    assert_eq!(probe_apps(dir), 0);
    assert!(
        !ok(dir, &["security-groups"]).contains("c2c-check-egress"),
        "the check's group is gone"
    );

    // An app of a probe's name in another space (app names are the platform's): the check
    // neither deletes it nor places probes of it, and says why.
    ok(dir, &["create-app", "c2c-check-a"]);
    let reason = failed_reason(c2c(dir, &["check", "--json", "--only", "dns"]), "probes");
    assert!(
        reason.contains("exists outside c2c-check/probes"),
        "{reason}"
    );
    assert_eq!(probe_apps(dir), 1, "the user's app stays");
    ok(dir, &["delete", "c2c-check-a", "-f"]);

    // A group of the check's name that the check did not make: left alone, and said.
    let rules = dir.join("open.json");
    std::fs::write(
        &rules,
        r#"[{"protocol":"all","destination":"0.0.0.0-255.255.255.255"}]"#,
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    ok(dir, &["create-security-group", "c2c-check-egress", rules]);
    let reason = failed_reason(c2c(dir, &["check", "--json", "--only", "egress"]), "egress");
    assert!(reason.contains("that the check did not make"), "{reason}");
    assert!(ok(dir, &["security-groups"]).contains("c2c-check-egress"));
    ok(dir, &["delete-security-group", "c2c-check-egress", "-f"]);

    // A group bound to every space opens egress before the check's own: egress fails.
    ok(dir, &["create-security-group", "open-all", rules]);
    ok(dir, &["bind-running-security-group", "open-all"]);
    let reason = failed_reason(c2c(dir, &["check", "--json", "--only", "egress"]), "egress");
    assert!(
        reason.contains("before any security group of the check's"),
        "{reason}"
    );
    ok(dir, &["delete-security-group", "open-all", "-f"]);

    // A token scoped to the probe space (made by the admin's first run): every check but
    // egress passes; egress says what it lacks.
    let created = ok(
        dir,
        &["token", "create", "checker", "--space", "c2c-check/probes"],
    );
    let token: String = created.chars().take(64).collect();
    let narrow = |args: &[&str]| {
        Command::new(c2c_integration::bin("c2c"))
            .arg("--state-dir")
            .arg(dir)
            .args(args)
            .env("C2C_TOKEN", &token)
            .output()
            .unwrap()
    };
    let o = narrow(&["check", "--json", "--skip", "egress"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(checks(&String::from_utf8_lossy(&o.stdout)).len(), 14);
    let reason = failed_reason(narrow(&["check", "--json", "--only", "egress"]), "egress");
    assert!(reason.contains("--skip egress"), "{reason}");
    assert_eq!(probe_apps(dir), 0);

    // --only runs what it names; --keep leaves the probes for the next run.
    let some = checks(&ok(dir, &["check", "--json", "--keep", "--only", "dns"]));
    let names: Vec<&str> = some.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probes", "dns"]);
    assert_eq!(probe_apps(dir), 2);

    // A stale certificate: the destination's certificate directory made immutable, so its
    // cell's agent cannot write the one with the new route. route-hot fails and says so.
    let certs = dir.join("instances/c2c-check-b/0/certs");
    let frozen = Immutable::set(&certs);
    let o = c2c(
        dir,
        &["check", "--json", "--keep", "--only", "tls,route-hot"],
    );
    drop(frozen);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let stale = checks(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(by_name(&stale, "tls")["ok"], true, "{stale:?}");
    let hot = by_name(&stale, "route-hot");
    assert!(
        hot["reason"]
            .as_str()
            .unwrap()
            .contains("serves a stale certificate"),
        "{hot}"
    );
    // Writable again, the same check passes: the failure was the stale certificate's.
    let again = checks(&ok(
        dir,
        &["check", "--json", "--keep", "--only", "tls,route-hot"],
    ));
    assert_eq!(by_name(&again, "route-hot")["ok"], true, "{again:?}");

    // cell2's agent stopped, its rules removed by hand: nothing restores them.
    let prefix = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("-cell2") && dir_owns(dir, n))
        .expect("cell2's namespace");
    let agent: i32 = std::fs::read_to_string(dir.join("cells/cell2/agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(agent);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deleted = Command::new("ip")
        .args([
            "netns", "exec", &prefix, "nft", "delete", "table", "ip", "c2c",
        ])
        .status()
        .unwrap();
    let o = c2c(dir, &["check", "--json"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(deleted.success());
    assert_eq!(o.status.code(), Some(1));
    let broken = checks(&String::from_utf8_lossy(&o.stdout));
    let deny = by_name(&broken, "deny-cross-cell");
    assert_eq!(deny["ok"], false);
    assert!(
        deny["reason"]
            .as_str()
            .unwrap()
            .contains("cell2 does not enforce default deny"),
        "{deny}"
    );
    let udp = by_name(&broken, "deny-udp");
    assert!(
        udp["reason"]
            .as_str()
            .unwrap()
            .contains("cell2 does not enforce default deny for udp"),
        "{udp}"
    );
    let removed = by_name(&broken, "policy-removed");
    assert!(
        removed["reason"]
            .as_str()
            .unwrap()
            .contains("cell2 has not applied it"),
        "{removed}"
    );
    // The same cell1 checks still pass: the failure is cell2's alone.
    assert_eq!(by_name(&broken, "deny-same-cell")["ok"], true);
    // A failed check removes its probes too.
    assert_eq!(probe_apps(dir), 0);
}

/// `chattr +i` on a directory (nothing can be created, renamed or removed in it), taken off
/// again on drop, also when the test fails.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &std::path::Path) -> Self {
        let s = Command::new("chattr").arg("+i").arg(path).status().unwrap();
        assert!(s.success(), "chattr +i {}", path.display());
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Whether namespace `name` belongs to the platform at `dir` (its prefix is the state dir's).
fn dir_owns(dir: &std::path::Path, name: &str) -> bool {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("platform.json")).unwrap()).unwrap();
    name.starts_with(info["prefix"].as_str().unwrap())
}
