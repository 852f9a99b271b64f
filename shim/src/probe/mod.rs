//! The probes this cell hosts for `c2c check` (see [`c2c_api::probe`]): for each probe its view
//! names, a network namespace wired as a runtime would wire a container (`c2c-cni` ADD, run in
//! process, with the probe's host port), its record marked for a sidecar (the agent then
//! confirms it, keeps its certificate and identity issued and runs its `c2c-proxy`, as for any
//! instance), and the [`responder`] as its app. A probe the view no longer names is taken down:
//! responder, CNI DEL (record, address, host port, sidecar), namespace, directory.
//!
//! Like sidecars, a probe outlives an agent restart; the new agent adopts it by its record and
//! pidfile. Layout: `DATA_DIR/probes/GUID/` holds `certs/`, `responder.pid`, `responder.log`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use c2c_api::probe::Hosted;
use c2c_api::CellView;
use tracing::{info, warn};

use crate::store::{ContainerRecord, Store};

pub mod responder;

/// The container id of a probe's CNI attachment: this prefix and the instance GUID.
pub const CONTAINER_PREFIX: &str = "c2c-probe-";
/// The app port in a probe's namespace.
pub const APP_PORT: u16 = 8080;

/// The probe's network namespace name (`ip netns`): unique per instance, within 15+ bytes.
pub fn netns_name(guid: &str) -> String {
    let short: String = guid.chars().filter(|c| *c != '-').take(12).collect();
    format!("c2c-probe-{short}")
}

/// What the agent hosts probes with.
pub struct Host {
    /// `c2c-agent` itself (it runs the responder); `None`: probes are not hosted (logged).
    pub bin: Option<PathBuf>,
    /// The agent's data dir (the CNI store, `probes/`).
    pub data_dir: PathBuf,
    /// The cell's CNI network list, as runtimes get it.
    pub cni_conf: String,
    /// The containers' nameservers (the cell DNS).
    pub dns: Vec<IpAddr>,
    /// Probes being started or taken down (by GUID): not touched again until done.
    busy: Arc<Mutex<BTreeSet<String>>>,
}

/// One probe's start: what the view says of it.
#[derive(Debug, Clone)]
struct Spec {
    hosted: Hosted,
    app: String,
    allow: Vec<String>,
    underlay: Vec<String>,
}

impl Host {
    /// A host of probes.
    pub fn new(
        bin: Option<PathBuf>,
        data_dir: PathBuf,
        cni_conf: String,
        dns: Vec<IpAddr>,
    ) -> Host {
        Host {
            bin,
            data_dir,
            cni_conf,
            dns,
            busy: Arc::default(),
        }
    }

    fn dir(&self, guid: &str) -> PathBuf {
        self.data_dir.join("probes").join(guid)
    }

    /// Starts what the view names and is not running, takes down what it no longer names.
    /// The work runs on threads of its own; their record changes wake the agent's loop.
    pub fn reconcile(&self, view: Option<&CellView>, records: &[ContainerRecord]) {
        let Some(view) = view else { return };
        let wanted: BTreeMap<&str, &Hosted> =
            view.probes.iter().map(|p| (p.guid.as_str(), p)).collect();
        let recorded: BTreeMap<String, &ContainerRecord> = records
            .iter()
            .filter_map(|r| {
                Some((
                    r.container_id.strip_prefix(CONTAINER_PREFIX)?.to_string(),
                    r,
                ))
            })
            .collect();
        let mut gone: BTreeSet<String> = recorded
            .keys()
            .filter(|g| !wanted.contains_key(g.as_str()))
            .cloned()
            .collect();
        // A directory left without a record (an agent stopped while starting one).
        if let Ok(dirs) = std::fs::read_dir(self.data_dir.join("probes")) {
            for d in dirs.flatten() {
                let g = d.file_name().to_string_lossy().into_owned();
                if !wanted.contains_key(g.as_str()) {
                    gone.insert(g);
                }
            }
        }
        for guid in gone {
            self.run(guid.clone(), Work::Stop);
        }
        for (guid, hosted) in wanted {
            let up = recorded.contains_key(guid) && self.responder_alive(guid);
            if up {
                continue;
            }
            let Some(app) = view.apps.iter().find(|a| a.guid == hosted.app_guid) else {
                continue;
            };
            let spec = Spec {
                hosted: hosted.clone(),
                app: app.name.to_string(),
                allow: view.leases.iter().map(|l| l.subnet.to_string()).collect(),
                underlay: view
                    .leases
                    .iter()
                    .map(|l| l.underlay_ip.to_string())
                    .collect(),
            };
            self.run(guid.to_string(), Work::Start(Box::new(spec)));
        }
    }

    fn responder_alive(&self, guid: &str) -> bool {
        read_pid(&self.dir(guid)).is_some_and(|pid| is_responder(pid, guid))
    }

    /// Runs `work` on a thread of its own unless the probe is already being worked on.
    fn run(&self, guid: String, work: Work) {
        let Ok(mut busy) = self.busy.lock() else {
            return;
        };
        if !busy.insert(guid.clone()) {
            return;
        }
        drop(busy);
        let ctx = Ctx {
            bin: self.bin.clone(),
            dir: self.dir(&guid),
            data_dir: self.data_dir.clone(),
            cni_conf: self.cni_conf.clone(),
            dns: self.dns.clone(),
        };
        let busy = self.busy.clone();
        std::thread::spawn(move || {
            let (what, r) = match work {
                Work::Start(spec) => ("start", ctx.start(&guid, &spec)),
                Work::Stop => ("take down", ctx.stop(&guid)),
            };
            if let Err(error) = r {
                warn!(probe = %guid, %error, "probe: {what} failed");
            }
            if let Ok(mut b) = busy.lock() {
                b.remove(&guid);
            }
        });
    }
}

enum Work {
    Start(Box<Spec>),
    Stop,
}

/// What a probe's start or take-down works with (owned: it runs on a thread of its own).
struct Ctx {
    bin: Option<PathBuf>,
    dir: PathBuf,
    data_dir: PathBuf,
    cni_conf: String,
    dns: Vec<IpAddr>,
}

impl Ctx {
    fn start(&self, guid: &str, spec: &Spec) -> Result<(), String> {
        let bin = self
            .bin
            .as_ref()
            .ok_or("the agent cannot find its own program to run the probe responder")?;
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
        restrict(&self.dir)?;
        let ns = netns_name(guid);
        if !Path::new("/run/netns").join(&ns).exists() {
            ip(&["netns", "add", &ns])?;
        }
        // The probe's resolver is the cell DNS, as a runtime writes a container's resolv.conf
        // (`ip netns exec` puts /etc/netns/NS/resolv.conf in place for the responder).
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let servers: String = self
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        std::fs::write(
            etc.join("resolv.conf"),
            format!("search apps.internal\n{servers}options ndots:1\n"),
        )
        .map_err(|e| format!("resolv.conf: {e}"))?;
        let store = Store::new(&self.data_dir);
        let id = format!("{CONTAINER_PREFIX}{guid}");
        let rec = match store.get(&id).map_err(|e| e.to_string())? {
            Some(r) => r,
            None => {
                self.cni("ADD", guid, &ns, Some(spec), &certs)?;
                let mut r = store
                    .get(&id)
                    .map_err(|e| e.to_string())?
                    .ok_or("CNI ADD left no record")?;
                // The agent confirms it, has its certificate signed and runs its sidecar.
                r.sidecar = true;
                store.put(&r).map_err(|e| e.to_string())?;
                r
            }
        };
        if read_pid(&self.dir).is_some_and(|pid| is_responder(pid, guid)) {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("responder.log"))
            .map_err(|e| format!("responder.log: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(bin)
            .arg("probe-responder")
            .args(["--app", &spec.app, "--guid", guid])
            .args(["--index", &spec.hosted.index.to_string()])
            .args(["--ip", &rec.ip.to_string()])
            .arg("--dir")
            .arg(&self.dir);
        for a in &spec.allow {
            cmd.args(["--allow", a]);
        }
        for u in &spec.underlay {
            cmd.args(["--underlay", u]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("running the responder: {e}"))?;
        c2c_certs::pair::write_file_atomic(
            &self.dir.join("responder.pid"),
            child.id().to_string().as_bytes(),
            0o600,
        )
        .map_err(|e| e.to_string())?;
        info!(probe = %guid, app = %spec.app, index = spec.hosted.index, ip = %rec.ip, host_port = spec.hosted.host_port, netns = %ns, "probe hosted");
        // Reaped when it ends (a take-down, or a crash the next reconcile restarts).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    fn stop(&self, guid: &str) -> Result<(), String> {
        if let Some(pid) = read_pid(&self.dir).filter(|pid| is_responder(*pid, guid)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let ns = netns_name(guid);
        let store = Store::new(&self.data_dir);
        let id = format!("{CONTAINER_PREFIX}{guid}");
        let netns = Path::new("/run/netns").join(&ns);
        let there = self.dir.exists() || netns.exists() || store.get(&id).ok().flatten().is_some();
        if !there {
            // Taken down already (a view seen before the store caught up asks again).
            return Ok(());
        }
        // As `c2c-hook` at poststop: the record no longer asks for a sidecar, so the agent
        // does not restart the one stopped here.
        if let Some(mut rec) = store.get(&id).map_err(|e| e.to_string())? {
            rec.sidecar = false;
            store.put(&rec).map_err(|e| e.to_string())?;
            crate::sidecars::stop_by_pidfile(
                &self.dir.join("proxy.pid"),
                &self.dir.join("certs"),
                std::time::Duration::from_secs(3),
            );
            self.cni("DEL", guid, &ns, None, &self.dir.join("certs"))?;
        }
        if netns.exists() {
            ip(&["netns", "del", &ns])?;
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
        std::fs::remove_dir_all(&self.dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        info!(probe = %guid, netns = %ns, "probe taken down");
        Ok(())
    }

    /// `c2c-cni` ADD or DEL for the probe, run in process as a runtime would run the plugin.
    fn cni(
        &self,
        command: &str,
        guid: &str,
        ns: &str,
        spec: Option<&Spec>,
        certs: &Path,
    ) -> Result<(), String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.cni_conf).map_err(|e| e.to_string())?;
        let mut conf = c2c_api::cni_list::plugin_config(&list).ok_or("no CNI plugin config")?;
        if let Some(s) = spec {
            conf["runtimeConfig"] = serde_json::json!({
                "app_guid": s.hosted.app_guid, "instance_guid": guid,
                "instance_index": s.hosted.index, "cert_dir": certs,
                "portMappings": [
                    {"hostPort": s.hosted.host_port, "containerPort": APP_PORT, "protocol": "tcp"},
                ],
            });
        }
        let env: BTreeMap<&str, String> = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", format!("{CONTAINER_PREFIX}{guid}")),
            ("CNI_NETNS", format!("/run/netns/{ns}")),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/opt/cni/bin".to_string()),
        ]
        .into();
        let stdin = conf.to_string();
        // The plugin runs a runtime of its own: on a thread outside the agent's.
        let out = std::thread::spawn(move || {
            crate::plugin::run(|k| env.get(k).cloned(), stdin.as_bytes())
        })
        .join()
        .map_err(|_| "the CNI plugin panicked".to_string())?;
        out.map(|_| ()).map_err(|e| format!("CNI {command}: {e}"))
    }
}

/// The responder's PID as its pidfile in `dir` says.
fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("responder.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

/// Whether `pid` is the responder of probe `guid` (a PID reused by something else is not).
fn is_responder(pid: u32, guid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.contains(&b"probe-responder".as_slice()) && args.contains(&guid.as_bytes())
    })
}

/// The probe's directory holds its key: root's only.
fn restrict(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probes_namespace_name_is_short_and_its_own() {
        let a = netns_name("0f8e2c3a-1b2c-4d5e-8f90-123456789abc");
        assert_eq!(a, "c2c-probe-0f8e2c3a1b2c");
        assert_ne!(a, netns_name("0f8e2c3a-1b2d-4d5e-8f90-123456789abc"));
    }
}
