//! What the local platform records of each instance it started (`instances/APP/INDEX/`):
//! its `instance.json`, the app's last push, the identity files' variables. Below both the
//! push/delete orchestration ([`crate::instance`]) and the processes' life
//! ([`crate::lifecycle`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One running instance, recorded in its dir as `instance.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// App name.
    pub app: String,
    /// App GUID.
    pub app_guid: String,
    /// Instance index.
    pub index: u32,
    /// Instance GUID.
    pub guid: String,
    /// Cell name.
    pub cell: String,
    /// The container's network namespace.
    pub netns: String,
    /// CNI container id.
    pub container_id: String,
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// Host ports on its cell: the app's 8080 and the sidecar's 61443 (absent on instances
    /// pushed before host ports existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<HostPorts>,
    /// A probe a cell's agent hosts for `c2c check` on a multi-host platform: where its
    /// responder answers (the cell's address and the probe's host port). Never recorded.
    #[serde(skip)]
    pub probe_at: Option<std::net::SocketAddr>,
}

/// An instance's host ports on its cell's underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPorts {
    /// -> the app's 8080.
    pub app: u16,
    /// -> the sidecar's 61443 (TLS).
    pub tls: u16,
}

/// What the last push of an app ran (`instances/APP/pushed.json`): its command and host ports.
pub(crate) const PUSHED_FILE: &str = "pushed.json";

pub(crate) fn check_app(app: &str) -> Result<()> {
    c2c_api::names::validate_app_name(app).map_err(anyhow::Error::msg)
}

/// Instances recorded in the state dir, of one app or all, by app then index.
pub fn instances(state_dir: &Path, app: Option<&str>) -> Result<Vec<InstanceInfo>> {
    if let Some(a) = app {
        check_app(a)?;
    }
    let root = state_dir.join("instances");
    let mut out = vec![];
    let apps: Vec<PathBuf> = match app {
        Some(a) => vec![root.join(a)],
        None => std::fs::read_dir(&root)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default(),
    };
    for a in apps {
        for i in std::fs::read_dir(&a)
            .map(|r| r.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if let Ok(raw) = std::fs::read(i.path().join("instance.json")) {
                if let Ok(rec) = serde_json::from_slice::<InstanceInfo>(&raw) {
                    out.push(rec);
                }
            }
        }
    }
    out.sort_by(|a, b| (a.app.as_str(), a.index).cmp(&(b.app.as_str(), b.index)));
    Ok(out)
}

/// CF's identity variables for the instance whose sidecar cert dir is `certs`: its
/// certificate and key (CF_INSTANCE_CERT, CF_INSTANCE_KEY) and the dir holding the platform
/// root (CF_SYSTEM_CERT_PATH).
pub(crate) fn identity_env(certs: &Path) -> Vec<(&'static str, String)> {
    use c2c_certs::identity::{CERT_FILE, KEY_FILE};
    let id = c2c_api::layout::identity_dir(certs);
    vec![
        ("CF_INSTANCE_CERT", id.join(CERT_FILE).display().to_string()),
        ("CF_INSTANCE_KEY", id.join(KEY_FILE).display().to_string()),
        (
            "CF_SYSTEM_CERT_PATH",
            c2c_api::layout::system_certs_dir(certs)
                .display()
                .to_string(),
        ),
    ]
}
