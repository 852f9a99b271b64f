//! ROOT TESTS: the local platform's life: `down` after a failed push, `up` after its state dir
//! was deleted under it (and beside a neighbour platform it must spare), `up` after a reboot,
//! and that it touches only what is its own. Split from root_platform.rs by role. Run as root
//! (CI does); `C2C_SKIP_ROOT_TESTS=1` skips them.

use std::process::Command;

use c2c_integration::cli::*;
use c2c_integration::topo::require_root;

#[test]
fn root_down_cleans_up_after_a_failed_push() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "1"]);
    let dir = platform.dir();
    let o = c2c(dir, &["push", "broken", "--command", "exit 3"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the app exited (exit code 3)"), "{err}");
    // Its placement is taken back: control holds no instance of it, nor does the cell.
    assert!(err.contains("placement is taken back"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&ok(dir, &["apps", "--json"])).unwrap();
    let broken = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "broken")
        .expect("the app stays, as cf's");
    assert_eq!(broken["instances"], serde_json::json!([]), "{broken}");
    assert!(!dir.join("instances/broken/0").exists());
    let prefix = prefix(dir);
    // A cell whose VTEP is gone cannot put a container on the overlay: CNI STATUS says so
    // before anything is started there.
    let cell = format!("{prefix}cell1");
    let o = std::process::Command::new("ip")
        .args(["-n", &cell, "link", "del", "silk-vtep"])
        .status()
        .unwrap();
    assert!(o.success());
    let o = c2c(dir, &["push", "late"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cell1 is not ready") && err.contains("silk-vtep"),
        "{err}"
    );
    ok(dir, &["down"]);
    assert_nothing_left(dir, &prefix);
    // Refusals a user can act on.
    let o = c2c(dir, &["push", "x"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("c2c up"),
        "no platform: says to run up"
    );
}

/// A platform whose state dir is deleted while it runs: the next `up` there removes what it
/// left and starts clean, and a platform whose state dir merely shares a prefix of the path is
/// left alone (processes are matched by whole path, not substring).
#[test]
fn root_up_after_the_state_dir_was_deleted_starts_clean_and_spares_neighbours() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("p"), t.path().join("p2"));
    let (_down_a, _down_b) = (Down(&a), Down(&b));
    ok(&a, &["up", "--cells", "1"]);
    ok(&b, &["up", "--cells", "1"]);
    ok(&a, &["push", "appA"]);
    let prefix_a = prefix(&a);
    std::fs::remove_dir_all(&a).unwrap();

    let o = c2c(&a, &["up", "--cells", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("left behind") && err.contains(&format!("namespace {prefix_a}appA-0")),
        "{err}"
    );
    ok(&a, &["push", "appA"]);
    // The neighbour's control and agent survived both of a's `up`s.
    ok(&b, &["push", "appB"]);
    assert!(ok(&b, &["apps"]).contains("appB"));

    ok(&a, &["down"]);
    assert_nothing_left(&a, &prefix_a);
    let prefix_b = prefix(&b);
    ok(&b, &["down"]);
    assert_nothing_left(&b, &prefix_b);
}

/// A reboot, as far as the platform can tell: every process gone and every namespace with it,
/// the state dir intact. `up` brings control and the cells back, removes the instances that
/// could not survive, and apps and policies are still there for the next push.
#[test]
fn root_up_after_a_reboot_keeps_apps_and_policies_and_drops_lost_instances() {
    if !require_root() {
        return;
    }
    let platform = TempPlatform::up(&["--cells", "2"]);
    let dir = platform.dir();
    // `up` again with a flag what runs was started without: exit 0, and it says so (issue
    // #31: it was silently ignored); without the flag, nothing to say.
    let o = c2c(dir, &["up", "--cells", "2", "--log-c2c"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("flags not applied") && err.contains("cell1's agent runs without --log-c2c"),
        "{err}"
    );
    let o = c2c(dir, &["up", "--cells", "2"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("not applied"));
    ok(dir, &["push", "appA", "--cell", "cell1"]);
    ok(dir, &["push", "appB", "--cell", "cell2"]);
    allow(dir, "appA", "appB", "8080");
    let prefix = prefix(dir);
    // The "reboot": our processes (by the PIDs we recorded) and our namespaces go.
    let pidfiles = [
        "control/control.pid",
        "metrics-relay.pid",
        "cells/cell1/agent.pid",
        "cells/cell2/agent.pid",
        "instances/appA/0/app.pid",
        "instances/appA/0/proxy.pid",
        "instances/appB/0/app.pid",
        "instances/appB/0/proxy.pid",
    ];
    for f in pidfiles {
        let pid: i32 = std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    for ns in named("/run/netns", &prefix) {
        assert!(Command::new("ip")
            .args(["netns", "del", &ns])
            .status()
            .unwrap()
            .success());
    }

    let o = c2c(dir, &["up", "--cells", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for lost in ["appA/0 did not survive", "appB/0 did not survive"] {
        assert!(err.contains(lost), "{err}");
    }
    let apps = ok(dir, &["apps"]);
    assert!(
        apps.contains("appA") && apps.contains("appB") && !apps.contains(" on cell"),
        "apps stay, lost instances go: {apps}"
    );
    assert!(ok(dir, &["network-policies"]).contains("appA"));
    ok(dir, &["push", "appA", "--cell", "cell1"]);
    ok(dir, &["push", "appB", "--cell", "cell2"]);
    let b = ip_of(dir, "appB/0");
    let (code, body) = curl_allowed(dir, "appA", &format!("http://{b}:8080/"));
    assert_eq!(
        (code, body.trim()),
        (0, format!("app=appB index=0 ip={b}").as_str()),
        "the policy survived the reboot"
    );
    assert_eq!(
        resolve(dir, "appA", "appb.apps.internal"),
        std::collections::BTreeSet::from([b])
    );
    ok(dir, &["down"]);
    assert_nothing_left(dir, &prefix);
}

/// The platform harms nothing that is not its own: a name that is no app name never reaches a
/// path (`c2c delete ..` used to remove the CA, the token and every instance before control
/// refused it), and a process that merely names the state dir on its command line, outside
/// the platform's namespaces, survives `up` and `down` (they used to SIGKILL it).
#[test]
fn root_the_platform_touches_only_what_is_its_own() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let _down = Down(&dir);
    // A stranger in the root namespace whose command line names a file in the state dir.
    let watched = dir.join("operator-notes.txt");
    std::fs::write(&watched, "mine\n").unwrap();
    /// Ends the stranger (by the handle we hold) even when the test fails.
    struct Stranger(std::process::Child);
    impl Drop for Stranger {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stranger = Stranger(
        Command::new("tail")
            .arg("-f")
            .arg(&watched)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alive = |c: &mut Stranger| c.0.try_wait().unwrap().is_none();

    ok(&dir, &["up", "--cells", "1"]);
    assert!(
        alive(&mut stranger),
        "up killed a process that is not the platform's"
    );
    ok(&dir, &["push", "appA"]);

    for bad in ["..", ".", "", "../x", "../../etc/0", "./appA"] {
        let o = c2c(&dir, &["delete", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "delete {bad:?} succeeded");
        assert!(err.contains("invalid app name"), "delete {bad:?}: {err}");
    }
    let o = c2c(&dir, &["delete", "appA/../../.."]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("index must be a number"));
    // Positive control: nothing was removed, and appA is still served.
    for kept in [
        "ca/ca.pem",
        "ca/ca.key",
        "control/token",
        "instances/appA/0/instance.json",
    ] {
        assert!(dir.join(kept).exists(), "{kept} is gone");
    }
    let (code, body) = curl(&dir, "appA", "http://127.0.0.1:8080/");
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("app=appA"), "{body}");
    ok(&dir, &["delete", "appA"]);
    assert!(!ok(&dir, &["apps"]).contains("appA"));

    let prefix = prefix(&dir);
    ok(&dir, &["down"]);
    assert!(
        alive(&mut stranger),
        "down killed a process that is not the platform's"
    );
    assert_eq!(std::fs::read_to_string(&watched).unwrap(), "mine\n");
    drop(stranger);
    assert_nothing_left(&dir, &prefix);
}
