//! The hook's configuration on a cell host, and the OCI state a runtime hands it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use c2c_api::client::{Auth, Client};
use c2c_api::CellName;
use serde::{Deserialize, Serialize};

/// The hook's configuration on one cell host (JSON, written by the operator; `c2c-hook
/// install` checks it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Control's URL, or several replicas' separated by commas.
    pub control: String,
    /// The control issuer's certificate (PEM) that control's server certificate chains to.
    pub ca_file: PathBuf,
    /// The runtime's credential: a file holding a token from `c2c token create` (scope
    /// network.write with `--space`, or network.admin). Only root should read it.
    pub token_file: PathBuf,
    /// This cell's name (where control places the instances).
    pub cell: CellName,
    /// The cell's CNI data dir (as in the agent's `--data-dir`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The space (`ORG/SPACE`) an app the annotation names is created in when it does not
    /// exist yet (default: the default space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// How long `createRuntime` waits for the agent to confirm the instance and issue its
    /// certificate before it fails the container's start.
    #[serde(default = "default_wait", with = "secs")]
    pub wait: Duration,
}

fn default_data_dir() -> PathBuf {
    "/var/lib/c2c/cni".into()
}

fn default_wait() -> Duration {
    Duration::from_secs(15)
}

/// `wait` as a number of seconds.
mod secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

impl HookConfig {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let c: HookConfig =
            serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(s) = &c.space {
            if s.split_once('/')
                .is_none_or(|(o, s)| o.is_empty() || s.is_empty())
            {
                return Err(format!("{}: space {s:?} is not ORG/SPACE", path.display()));
            }
        }
        Ok(c)
    }

    /// Refuses a token file another user could read or write: it is a credential that places
    /// instances (and so gets certificates issued) for its spaces. Owned by the user the hook
    /// runs as (root), mode 0600 or 0400.
    pub fn check_token_file(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let p = &self.token_file;
        let m = std::fs::metadata(p)
            .map_err(|e| format!("reading the runtime's token {}: {e}", p.display()))?;
        let mode = m.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the runtime's token {} is open to other users (mode {mode:04o}): chmod 600 {}",
                p.display(),
                p.display()
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if m.uid() != me {
            return Err(format!(
                "the runtime's token {} belongs to uid {}, not to the hook's user (uid {me}): chown it",
                p.display(),
                m.uid()
            ));
        }
        Ok(())
    }

    pub(super) fn client(&self) -> Result<Client, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("reading {what} {}: {e}", p.display()))
        };
        self.check_token_file()?;
        let ca = read("the control issuer", &self.ca_file)?;
        let token = String::from_utf8_lossy(&read("the runtime's token", &self.token_file)?)
            .trim()
            .to_string();
        Client::new(&self.control, &ca, Auth::Token(token)).map_err(|e| e.to_string())
    }

    /// The directory of one container's sidecar: `certs/`, the pidfile, its log, the hook's
    /// record of the placement.
    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.data_dir.join("sidecars").join(container_id)
    }
}

/// The OCI state a runtime gives a hook on stdin (runtime-spec `state`).
#[derive(Debug, Clone, Deserialize)]
pub struct OciState {
    /// Container id (podman's is also its CNI_CONTAINERID).
    pub id: String,
    /// The bundle (its config.json holds the annotations when the state does not).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The container's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container's init process (the runtime's state has it from `createRuntime` on).
    #[serde(default)]
    pub pid: Option<i32>,
}

impl OciState {
    /// Parses the state, taking the annotations from the bundle's config.json when the state
    /// carries none (runtimes differ in whether they copy them).
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut s: OciState =
            serde_json::from_slice(raw).map_err(|e| format!("reading the OCI state: {e}"))?;
        // The id names a directory and a record: CNI's rule, so it can never climb out.
        if !crate::plugin::valid_container_id(&s.id) {
            return Err(format!(
                "the OCI state's container id {:?} is not a container id",
                s.id
            ));
        }
        if s.annotations.is_empty() {
            if let Some(b) = &s.bundle {
                #[derive(Deserialize)]
                struct Spec {
                    #[serde(default)]
                    annotations: BTreeMap<String, String>,
                }
                if let Ok(raw) = std::fs::read(b.join("config.json")) {
                    if let Ok(spec) = serde_json::from_slice::<Spec>(&raw) {
                        s.annotations = spec.annotations;
                    }
                }
            }
        }
        Ok(s)
    }
}
