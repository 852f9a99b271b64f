//! podman as the container runtime of a test platform's cell: its own storage (vfs), its own
//! containers.conf (CNI backend, c2c-cni as the plugin, the agent's network config as the `c2c`
//! network, optionally a hooks directory), runc, and a static busybox as every container's root
//! filesystem (no image registry). Every podman command runs in the cell's network namespace,
//! entered with nsenter, which, unlike `ip netns exec`, keeps the host's /sys and so its cgroup
//! mounts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::testbed::Platform;

/// podman on cell `n` of a test platform; its containers are removed on drop.
pub struct Podman {
    /// podman's storage, config and the rootfs.
    pub dir: tempfile::TempDir,
    /// The cell's network namespace.
    pub netns: String,
    /// The busybox root filesystem (`/bin/sh`, `/bin/httpd`, `/bin/nc`, `/bin/nslookup`, ...;
    /// `/www/index.html` says "hello from podman").
    pub rootfs: PathBuf,
    /// The network config dir, when it is this helper's.
    keep: Option<tempfile::TempDir>,
}

impl Podman {
    /// podman for cell `n`, with `hooks_dir` as its OCI hooks directory if given.
    pub fn new(p: &Platform, n: u8, hooks_dir: Option<&Path>) -> Self {
        let net = tempfile::tempdir().unwrap();
        // The agent's network list, as it wrote it (podman 4 loads `.conflist` files at 1.0.0).
        std::fs::copy(
            p.cni_conf_path(n),
            net.path().join(c2c_api::cni_list::FILE_NAME),
        )
        .unwrap();
        let plugins = crate::bin("c2c-cni").parent().unwrap().to_path_buf();
        let mut podman = Self::at(
            &p.cells[n as usize - 1].ns.name,
            net.path(),
            &plugins,
            hooks_dir,
        );
        podman.keep = Some(net);
        podman
    }

    /// podman in network namespace `netns`, reading CNI network lists from `net_dir`, plugins
    /// from `plugin_dir` and OCI hooks from `hooks_dir` if given, with storage of its own.
    pub fn at(netns: &str, net_dir: &Path, plugin_dir: &Path, hooks_dir: Option<&Path>) -> Self {
        let network = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n",
            plugin_dir.display(),
            net_dir.display()
        );
        Self::with_conf(netns, &network, hooks_dir)
    }

    /// podman in network namespace `netns` with a host's containers.conf `conf` (its
    /// `[network]` and `[containers]` tables), to which this helper adds only its `[engine]`
    /// table (cgroupfs, events to a file, `hooks_dir` if given); storage of its own.
    pub fn with_conf(netns: &str, conf: &str, hooks_dir: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hooks = hooks_dir
            .map(|h| format!("hooks_dir = [\"{}\"]\n", h.display()))
            .unwrap_or_default();
        std::fs::write(
            dir.path().join("containers.conf"),
            format!("{conf}\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n{hooks}"),
        )
        .unwrap();
        let rootfs = busybox_rootfs(dir.path());
        Podman {
            dir,
            netns: netns.to_string(),
            rootfs,
            keep: None,
        }
    }

    /// Runs `podman ARGS` in the cell.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("podman")
            .args(["--root", d.join("root").to_str().unwrap()])
            .args(["--runroot", d.join("runroot").to_str().unwrap()])
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .unwrap()
    }

    /// Runs `podman ARGS` in the cell; panics with podman's error output if it fails.
    pub fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `podman run -d --network c2c [EXTRA...] --rootfs ROOTFS CMD...`; the container id, or
    /// podman's error output.
    pub fn start(&self, name: &str, extra: &[&str], cmd: &[&str]) -> Result<String, String> {
        let mut a = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "c2c",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--rootfs", self.rootfs.to_str().unwrap()]);
        a.extend_from_slice(cmd);
        let out = self.run(&a);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `podman exec NAME CMD...`: (exit code, stdout).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> (i32, String) {
        let mut a = vec!["exec", name];
        a.extend_from_slice(cmd);
        let o = self.run(&a);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever the test left running (its containers only: this storage is the test's).
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

/// A root filesystem of one static busybox and its applets.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for app in ["sh", "httpd", "nc", "nslookup", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from podman\n").unwrap();
    root
}

/// curl in the network namespace at `netns` (a container's), trusting only `ca`, to
/// `https://NAME:61443/` with NAME resolved to `ip`: (exit code, body).
pub fn tls_get(netns: &str, ca: &Path, name: &str, ip: &str) -> (i32, String) {
    let o = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["curl", "-s", "--max-time", "3", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:61443:{ip}"))
        .arg(format!("https://{name}:61443/"))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}
