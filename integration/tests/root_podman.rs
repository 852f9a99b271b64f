//! ROOT TEST: a real runtime with c2c-cni: podman (CNI backend, runc, a busybox rootfs; no
//! image registry) on a platform's cell, `podman run -p 18080:8080 --network c2c`: the host port
//! reaches the container's server from the underlay; an unmapped one does not; `podman rm`
//! removes the container's record and its host port. Run as root (CI installs podman, runc and
//! busybox-static); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::process::Command;
use std::time::Duration;

use c2c_integration::podman::Podman;
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

#[test]
fn root_podman_run_with_host_ports_on_c2c_cni() {
    if !require_root() {
        return;
    }
    let p = Platform::start(1);
    let podman = Podman::new(&p, 1, None);
    podman
        .start(
            "web",
            &["-p", "18080:8080"],
            &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        )
        .expect("podman run");
    let curl = |port: u16| {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &p.underlay.ns.name,
                "curl",
                "-s",
                "--max-time",
                "3",
            ])
            .arg(format!("http://192.0.2.1:{port}/"))
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    wait_until(
        "the host port reaches podman's container",
        Duration::from_secs(15),
        || curl(18080) == (0, "hello from podman\n".to_string()),
    );
    assert_eq!(curl(18081).0, 7, "an unmapped port is refused");
    let records = p.dir.path().join("cell1-cni/containers");
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 1);

    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    assert_eq!(
        std::fs::read_dir(&records).unwrap().count(),
        0,
        "DEL removed the record"
    );
    wait_until("the host port is gone", Duration::from_secs(15), || {
        curl(18080).0 != 0
    });
}
