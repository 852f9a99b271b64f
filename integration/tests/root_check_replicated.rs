//! ROOT TEST: `c2c check` on a replicated local platform: `c2c up --database-file F --replicas 2`
//! (two control replicas on one PostgreSQL database, cells and the CLI knowing both). Every
//! check passes; with replica A killed (-9), the CLI and the cells go on to replica B and every
//! check passes again.

use c2c_integration::cli::*;
use c2c_integration::topo::require_root;
use c2c_testkit::pg_cluster::PgCluster;

fn checks(out: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v["checks"].as_array().unwrap().clone()
}

fn all_pass(out: &str) {
    let all = checks(out);
    assert_eq!(all.len(), 15, "{all:?}");
    for c in &all {
        assert_eq!(c["ok"], true, "{c}");
    }
}

#[test]
fn root_check_passes_on_a_replicated_platform_and_after_replica_a_dies() {
    if !require_root() {
        return;
    }
    let pg = PgCluster::start().expect("start PostgreSQL");
    pg.create_db("c2c").unwrap();
    // The control replicas run in the platform's underlay namespace: they reach the database
    // through its socket.
    let files = tempfile::tempdir().unwrap();
    let url_file = files.path().join("database-url");
    std::fs::write(&url_file, pg.socket_url("c2c")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let platform = TempPlatform::up(&[
        "--cells",
        "2",
        "--database-file",
        url_file.to_str().unwrap(),
        "--replicas",
        "2",
    ]);
    let dir = platform.dir();
    assert!(
        platform
            .up_output
            .contains("replica B at https://192.0.2.253:4002"),
        "{}",
        platform.up_output
    );
    all_pass(&ok(dir, &["check", "--json"]));

    // The local platform serves metrics; `c2c metrics` reads each from inside its namespace.
    let control = ok(dir, &["metrics"]);
    assert!(control.contains("c2c_control_revision "), "{control}");
    assert!(
        control.contains("c2c_control_requests_total{endpoint=\"CreateApp\",code=\"201\"}"),
        "{control}"
    );
    assert!(ok(dir, &["metrics", "replica-b"]).contains("c2c_control_revision "));
    let cell = ok(dir, &["metrics", "cell2"]);
    assert!(cell.contains("c2c_agent_revision_applied "), "{cell}");
    // From the host: `up` printed a 127.0.0.1 URL for each (its relay carries them).
    let url_of = |target: &str| -> String {
        let line = format!("metrics {target}: ");
        platform
            .up_output
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line:?} in {}", platform.up_output))
            .to_string()
    };
    for (target, metric) in [
        ("control", "c2c_control_revision "),
        ("replica-b", "c2c_control_revision "),
        ("cell1", "c2c_agent_revision "),
        ("cell2", "c2c_agent_revision "),
    ] {
        let url = url_of(target);
        let hostport = url
            .strip_prefix("http://")
            .and_then(|r| r.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("{url}"));
        assert!(hostport.starts_with("127.0.0.1:"), "{url}");
        let text = c2c_integration::benchkit::scrape(hostport).unwrap();
        assert!(text.contains(metric), "{target} at {url}: {text}");
    }
    let o = c2c(dir, &["metrics", "cell9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no cell cell9"));

    // Replica A goes as a crash would: everything goes on through B.
    let a: i32 = std::fs::read_to_string(dir.join("control/control.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = ok(dir, &["check", "--json"]);
    eprintln!("{after}");
    all_pass(&after);
    // B served them: its log has the probes' requests, and A is gone.
    let b_log = std::fs::read_to_string(dir.join("replica-b/control/control.log")).unwrap();
    assert!(b_log.contains("c2c-check-b"), "replica B's log: {b_log}");
    // Gone, or a zombie its parent has not reaped: not serving.
    let state = std::fs::read_to_string(format!("/proc/{a}/status")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains("State:\tZ"),
        "replica A still runs: {state}"
    );
    drop(platform);
    drop(pg);
}
