//! A database belongs to one platform (issue #30, item 6): a control replica whose state dir
//! holds no copy of the platform's CA, another platform's CA, or another admin token refuses to
//! serve it, instead of making new keys that every cell would refuse. Beside it, the replica
//! given the copies serves, and the join hint names every replica by its `--san`.

use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::Control;

/// `c2c control serve` in `dir` on `db`, which must refuse to start: its stderr.
fn refused(dir: &std::path::Path, db: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_c2c"))
        .args(["--state-dir", dir.to_str().unwrap(), "control", "serve"])
        .args(["--listen", "127.0.0.1:0", "--database", db])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a replica that should refuse started");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_replica_serves_only_the_database_of_its_own_platform() {
    let a = Control::start_with(&["--san", "ctl-a.example"]);
    let db = a.dir.path().join("state.db").display().to_string();

    // Positive control: the copies of ca/ and control/token serve the same database.
    let b = Control::start_replica(&a, &["--database", &db, "--san", "ctl-b.example"]);
    a.ok(&["create-app", "appa"]);
    assert!(b.ok(&["apps"]).contains("appa"));

    // The join hint names both replicas by their names (each notes its own at start).
    let port = |c: &Control| c.url.rsplit(':').next().unwrap().to_string();
    let want = format!(
        "--control https://ctl-a.example:{},https://ctl-b.example:{} ",
        port(&a),
        port(&b)
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let o = a.c2c(&["cell", "token", "create"]);
        assert!(o.status.success());
        let hint = String::from_utf8_lossy(&o.stderr).into_owned();
        if hint.contains(&want) {
            break;
        }
        assert!(Instant::now() < end, "{want} not in: {hint}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // No copy of the CA: refused, and no CA made.
    let bare = tempfile::tempdir().unwrap();
    let err = refused(bare.path(), &db);
    assert!(err.contains("holds no platform CA"), "{err}");
    assert!(!bare.path().join("ca").exists());

    // Another platform's CA and token (a control that ran on its own before).
    let mut other = Control::start();
    other.child.kill().unwrap();
    other.child.wait().unwrap();
    let err = refused(other.dir.path(), &db);
    assert!(
        err.contains("belongs to another control's platform")
            && err.contains("its platform CA is SHA-256")
            && err.contains("admin token differs"),
        "{err}"
    );
    drop(other);

    // The platform's CA with another admin token.
    let forged = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(forged.path().join("control")).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(a.dir.path().join("ca"))
        .arg(forged.path())
        .status()
        .unwrap()
        .success());
    std::fs::write(forged.path().join("control/token"), "not-the-admin-token").unwrap();
    let err = refused(forged.path(), &db);
    assert!(
        err.contains("admin token differs") && !err.contains("platform CA is"),
        "{err}"
    );
}
