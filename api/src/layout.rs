//! Where things live in the state dir (default `/var/lib/c2c`, or `--state-dir`, or
//! `C2C_STATE_DIR`): every command finds the control URL, the platform CA and the token here.

use std::path::{Path, PathBuf};

/// Default state dir.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/c2c";

/// An instance's identity dir (`instance.crt`, `instance.key`), beside its sidecar's cert dir
/// `cert_dir`: the cell agent keeps it current; the app reads it (CF_INSTANCE_CERT).
pub fn identity_dir(cert_dir: &Path) -> PathBuf {
    cert_dir.parent().unwrap_or(cert_dir).join("identity")
}

/// An instance's system-certificates dir (the platform root, CF_SYSTEM_CERT_PATH), beside its
/// sidecar's cert dir `cert_dir`.
pub fn system_certs_dir(cert_dir: &Path) -> PathBuf {
    cert_dir.parent().unwrap_or(cert_dir).join("system-certs")
}

/// Paths under one state dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state dir itself.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// SQLite database.
    pub fn db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    /// Platform CA dir: the root (`ca.pem`, `ca.key`) and one issuer per role beneath
    /// (`control/`, `cells/`, `instances/`; see `c2c_certs::pki`).
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// The control issuer's certificate: the only anchor a client trusts for control.
    pub fn control_issuer(&self) -> PathBuf {
        self.ca_dir().join("control").join("ca.pem")
    }
    /// The control API's server cert dir.
    pub fn server_tls_dir(&self) -> PathBuf {
        self.root.join("control").join("tls")
    }
    /// The bearer token of the external API (mode 0600).
    pub fn token(&self) -> PathBuf {
        self.root.join("control").join("token")
    }
    /// The network namespace control is reachable from, when it is not this one (the local
    /// platform's underlay), written by `c2c up`.
    pub fn netns(&self) -> PathBuf {
        self.root.join("control").join("netns")
    }
    /// The URL the control API listens on, written at start.
    pub fn url(&self) -> PathBuf {
        self.root.join("control").join("url")
    }
    /// The other control replicas' URLs, one per line (written by `c2c up --replicas`):
    /// clients go on to them in turn when the first does not answer.
    pub fn replica_urls(&self) -> PathBuf {
        self.root.join("control").join("replicas")
    }
}
