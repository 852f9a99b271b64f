//! The cell's container metadata store: one JSON file per container, written by `c2c-cni` on
//! ADD and removed on DEL, read by the cell agent (container id -> IP, app GUID, index).

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the cell knows of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// CNI_NETNS at ADD time.
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// Host-side veth.
    pub host_veth: String,
    /// App GUID, when the runtime passed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    /// Instance GUID, when the runtime passed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_guid: Option<String>,
    /// Instance index, when the runtime passed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_index: Option<u32>,
    /// Where the instance's sidecar reads its certificate; the cell agent keeps it issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_dir: Option<String>,
    /// Host ports forwarded to the container (CNI's `portMappings` capability).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// The cell agent runs the instance's sidecar in the container's network namespace
    /// (61443 -> 8080, certificate from `cert_dir`): set by `c2c-hook` for containers a runtime
    /// started with the `c2c.app` annotation. Runtimes that run their own sidecar leave it off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sidecar: bool,
}

/// A host port forwarded to a container port, as CNI's `portMappings` capability gives it
/// (`{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// The port on the cell.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// The port in the container.
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: c2c_api::net::Protocol,
    /// Only on this address of the cell (absent: every address of the cell).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::Ipv4Addr>,
}

impl PortMapping {
    /// Whether two mappings would take the same packets.
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:{}", self.host_port)?,
            None => write!(f, "{}", self.host_port)?,
        }
        write!(f, "->{}/{}", self.container_port, self.protocol)
    }
}

/// Reading or writing the store failed.
#[derive(Debug, thiserror::Error)]
#[error("container store {path}: {source}")]
pub struct StoreError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// The store under a data dir.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `data_dir` (`data_dir/containers`).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("containers"),
        }
    }

    fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    /// Writes (or replaces) a record atomically: readers see the old file or the new one.
    /// The caller has checked that the container id is a safe file name (CNI's id rules).
    pub fn put(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        let path = self.path(&rec.container_id);
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            // Records name every container's app, address and host ports: root's only.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(err)?;
        }
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}", rec.container_id, std::process::id()));
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| err(io::Error::other(e)))?;
        let write = || -> io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(err)
    }

    /// The record of `container_id`, if any.
    pub fn get(&self, container_id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let path = self.path(container_id);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError {
                    path,
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError { path, source }),
        }
    }

    /// Removes the record; true if there was one.
    pub fn remove(&self, container_id: &str) -> Result<bool, StoreError> {
        let path = self.path(container_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError { path, source }),
        }
    }

    /// Every record, sorted by container id. Unreadable files are skipped (and returned
    /// separately), so one bad file does not hide the others.
    pub fn list(&self) -> Result<(Vec<ContainerRecord>, Vec<StoreError>), StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
            Err(source) => {
                return Err(StoreError {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let (mut recs, mut bad) = (vec![], vec![]);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            match self.get(id) {
                Ok(Some(r)) => recs.push(r),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        recs.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok((recs, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.list().unwrap().0, vec![]);
        let rec = ContainerRecord {
            container_id: "c1".into(),
            ip: "10.255.7.2".parse().unwrap(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_veth: "s-0aff0702".into(),
            app_guid: Some("guid-a".into()),
            instance_guid: None,
            instance_index: Some(0),
            cert_dir: None,
            port_mappings: vec![],
            sidecar: false,
        };
        store.put(&rec).unwrap();
        assert_eq!(store.get("c1").unwrap(), Some(rec.clone()));
        std::fs::write(dir.path().join("containers/bad.json"), "{").unwrap();
        let (recs, bad) = store.list().unwrap();
        assert_eq!(recs, vec![rec]);
        assert_eq!(bad.len(), 1, "the corrupt file is reported, not hidden");
        assert!(store.remove("c1").unwrap());
        assert!(!store.remove("c1").unwrap());
        assert_eq!(store.get("c1").unwrap(), None);
    }
}
