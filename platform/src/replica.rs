//! Control as `c2c up` runs it: where it keeps its state (SQLite, or PostgreSQL shared by one
//! or two replicas), the flags each replica gets, and replica B beside A on the underlay.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{bin, ip, spawn_in, wait_for, CONTROL_B_IP, CONTROL_PORT};
use c2c_api::layout::Layout;

/// Replica B's state dir, under the platform's.
pub const REPLICA_B_DIR: &str = "replica-b";

/// Where control keeps its state: SQLite in the state dir, or a PostgreSQL database shared by
/// one or two replicas.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// A file (mode 0600) holding the PostgreSQL URL; None: SQLite in the state dir.
    pub database_file: Option<std::path::PathBuf>,
    /// How many control replicas (1 or 2; 2 needs `database_file`).
    pub replicas: u8,
    /// Lifetime of instance identities.
    pub identity_validity: Option<Duration>,
}

/// The flags control runs with for `control` (replica A and B alike).
pub(crate) fn control_flags(control: &ControlOptions) -> Vec<String> {
    let mut args = vec![];
    if let Some(v) = control.identity_validity {
        args.extend([
            "--identity-validity".into(),
            humantime::format_duration(v).to_string(),
        ]);
    }
    if let Some(f) = &control.database_file {
        args.extend(["--database-file".into(), f.display().to_string()]);
    }
    args
}

/// Starts replica B (unless it runs): a second control on the same database, listening at
/// [`CONTROL_B_IP`] on the underlay, with a state dir of its own holding the platform's files
/// copied from A's (its CA and token), as an operator copies them to a second control host.
/// Returns its URL.
pub(crate) fn start_b(
    state_dir: &Path,
    underlay_ns: &str,
    control: &ControlOptions,
) -> Result<String> {
    let dir = state_dir.join(REPLICA_B_DIR);
    let b = Layout::new(&dir);
    let a = Layout::new(state_dir);
    let pid = dir.join("control/control.pid");
    let log = dir.join("control/control.log");
    if super::live_pid(&pid, underlay_ns).is_none() {
        std::fs::create_dir_all(dir.join("control"))?;
        let _ = std::fs::remove_dir_all(b.ca_dir());
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(a.ca_dir())
            .arg(&dir)
            .status()
            .context("cp")?;
        anyhow::ensure!(
            copied.success(),
            "copying {} to {}",
            a.ca_dir().display(),
            dir.display()
        );
        std::fs::copy(a.token(), b.token()).context("copying the token to replica B")?;
        let addrs = std::process::Command::new("ip")
            .args(["-n", underlay_ns, "-4", "-o", "addr", "show", "dev", "br0"])
            .output()
            .context("ip addr show")?;
        if !String::from_utf8_lossy(&addrs.stdout).contains(&format!(" {CONTROL_B_IP}/")) {
            ip(&[
                "-n",
                underlay_ns,
                "addr",
                "add",
                &format!("{CONTROL_B_IP}/24"),
                "dev",
                "br0",
            ])?;
        }
        let _ = std::fs::remove_file(b.url());
        let mut args = vec![
            "--state-dir".to_string(),
            dir.display().to_string(),
            "control".into(),
            "serve".into(),
            "--listen".into(),
            format!("{CONTROL_B_IP}:{CONTROL_PORT}"),
        ];
        args.extend(control_flags(control));
        args.extend([
            "--metrics-listen".into(),
            format!("{CONTROL_B_IP}:{}", super::CONTROL_METRICS_PORT),
        ]);
        spawn_in(underlay_ns, &bin("c2c")?, &args, &[], &log, &pid)?;
        wait_for("replica B to listen", Duration::from_secs(15), || {
            b.url().exists()
        })
        .with_context(|| format!("see {}", log.display()))?;
    }
    Ok(std::fs::read_to_string(b.url())?.trim().to_string())
}
