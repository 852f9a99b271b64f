//! The local platform: control, an underlay and N cells in network namespaces on this machine,
//! running the real binaries (`c2c control serve`, `c2c-agent`, `c2c-cni`, `c2c-proxy`) exactly
//! as a multi-host install would. `up`, `push`, `exec`, `delete`, `down`, `demo`.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod cells;
pub mod check;
pub mod demo;
pub mod demo_app;
pub mod instance;
pub mod lifecycle;
pub mod metrics;
pub mod netlogs;
mod records;
mod replica;
pub mod up;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where the control API listens on the underlay.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Control API port.
pub const CONTROL_PORT: u16 = 4002;
/// Replica B's address on the underlay (`c2c up --replicas 2`); A is at [`CONTROL_IP`].
pub const CONTROL_B_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 253);
/// Where control (and replica B) serve metrics on the underlay (`c2c metrics`).
pub const CONTROL_METRICS_PORT: u16 = 9102;
/// Where each agent serves metrics, on its cell's loopback (`c2c metrics CELL`).
pub const AGENT_METRICS_PORT: u16 = 9101;
/// Where control (replica A) serves the web console on the underlay.
pub const CONTROL_CONSOLE_PORT: u16 = 9103;

/// What `up` built, recorded in `platform.json` in the state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformInfo {
    /// Prefix of every namespace of this platform.
    pub prefix: String,
    /// The underlay namespace (a bridge; control listens here).
    pub underlay_ns: String,
    /// The cells.
    pub cells: Vec<CellInfo>,
}

/// One cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellInfo {
    /// Name, e.g. `cell1`.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address on the underlay.
    pub underlay_ip: Ipv4Addr,
}

/// Paths of the platform under the state dir.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state dir.
    pub root: PathBuf,
}

impl Paths {
    /// Paths under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// `platform.json`.
    pub fn info(&self) -> PathBuf {
        self.root.join("platform.json")
    }
    /// A cell's dir (client cert, CNI data, CNI config, agent log and pid).
    pub fn cell(&self, name: &str) -> PathBuf {
        self.root.join("cells").join(name)
    }
    /// An instance's dir (cert dir, logs, pids, instance.json).
    pub fn instance(&self, app: &str, index: u32) -> PathBuf {
        self.root
            .join("instances")
            .join(app)
            .join(index.to_string())
    }
    /// All instances of an app.
    pub fn app(&self, app: &str) -> PathBuf {
        self.root.join("instances").join(app)
    }
}

impl PlatformInfo {
    /// Reads `platform.json`, or says the platform is not up.
    pub fn load(paths: &Paths) -> Result<Self> {
        let raw = std::fs::read(paths.info()).with_context(|| {
            format!(
                "no platform in {} (run `c2c up --state-dir {}` first)",
                paths.root.display(),
                paths.root.display()
            )
        })?;
        serde_json::from_slice(&raw).with_context(|| format!("reading {}", paths.info().display()))
    }

    /// The cell named `name`.
    pub fn cell(&self, name: &str) -> Result<&CellInfo> {
        self.cells.iter().find(|c| c.name == name).with_context(|| {
            format!(
                "no cell {name}; cells: {}",
                self.cells
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// An id of the state dir, so two platforms (two state dirs) never share namespace names: 64
/// bits of SHA-256 over the canonical path (a 16-bit id collided between two state dirs about
/// one time in 65,536, and then one platform's `down` removed the other's namespaces).
pub fn prefix_for(state_dir: &Path) -> String {
    let canon = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canon.as_os_str().as_encoded_bytes(),
    );
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("c2c{hex}")
}

/// Refuses clearly unless running as root with iproute2 and nftables installed.
pub fn preflight() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the local platform creates network namespaces and needs root: run it with sudo");
    }
    for (tool, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("`{tool}` is missing: install it with `apt-get install -y {pkg}`");
        }
    }
    Ok(())
}

/// Where the other c2c binaries are: next to this one.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the c2c binary")?;
    let p = exe
        .parent()
        .map(|d| d.join(name))
        .context("locating the c2c binaries")?;
    if !p.is_file() {
        bail!(
            "{} not found next to {} (build the workspace: cargo build --release)",
            name,
            exe.display()
        );
    }
    Ok(p)
}

/// Runs `ip ARGS`, failing with its message.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Starts `program args` inside namespace `ns` as a daemon of ours: its own process group (so a
/// Ctrl-C of the CLI does not reach it), output to `log`, PID to `pidfile`.
pub fn spawn_in(
    ns: &str,
    program: &Path,
    args: &[String],
    envs: &[(&str, String)],
    log: &Path,
    pidfile: &Path,
) -> Result<u32> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} in {ns}", program.display()))?;
    let mut child = child;
    let pid = child.id();
    std::fs::write(pidfile, pid.to_string())?;
    // Until `ip netns exec` has entered the namespace, the process is not recognisably ours
    // ([`live_pid`] asks for the namespace): a stop that came in that window (an app that died at
    // once fails the push) would pass it by and leave it running. So wait for it to be inside,
    // or gone.
    let end = Instant::now() + Duration::from_secs(5);
    while !in_netns_of(pid as i32, ns) && Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The child outlives this CLI; it is stopped by PID (down / delete).
    std::mem::forget(child);
    Ok(pid)
}

/// Whether process `pid` lives in the network namespace `/run/netns/NAME` (same inode). Every
/// process the platform starts lives in a namespace of its own prefix, so a PID reused by
/// someone else's process (after a reboot, say) is never taken for ours.
fn in_netns_of(pid: i32, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
        std::fs::metadata(Path::new("/run/netns").join(name)),
    ) {
        (Ok(p), Ok(n)) => p.ino() == n.ino() && p.dev() == n.dev(),
        _ => false,
    }
}

/// The PID in `pidfile`, if that process still runs (not a zombie) in namespace `netns`: the
/// process we started, not a PID reused by someone else's.
pub fn live_pid(pidfile: &Path, netns: &str) -> Option<i32> {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| in_netns_of(*pid, netns) && !is_zombie(*pid))
}

/// Stops the process whose PID is in `pidfile` (SIGTERM, then SIGKILL after `grace`), if it is
/// still the one we started: see [`live_pid`]; and its command line names `expect`.
pub fn stop_pidfile(pidfile: &Path, expect: &str, netns: &str, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let ours = live_pid(pidfile, netns).filter(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(expect)
    });
    let Some(pid) = ours else {
        let _ = std::fs::remove_file(pidfile);
        return;
    };
    // Every process the platform starts leads a process group of its own (`process_group(0)`):
    // the whole group is signalled, so what an app's command started (a shell's child) goes
    // with it. A group's id is not reused while any member lives.
    let target = match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
        Ok(g) if g.as_raw() == pid => Pid::from_raw(-pid),
        _ => Pid::from_raw(pid),
    };
    let pid = Pid::from_raw(pid);
    let _ = kill(target, Signal::SIGTERM);
    let end = Instant::now() + grace;
    while Instant::now() < end {
        // Reaped (or a zombie of a parent that exited: init reaps it).
        if kill(pid, None).is_err() || is_zombie(pid.as_raw()) {
            // Members of its group that outlived it.
            if target != pid {
                let _ = kill(target, Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(pidfile);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(target, Signal::SIGKILL);
    let _ = std::fs::remove_file(pidfile);
}

/// Whether `pid` is a zombie (exited, not yet reaped).
pub fn is_zombie_pub(pid: i32) -> bool {
    is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The API client of the platform at `state_dir` (URL, control issuer and token from it). The
/// local platform's control listens inside the underlay namespace (`up` wrote its path into
/// the state dir): then each connection is made from a thread inside it.
pub fn client(state_dir: &Path) -> Result<c2c_api::client::Client> {
    let client = c2c_api::client::Client::from_state_dir(state_dir)?;
    Ok(match connector(state_dir) {
        Some(c) => client.with_connector(c),
        None => client,
    })
}

/// How to reach the local platform's control: from inside the namespace `c2c up` recorded, if
/// it recorded one.
pub fn connector(state_dir: &Path) -> Option<c2c_api::client::Connector> {
    let layout = c2c_api::layout::Layout::new(state_dir);
    let ns = PathBuf::from(std::fs::read_to_string(layout.netns()).ok()?.trim());
    Some(std::sync::Arc::new(move |host: &str, port: u16| {
        let host = host.to_string();
        in_netns_at(&ns, move || {
            std::net::TcpStream::connect((host.as_str(), port))
        })
        .map_err(std::io::Error::other)?
    }))
}

/// Polls `check` every 20 ms until it is true or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + timeout;
    while !check() {
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `work` on a fresh thread inside namespace `ns` (by name).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    in_netns_at(&Path::new("/run/netns").join(ns), work)
}

/// Runs `work` on a fresh thread inside the namespace at `path` (`/run/netns/NAME`): the one
/// place the platform enters a namespace. Only that thread enters it, so the caller's thread
/// (a tokio worker, say) never changes namespace.
pub fn in_netns_at<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let ns = path.display().to_string();
    let f = File::open(path).with_context(|| format!("namespace {ns}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map(|()| work())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("work in {ns} panicked"))?
    .with_context(|| format!("entering {ns}"))
}
