//! The sidecars the cell agent runs for containers a runtime started (`c2c-hook` marks their
//! records `sidecar: true`): one `c2c-proxy` per container, in the container's network
//! namespace (61443 -> 8080), reading the certificate the agent keeps issued in the record's
//! cert dir. Started once the first certificate is there, restarted with backoff when it dies,
//! stopped when the record goes (CNI DEL).
//!
//! A sidecar is a process of its own, not a child that dies with the agent: an agent restart
//! leaves every sidecar serving, and the new agent adopts each one from its pidfile (watching
//! it by PID) instead of starting a second one.
//!
//! Layout, in the directory that holds the cert dir (`c2c-hook` makes it):
//! `certs/` (cert.pem, key.pem), `proxy.pid`, `proxy.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::ContainerRecord;

/// The app's port in each container and the sidecar's TLS port (as `c2c push` runs them).
pub const UPSTREAM: &str = "127.0.0.1:8080";
/// Where the sidecar listens in the container.
pub const LISTEN: &str = "0.0.0.0:61443";
/// The sidecar's admin (metrics, health) listener, on the container's loopback.
pub const ADMIN: &str = "127.0.0.1:61003";

/// What one sidecar runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The container's network namespace (a path: `/run/netns/...`).
    pub netns: PathBuf,
    /// Its cert dir.
    pub cert_dir: PathBuf,
}

impl Spec {
    /// The sidecar a record asks for, if it asks for one.
    pub fn of(rec: &ContainerRecord) -> Option<Spec> {
        (rec.sidecar && !rec.netns.is_empty())
            .then_some(())
            .and(rec.cert_dir.as_ref())
            .map(|d| Spec {
                netns: rec.netns.clone().into(),
                cert_dir: d.into(),
            })
    }

    fn dir(&self) -> &Path {
        self.cert_dir.parent().unwrap_or(&self.cert_dir)
    }

    /// Its pidfile.
    pub fn pidfile(&self) -> PathBuf {
        self.dir().join("proxy.pid")
    }

    fn log(&self) -> PathBuf {
        self.dir().join("proxy.log")
    }
}

/// The sidecars of one cell.
#[derive(Debug)]
pub struct Sidecars {
    bin: Option<PathBuf>,
    running: BTreeMap<String, (Spec, CancellationToken)>,
    /// Containers already logged as wanting a sidecar that cannot run (said once each).
    warned: std::collections::BTreeSet<String>,
}

/// Sidecars supervised now (for the agent's metrics).
pub static SUPERVISED: AtomicU64 = AtomicU64::new(0);
/// Sidecars that exited and were started again, since the agent started.
pub static RESTARTS: AtomicU64 = AtomicU64::new(0);

impl Sidecars {
    /// Sidecars run from `bin` (`c2c-proxy`); `None`: none can run (each wanted one is logged).
    pub fn new(bin: Option<PathBuf>) -> Self {
        Sidecars {
            bin,
            running: BTreeMap::new(),
            warned: Default::default(),
        }
    }

    /// Starts the sidecars `records` ask for and stops those they no longer do.
    pub fn reconcile(&mut self, records: &[ContainerRecord]) {
        let want: BTreeMap<&str, Spec> = records
            .iter()
            .filter_map(|r| Some((r.container_id.as_str(), Spec::of(r)?)))
            .collect();
        self.running.retain(|id, (spec, stop)| {
            let keep = want.get(id.as_str()) == Some(spec);
            if !keep {
                info!(container = %id, "stopping its sidecar");
                stop.cancel();
            }
            keep
        });
        for (id, spec) in want {
            if self.running.contains_key(id) {
                continue;
            }
            let Some(bin) = self.bin.clone() else {
                if self.warned.insert(id.to_string()) {
                    warn!(container = %id, "a sidecar is wanted but no c2c-proxy was found (--sidecar-bin)");
                }
                continue;
            };
            let stop = CancellationToken::new();
            tokio::spawn(supervise(bin, id.to_string(), spec.clone(), stop.clone()));
            self.running.insert(id.to_string(), (spec, stop));
        }
        SUPERVISED.store(self.running.len() as u64, Ordering::Relaxed);
    }

    /// Containers with a supervised sidecar.
    pub fn containers(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }
}

/// A sidecar process: a child of this agent, or one an earlier agent started.
enum Proc {
    Child(tokio::process::Child),
    Adopted(Pid),
}

impl Proc {
    fn pid(&self) -> Option<Pid> {
        match self {
            Proc::Child(c) => c.id().map(|p| Pid::from_raw(p as i32)),
            Proc::Adopted(p) => Some(*p),
        }
    }

    /// Until it exits.
    async fn exited(&mut self) -> String {
        match self {
            Proc::Child(c) => match c.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("waiting for it failed: {e}"),
            },
            Proc::Adopted(pid) => {
                while alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                "exited".into()
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(mut self, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(grace, self.exited()).await;
        }
    }
}

/// Whether `pid` runs (not gone, not a zombie).
pub fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// The sidecar `pidfile` names, if that process is still a `c2c-proxy` serving `cert_dir`
/// (a PID alone may have been reused by anything since).
pub fn running_sidecar(pidfile: &Path, cert_dir: &Path) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let pid = Pid::from_raw(pid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args
        .iter()
        .any(|a| a.ends_with(b"c2c-proxy") || a.ends_with(b"/c2c-proxy"))
        && args.contains(&cert_dir.as_os_str().as_encoded_bytes());
    (ours && alive(pid)).then_some(pid)
}

/// How long a sidecar directory may be without a CNI record before the agent removes it: the
/// runtime deletes the record (CNI DEL) before it runs `poststop`, whose `c2c-hook detach`
/// reads the placement from the directory and takes it back in control.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Removes the sidecar directory (`DATA_DIR/sidecars/<id>`: the instance's key, its pidfile)
/// of every container that has had no CNI record for [`ORPHAN_GRACE`], stopping a sidecar
/// still serving from it. The agent, not the hook's `poststop`, owns this: a container that
/// fails after `createRuntime` never gets a `poststop`, and its directory held the instance's
/// private key on the cell for ever. Records are read from disk here, not from the agent's view
/// of the store, so a directory the hook made for a record the agent has not seen yet (its CNI
/// ADD came first) is never taken.
#[derive(Debug, Default)]
pub struct Sweeper {
    /// Directories found without a record, and when first.
    orphaned_since: BTreeMap<String, Instant>,
}

impl Sweeper {
    /// One pass at `now`: notes new orphans, removes those orphaned for `grace`, and returns
    /// the ids removed.
    pub fn sweep(&mut self, data_dir: &Path, now: Instant, grace: Duration) -> Vec<String> {
        let store = crate::store::Store::new(data_dir);
        let Ok(entries) = std::fs::read_dir(data_dir.join("sidecars")) else {
            self.orphaned_since.clear();
            return vec![];
        };
        let mut orphans = std::collections::BTreeSet::new();
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str() {
                if matches!(store.get(id), Ok(None)) {
                    orphans.insert(id.to_string());
                }
            }
        }
        self.orphaned_since.retain(|id, _| orphans.contains(id));
        let mut gone = vec![];
        for id in orphans {
            let since = *self.orphaned_since.entry(id.clone()).or_insert(now);
            if now.saturating_duration_since(since) < grace {
                continue;
            }
            let dir = data_dir.join("sidecars").join(&id);
            stop_by_pidfile(
                &dir.join("proxy.pid"),
                &dir.join("certs"),
                Duration::from_secs(2),
            );
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    self.orphaned_since.remove(&id);
                    gone.push(id);
                }
                Err(error) => {
                    warn!(%error, dir = %dir.display(), "removing a stale sidecar directory failed")
                }
            }
        }
        gone
    }
}

/// Stops the sidecar `pidfile` names (if it is one serving `cert_dir`): SIGTERM, SIGKILL after
/// `grace`. For `c2c-hook` at poststop, when the agent may be gone.
pub fn stop_by_pidfile(pidfile: &Path, cert_dir: &Path, grace: Duration) {
    if let Some(pid) = running_sidecar(pidfile, cert_dir) {
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + grace;
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(pidfile);
}

fn spawn(bin: &Path, spec: &Spec) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log())?;
    // nsenter execs the proxy in the container's namespace (same PID): the only namespace it
    // changes is the network's; the cert dir stays on the host, out of the container's reach.
    let child = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", spec.netns.display()))
        .arg("--")
        .arg(bin)
        .args(["--listen", LISTEN, "--upstream", UPSTREAM, "--admin", ADMIN])
        .arg("--cert-dir")
        .arg(&spec.cert_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    if let Some(pid) = child.id() {
        c2c_certs::pair::write_file_atomic(&spec.pidfile(), pid.to_string().as_bytes(), 0o600)?;
    }
    Ok(child)
}

/// Runs one sidecar until `stop`: waits for the first certificate, then keeps the process up.
async fn supervise(bin: PathBuf, id: String, spec: Spec, stop: CancellationToken) {
    while !spec.cert_dir.join("cert.pem").exists() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        // The hook removed the container's directory: nothing to serve.
        if !spec.cert_dir.exists() {
            info!(container = %id, "sidecar dir gone; not restarting");
            return;
        }
        let mut proc = match running_sidecar(&spec.pidfile(), &spec.cert_dir) {
            Some(pid) => {
                info!(container = %id, %pid, "sidecar already running (started before this agent); adopted");
                Proc::Adopted(pid)
            }
            None => match spawn(&bin, &spec) {
                Ok(c) => {
                    info!(container = %id, pid = c.id().unwrap_or(0), netns = %spec.netns.display(), "sidecar started");
                    Proc::Child(c)
                }
                Err(error) => {
                    warn!(container = %id, %error, "starting the sidecar failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        let started = Instant::now();
        tokio::select! {
            _ = stop.cancelled() => {
                proc.stop(Duration::from_secs(3)).await;
                let _ = std::fs::remove_file(spec.pidfile());
                info!(container = %id, "sidecar stopped");
                return;
            }
            how = proc.exited() => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                RESTARTS.fetch_add(1, Ordering::Relaxed);
                warn!(container = %id, status = %how, log = %spec.log().display(), retry_in_ms = backoff.as_millis() as u64, "sidecar exited; restarting");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_directories_without_a_record_are_swept_after_the_grace_and_the_rest_kept() {
        // Issue #23: a container that failed after `createRuntime` left its directory, with
        // the instance's private key, after `podman rm` too.
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::Store::new(d.path());
        let rec = |id: &str| ContainerRecord {
            container_id: id.into(),
            ..record(None)
        };
        store.put(&rec("live")).unwrap();
        for id in ["live", "failed"] {
            let certs = d.path().join("sidecars").join(id).join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            std::fs::write(certs.join("key.pem"), "a key").unwrap();
        }
        let (t0, grace) = (Instant::now(), Duration::from_secs(10));
        let mut s = Sweeper::default();
        // Within the grace (the runtime's poststop may still read it), nothing goes.
        assert!(s.sweep(d.path(), t0, grace).is_empty());
        assert!(d.path().join("sidecars/failed/certs/key.pem").exists());
        assert!(s.sweep(d.path(), t0 + grace / 2, grace).is_empty());
        assert_eq!(s.sweep(d.path(), t0 + grace, grace), ["failed"]);
        assert!(!d.path().join("sidecars/failed").exists());
        assert!(d.path().join("sidecars/live/certs/key.pem").exists());
        // Records are root's only.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.path().join("containers/live.json")), 0o600);
        assert_eq!(mode(&d.path().join("containers")), 0o700);
        // A record that comes back (podman start) resets the clock.
        store.remove("live").unwrap();
        let t1 = t0 + grace * 2;
        assert!(s.sweep(d.path(), t1, grace).is_empty());
        store.put(&rec("live")).unwrap();
        assert!(s.sweep(d.path(), t1 + grace, grace).is_empty());
        store.remove("live").unwrap();
        assert!(s.sweep(d.path(), t1 + grace * 2, grace).is_empty());
        assert_eq!(s.sweep(d.path(), t1 + grace * 3, grace), ["live"]);
        assert!(s.sweep(d.path(), t1 + grace * 4, grace).is_empty());
    }

    /// A record of container `c1` wanting a sidecar, with `cert_dir`.
    fn record(cert_dir: Option<&str>) -> ContainerRecord {
        ContainerRecord {
            container_id: "c1".into(),
            ip: "10.255.1.2".parse().unwrap(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_veth: "s-0aff0102".into(),
            app_guid: None,
            instance_guid: None,
            instance_index: None,
            cert_dir: cert_dir.map(str::to_string),
            port_mappings: vec![],
            sidecar: true,
        }
    }

    #[test]
    fn only_records_marked_for_a_sidecar_with_a_cert_dir_get_one() {
        let mut rec = ContainerRecord {
            sidecar: false,
            ..record(Some("/var/lib/c2c/cni/sidecars/c1/certs"))
        };
        assert_eq!(Spec::of(&rec), None, "pushed instances run their own");
        rec.sidecar = true;
        let spec = Spec::of(&rec).unwrap();
        assert_eq!(
            spec.pidfile(),
            Path::new("/var/lib/c2c/cni/sidecars/c1/proxy.pid")
        );
        rec.cert_dir = None;
        assert_eq!(Spec::of(&rec), None);
    }

    #[test]
    fn a_pidfile_of_another_program_is_not_a_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("proxy.pid");
        // This test process: alive, but not a c2c-proxy serving that dir.
        std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(running_sidecar(&pidfile, dir.path()), None);
        std::fs::write(&pidfile, "not a pid").unwrap();
        assert_eq!(running_sidecar(&pidfile, dir.path()), None);
        stop_by_pidfile(&pidfile, dir.path(), Duration::from_millis(10));
        assert!(!pidfile.exists());
        assert!(alive(Pid::this()), "nothing was signalled");
    }
}
