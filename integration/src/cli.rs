//! Driving the `c2c` binary as a user does, for tests and benchmarks of the local platform.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use crate::bin;

/// Runs `c2c --state-dir DIR ARGS...`.
pub fn c2c(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("c2c"))
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("running c2c")
}

/// Runs `c2c` and panics with its output unless it succeeds; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = c2c(dir, args);
    assert!(
        o.status.success(),
        "c2c {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `c2c add-network-policy SRC DST --protocol tcp --port PORT`, which must succeed.
pub fn allow(dir: &Path, src: &str, dst: &str, port: &str) -> String {
    ok(
        dir,
        &[
            "add-network-policy",
            src,
            dst,
            "--protocol",
            "tcp",
            "--port",
            port,
        ],
    )
}

/// Takes the platform at its dir down when dropped, even when a test failed half-way.
pub struct Down<'a>(pub &'a Path);

/// A local platform in a state dir of its own: `c2c up ARGS` when made, `c2c down` (then the
/// dir goes) when dropped, also when `up` or the test fails.
pub struct TempPlatform {
    dir: tempfile::TempDir,
    /// What `c2c up` printed.
    pub up_output: String,
}

impl TempPlatform {
    /// Runs `c2c up ARGS` in a new temporary state dir.
    pub fn up(args: &[&str]) -> Self {
        let mut p = TempPlatform {
            dir: tempfile::tempdir().unwrap(),
            up_output: String::new(),
        };
        let up: Vec<&str> = std::iter::once("up").chain(args.iter().copied()).collect();
        p.up_output = ok(p.dir(), &up);
        p
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPlatform {
    fn drop(&mut self) {
        let _ = c2c(self.dir.path(), &["down"]);
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = c2c(self.0, &["down"]);
    }
}

/// A rustls client trusting only the PEM CA `ca_pem` (the platform CA).
pub fn tls_client(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
