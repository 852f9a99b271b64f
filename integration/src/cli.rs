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

/// Entries of `dir` whose names start with `prefix`.
pub fn named(dir: &str, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing of the platform at `dir` is left: no namespace with its prefix, no process naming it.
pub fn assert_nothing_left(dir: &Path, prefix: &str) {
    let left = named("/run/netns", prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let etc = named("/etc/netns", prefix);
    assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    let needle = dir.display().to_string();
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            // An argument that is the dir or lies under it (not a longer path sharing a prefix).
            let names_dir = raw.split(|b| *b == 0).any(|arg| {
                let arg = String::from_utf8_lossy(arg);
                arg == needle || arg.starts_with(&format!("{needle}/"))
            });
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            (pid != std::process::id() && names_dir).then_some(format!("{pid}: {cmd}"))
        })
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

/// The prefix of the platform's namespaces, from platform.json.
pub fn prefix(dir: &Path) -> String {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("platform.json")).unwrap()).unwrap();
    info["prefix"].as_str().unwrap().to_string() + "-"
}

/// `curl` inside an instance, as a user would run it; returns (exit code, stdout).
pub fn curl(dir: &Path, from: &str, url: &str) -> (i32, String) {
    let o = c2c(
        dir,
        &["exec", from, "--", "curl", "-s", "--max-time", "5", url],
    );
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// The IPv4 addresses a name resolves to inside an instance (glibc's resolver via the
/// instance's resolv.conf, as any program in the container sees them); empty when it does not.
pub fn resolve(dir: &Path, from: &str, name: &str) -> std::collections::BTreeSet<String> {
    resolve_with(dir, from, name, "")
}

/// [`resolve`] with glibc resolver options (`RES_OPTIONS`), e.g. `use-vc` to ask over TCP.
pub fn resolve_with(
    dir: &Path,
    from: &str,
    name: &str,
    options: &str,
) -> std::collections::BTreeSet<String> {
    let opts = format!("RES_OPTIONS={options}");
    let o = c2c(
        dir,
        &["exec", from, "--", "env", &opts, "getent", "ahostsv4", name],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// [`curl`] again until it succeeds or 10 s pass: a policy is enforced asynchronously (in
/// milliseconds, but a loaded CI machine may take longer than spawning curl does).
pub fn curl_allowed(dir: &Path, from: &str, url: &str) -> (i32, String) {
    let mut last = (-1, String::new());
    crate::topo::eventually(std::time::Duration::from_secs(10), || {
        last = curl(dir, from, url);
        (last.0 == 0).then_some(())
    });
    last
}

/// The overlay address of `APP` or `APP/INDEX`, from its instance record.
pub fn ip_of(dir: &Path, target: &str) -> String {
    let (app, index) = target.split_once('/').unwrap_or((target, "0"));
    let raw = std::fs::read(
        dir.join("instances")
            .join(app)
            .join(index)
            .join("instance.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["ip"].as_str().unwrap().to_string()
}
