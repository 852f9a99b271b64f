//! The cell's traffic log: packets the rules logged (see [`crate::nflog`]), each written as one
//! JSON line with the time, the verdict, the protocol, both ends with their apps (by name and
//! GUID) and, for a security group's accept, the group. [`Directory`] and [`line`] are pure;
//! [`spawn`] runs the reader on a thread of its own.

use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use c2c_api::asg::Allowed;
use c2c_api::CellView;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::nflog::Logged;
use crate::rules::EgressRule;

/// The newest [`Directory`], swapped whole by the agent; the reader takes its `Arc` per batch.
pub type SharedDirectory = Arc<RwLock<Arc<Directory>>>;

/// What a log line needs to name the ends: apps by address and by tag, and the cell's
/// security-group rules.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    by_ip: HashMap<Ipv4Addr, (String, String)>,
    by_tag: HashMap<u16, (String, String)>,
    egress: Vec<EgressRule>,
}

impl Directory {
    /// From a view (every instance on every cell) and the cell's egress rules.
    pub fn new(view: &CellView, egress: Vec<EgressRule>) -> Self {
        let apps: HashMap<&str, (&str, u16)> = view
            .apps
            .iter()
            .map(|a| (a.guid.as_str(), (a.name.as_str(), a.tag)))
            .collect();
        let by_ip = view
            .instances
            .iter()
            .filter_map(|i| {
                let (name, _) = apps.get(i.app_guid.as_str())?;
                Some((i.ip, (name.to_string(), i.app_guid.to_string())))
            })
            .collect();
        let by_tag = view
            .apps
            .iter()
            .map(|a| (a.tag, (a.name.clone(), a.guid.to_string())))
            .collect();
        Directory {
            by_ip,
            by_tag,
            egress,
        }
    }

    /// The first logged rule of the group that let this packet out.
    fn group(&self, p: &Logged) -> Option<&str> {
        let d = u32::from(p.destination);
        self.egress
            .iter()
            .filter(|r| r.log && r.source == p.source)
            .find(|r| {
                r.destinations
                    .iter()
                    .any(|(a, b)| u32::from(*a) <= d && d <= u32::from(*b))
                    && r.allowed.iter().any(|a| match (*a, p.protocol) {
                        (Allowed::All, _) => true,
                        (Allowed::Tcp(x, y), 6) | (Allowed::Udp(x, y), 17) => p
                            .destination_port
                            .is_some_and(|port| x <= port && port <= y),
                        (Allowed::Icmp((t0, t1), (c0, c1)), 1) => {
                            p.destination_port.is_some_and(|tc| {
                                let (t, c) = ((tc >> 8) as u8, (tc & 0xff) as u8);
                                t0 <= t && t <= t1 && c0 <= c && c <= c1
                            })
                        }
                        _ => false,
                    })
            })
            .map(|r| r.group.as_str())
    }
}

fn protocol(n: u8) -> String {
    match n {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// One JSON line for a logged packet (pure).
pub fn line(p: &Logged, dir: &Directory) -> Value {
    let (kind, verdict) = match p.prefix.as_str() {
        "c2c-accept" => ("c2c", "accept"),
        "c2c-deny" => ("c2c", "deny"),
        "asg-accept" => ("asg", "accept"),
        "egress-deny" => ("egress", "deny"),
        _ => ("other", "unknown"),
    };
    let end = |ip: Ipv4Addr, port: Option<u16>, by_mark: bool| {
        let app = dir.by_ip.get(&ip).or_else(|| {
            // A remote source's address may be unknown here; its tag rode in with the packet.
            by_mark
                .then(|| u16::try_from(p.mark).ok())
                .flatten()
                .and_then(|t| dir.by_tag.get(&t))
        });
        let mut v = json!({ "ip": ip.to_string() });
        if p.protocol != 1 {
            if let Some(port) = port {
                v["port"] = json!(port);
            }
        }
        if let Some((name, guid)) = app {
            v["app"] = json!(name);
            v["app_guid"] = json!(guid);
        }
        v
    };
    let mut out = json!({
        "time": humantime::format_rfc3339_millis(p.time).to_string(),
        "kind": kind,
        "verdict": verdict,
        "protocol": protocol(p.protocol),
        "source": end(p.source, p.source_port, kind == "c2c"),
        "destination": end(p.destination, p.destination_port, false),
    });
    if p.protocol == 1 {
        if let Some(tc) = p.destination_port {
            out["icmp_type"] = json!(tc >> 8);
            out["icmp_code"] = json!(tc & 0xff);
        }
    }
    if kind == "asg" {
        if let Some(g) = dir.group(p) {
            out["security_group"] = json!(g);
        }
    }
    out
}

/// Lines the traffic log wrote, and times the kernel dropped records (a burst past the socket
/// buffer), since the agent started: for its metrics.
pub static LINES_WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// See [`LINES_WRITTEN`].
pub static KERNEL_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The traffic log stays near this size: past it, the file becomes `<name>.1` (replacing the
/// one before) and a new one starts, so the log holds at most about twice this on disk.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// An append-only log file of at most `max` bytes (then rotated to `<path>.1`), readable by
/// its owner only: lines name apps, addresses and ports of every tenant.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: std::fs::File,
    size: u64,
}

impl RotatingLog {
    /// Opens (or creates, mode 0600) `path` for appending.
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<Self> {
        let file = Self::open_file(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max,
            file,
            size,
        })
    }

    fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // A file made before this (or by hand) is made private too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    /// Appends `buf`, rotating first if it would pass the limit.
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
            self.file = Self::open_file(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }
}

/// Reads the cell's NFLOG group on a thread of its own (in the calling thread's network
/// namespace), appends a line per packet to `path` and records each in `flows` (reported to
/// control). Returns once bound, or why not.
pub fn spawn(
    path: PathBuf,
    dir: SharedDirectory,
    flows: crate::flows::SharedFlows,
) -> std::io::Result<()> {
    let reader = crate::nflog::Reader::bind(crate::nflog::GROUP)?;
    let mut file = RotatingLog::open(path.clone(), MAX_LOG_BYTES)?;
    info!(path = %path.display(), group = crate::nflog::GROUP, "traffic log ready");
    std::thread::Builder::new()
        .name("netlog".into())
        .spawn(move || loop {
            match reader.next() {
                Ok(packets) => {
                    // The Arc, not the maps: a burst of lines costs no copy of every instance.
                    let d = dir.read().map(|d| Arc::clone(&d)).unwrap_or_default();
                    let mut buf = Vec::new();
                    let mut records = Vec::with_capacity(packets.len());
                    for p in &packets {
                        let l = line(p, &d);
                        let _ = writeln!(buf, "{l}");
                        if let Ok(f) = serde_json::from_value(l) {
                            records.push(f);
                        }
                    }
                    if let Ok(mut ring) = flows.lock() {
                        records.into_iter().for_each(|f| ring.record(f));
                    }
                    match file.write(&buf) {
                        Ok(()) => {
                            LINES_WRITTEN.fetch_add(
                                packets.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                        }
                        Err(error) => warn!(%error, "writing the traffic log failed"),
                    }
                }
                // ENOBUFS: the kernel dropped some (a burst past the socket buffer); go on.
                Err(error) if error.raw_os_error() == Some(105) => {
                    KERNEL_DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!("traffic log: the kernel dropped lines (burst past the buffer)")
                }
                Err(error) => {
                    warn!(%error, "traffic log reader stopped");
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::{App, Instance};
    use std::time::{Duration, UNIX_EPOCH};

    fn view() -> CellView {
        let app = |n: &str, g: &str, tag| App {
            guid: g.into(),
            name: n.into(),
            tag,
            space: String::new(),
            client_identity: Default::default(),
            proxy_protocol: Default::default(),
            app_protocol: Default::default(),
        };
        let inst = |g: &str, ip: &str| Instance {
            guid: format!("i-{g}"),
            app_guid: g.into(),
            index: 0,
            cell: "cell1".parse().unwrap(),
            ip: ip.parse().unwrap(),
        };
        CellView {
            revision: c2c_api::Revision(1),
            leases: vec![],
            apps: vec![app("appa", "ga", 1), app("appb", "gb", 2)],
            instances: vec![inst("ga", "10.255.1.2"), inst("gb", "10.255.2.3")],
            policies: vec![],
            routes: vec![],
            domains: vec![],
            egress: Default::default(),
            probes: vec![],
            unchanged: vec![],
        }
    }

    fn logged(prefix: &str, src: &str, dst: &str, proto: u8, dport: u16, mark: u32) -> Logged {
        Logged {
            prefix: prefix.into(),
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            mark,
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
            protocol: proto,
            source_port: (proto != 1).then_some(40000),
            destination_port: Some(dport),
        }
    }

    #[test]
    fn the_log_is_private_and_rotated_past_its_limit() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("network.log");
        // A log left world-readable by an earlier agent is made private.
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut log = RotatingLog::open(path.clone(), 100).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let line = [b'x'; 40];
        for _ in 0..10 {
            log.write(&line).unwrap();
        }
        // Never past the limit, and one older file kept, also private.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 100 && size > 0, "{size}");
        let old = d.path().join("network.log.1");
        assert!(std::fs::metadata(&old).unwrap().len() <= 100);
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn lines_name_both_apps_and_the_group() {
        let egress = vec![EgressRule {
            source: "10.255.1.2".parse().unwrap(),
            destinations: vec![("192.0.2.0".parse().unwrap(), "192.0.2.255".parse().unwrap())],
            allowed: vec![Allowed::Tcp(8000, 8000)],
            group: "ext".into(),
            log: true,
        }];
        let d = Directory::new(&view(), egress);
        let l = line(
            &logged("c2c-deny", "10.255.1.2", "10.255.2.3", 6, 8080, 1),
            &d,
        );
        assert_eq!(l["time"], "2023-11-14T22:13:20.250Z");
        assert_eq!(
            (l["kind"].as_str(), l["verdict"].as_str()),
            (Some("c2c"), Some("deny"))
        );
        assert_eq!(
            l["source"],
            json!({"ip": "10.255.1.2", "port": 40000, "app": "appa", "app_guid": "ga"})
        );
        assert_eq!(
            l["destination"],
            json!({"ip": "10.255.2.3", "port": 8080, "app": "appb", "app_guid": "gb"})
        );
        // A remote source unknown by address is named by the tag its packet carried.
        let l = line(
            &logged("c2c-accept", "10.255.9.9", "10.255.2.3", 6, 8080, 1),
            &d,
        );
        assert_eq!(l["source"]["app"], "appa");
        let l = line(
            &logged("asg-accept", "10.255.1.2", "192.0.2.200", 6, 8000, 1),
            &d,
        );
        assert_eq!(
            (l["kind"].as_str(), l["security_group"].as_str()),
            (Some("asg"), Some("ext"))
        );
        assert!(l["destination"].get("app").is_none());
        let l = line(
            &logged("egress-deny", "10.255.1.2", "192.0.2.200", 1, 0x0800, 1),
            &d,
        );
        assert_eq!(
            (l["protocol"].as_str(), l["icmp_type"].as_u64()),
            (Some("icmp"), Some(8))
        );
        assert!(l.get("security_group").is_none());
    }
}
