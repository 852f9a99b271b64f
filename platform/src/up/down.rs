//! `c2c down`, and the sweep of what a platform of this state dir left (its namespaces and the
//! processes in them) that `up` runs when no record of one is there.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::replica::REPLICA_B_DIR;
use crate::{ip, prefix_for, preflight, stop_pidfile, Paths, PlatformInfo};

/// PIDs of live processes that run inside one of the namespaces `<prefix>-*` (the platform's
/// own: control, agents, sidecars, apps), apart from this process and its ancestors. A process
/// elsewhere is never ours, whatever its command line says.
fn processes_in_namespaces(prefix: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let ours: std::collections::BTreeSet<(u64, u64)> = entries_with_prefix("/run/netns", prefix)
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new("/run/netns").join(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ours.is_empty() {
        return vec![];
    }
    let spared = ancestors();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !spared.contains(pid) && !crate::is_zombie_pub(*pid))
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| ours.contains(&(m.dev(), m.ino())))
        })
        .collect()
}

/// This process and every process above it.
fn ancestors() -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 && out.insert(pid) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces and parentheses; ppid follows the last ')'.
        pid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(1);
    }
    out
}

/// Entries of `dir` named `<prefix>-*`: the namespaces (`/run/netns`) and their resolver
/// dirs (`/etc/netns`) of one platform.
fn entries_with_prefix(dir: &str, prefix: &str) -> Vec<String> {
    let want = format!("{prefix}-");
    std::fs::read_dir(dir)
        .map(|list| {
            list.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&want))
                .collect()
        })
        .unwrap_or_default()
}

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// Processes that were still running, killed.
    pub(super) killed: Vec<i32>,
    /// Namespaces removed.
    pub(super) removed: Vec<String>,
    /// What could not be removed, and why.
    pub(super) failed: Vec<String>,
}

/// Kills the processes inside the namespaces named `<prefix>-*` and removes those namespaces
/// with their `/etc/netns` dirs, whatever the state dir still records.
pub(super) fn sweep(prefix: &str) -> Swept {
    let mut done = Swept::default();
    for pid in processes_in_namespaces(prefix) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        done.killed.push(pid);
    }
    for name in entries_with_prefix("/run/netns", prefix) {
        match ip(&["netns", "del", &name]) {
            Ok(_) => done.removed.push(name),
            Err(e) => done.failed.push(format!("namespace {name}: {e}")),
        }
    }
    for name in entries_with_prefix("/etc/netns", prefix) {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
    }
    done
}

/// Removes everything `up` and `push` made: instances (CNI DEL, processes), agents, control,
/// namespaces, and the platform's files in the state dir. Goes on past errors, reporting them.
pub fn down(state_dir: &Path) -> Result<()> {
    preflight()?;
    let paths = Paths::new(state_dir);
    let info = PlatformInfo::load(&paths).ok();
    let mut problems = vec![];
    if let Ok(apps) = std::fs::read_dir(state_dir.join("instances")) {
        for app in apps.flatten() {
            let name = app.file_name().to_string_lossy().into_owned();
            if let Err(e) = crate::instance::remove_app_instances(state_dir, &name) {
                problems.push(format!("{name}: {e:#}"));
            }
        }
    }
    let prefix = info
        .as_ref()
        .map(|i| i.prefix.clone())
        .unwrap_or_else(|| prefix_for(state_dir));
    if let Ok(cells) = std::fs::read_dir(state_dir.join("cells")) {
        for c in cells.flatten() {
            let cell_ns = format!("{prefix}-{}", c.file_name().to_string_lossy());
            stop_pidfile(
                &c.path().join("agent.pid"),
                "c2c-agent",
                &cell_ns,
                Duration::from_secs(5),
            );
        }
    }
    stop_pidfile(
        &crate::metrics::relay_pidfile(state_dir),
        "metrics-relay",
        &format!("{prefix}-u"),
        Duration::from_secs(5),
    );
    for control in ["control/control.pid", "replica-b/control/control.pid"] {
        stop_pidfile(
            &state_dir.join(control),
            "c2c",
            &format!("{prefix}-u"),
            Duration::from_secs(5),
        );
    }
    // Every namespace of this platform, including any a failed step left, and anything still
    // running that belongs to it (its command line names the state dir: control, agents,
    // sidecars, apps), say after a step failed half-way.
    let swept = sweep(&prefix);
    // Leftovers killed are what `down` is for: reported, not a failure.
    for pid in &swept.killed {
        eprintln!("c2c down: process {pid} of this platform was still running; killed it");
    }
    problems.extend(swept.failed);
    for name in entries_with_prefix("/run/netns", &prefix) {
        problems.push(format!("namespace {name} could not be removed"));
    }
    for p in [
        "instances",
        "cells",
        "control",
        REPLICA_B_DIR,
        "metrics.json",
        "metrics-relay.pid",
        "metrics-relay.log",
        "ca",
        "platform.json",
        "state.db",
        "state.db-wal",
        "state.db-shm",
    ] {
        let path = state_dir.join(p);
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("down finished with problems:\n  {}", problems.join("\n  "))
    }
}
