//! ROOT TEST: a real runtime with c2c-cni: podman (CNI backend, runc, a busybox rootfs; no
//! image registry) on a platform's cell, `podman run -p 18080:8080 --network c2c`: the host port
//! reaches the container's server from the underlay; an unmapped one does not; `podman rm`
//! removes the container's record and its host port. Run as root (CI installs podman, runc and
//! busybox-static); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

/// podman with its own storage, config and the cell's network namespace (entered with nsenter,
/// which, unlike `ip netns exec`, keeps the host's /sys and so its cgroup mounts).
struct Podman {
    dir: PathBuf,
    netns: String,
}

impl Podman {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("podman")
            .args(["--root", self.dir.join("root").to_str().unwrap()])
            .args(["--runroot", self.dir.join("runroot").to_str().unwrap()])
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever the test left running (its containers only: this storage is the test's).
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for app in ["sh", "httpd"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from podman\n").unwrap();
    root
}

#[test]
fn root_podman_run_with_host_ports_on_c2c_cni() {
    if !require_root() {
        return;
    }
    let p = Platform::start(1);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    // The agent's network config, as a runtime's network list (podman loads conflists).
    let mut plugin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.cni_conf_path(1)).unwrap()).unwrap();
    let version = plugin["cniVersion"].take();
    assert_eq!(version, "1.1.0");
    plugin.as_object_mut().unwrap().remove("name");
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(
        dir.join("net/c2c.conflist"),
        serde_json::json!({"cniVersion": "1.0.0", "name": "c2c", "plugins": [plugin]}).to_string(),
    )
    .unwrap();
    let plugins = c2c_integration::bin("c2c-cni")
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            plugins.display(),
            dir.join("net").display()
        ),
    )
    .unwrap();
    let root = rootfs(&dir);
    let netns = p.cells[0].ns.name.clone();
    let podman = Podman { dir, netns };

    let out = podman.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "c2c",
        "-p",
        "18080:8080",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--rootfs",
        root.to_str().unwrap(),
        "/bin/httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    let out = podman.run(&["rm", "-f", "-t", "0", "web"]);
    assert!(
        out.status.success(),
        "podman rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&records).unwrap().count(),
        0,
        "DEL removed the record"
    );
    wait_until("the host port is gone", Duration::from_secs(15), || {
        curl(18080).0 != 0
    });
}
