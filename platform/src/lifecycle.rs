//! An instance's processes over its life: launching the app (under a supervisor that records
//! how it ended) and its sidecar, the state `c2c apps` and `c2c app` show (starting, running,
//! crashed with exit code and time, stopped), and `c2c stop`, `start` and `restart`.
//!
//! Files in the instance's dir: `supervisor.pid` (the `c2c supervise` process, the app's
//! parent), `app.pid` (the app, leader of its own process group), `exit.json` (how the app
//! ended, written by the supervisor), `stopped` (a user stopped it), `proxy.pid` (the sidecar).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::records::{identity_env, instances, InstanceInfo, PUSHED_FILE};
use super::{bin, in_netns, live_pid, spawn_in, stop_pidfile, Paths};

/// How the app ended, as its supervisor saw it (`exit.json`).
pub const EXIT_FILE: &str = "exit.json";
/// Present while a user has the instance stopped (`c2c stop`).
pub const STOPPED_FILE: &str = "stopped";
/// The app's PID (the supervisor writes it).
pub const APP_PID: &str = "app.pid";
/// The supervisor's PID.
pub const SUPERVISOR_PID: &str = "supervisor.pid";
/// The sidecar's PID.
pub const PROXY_PID: &str = "proxy.pid";

/// How an app process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

impl Exit {
    /// `exit code 3` or `killed by SIGKILL`.
    pub fn reason(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {s}"),
            },
            (None, None) => "ended".into(),
        }
    }

    /// When, as RFC 3339 (UTC, seconds).
    pub fn when(&self) -> String {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(self.at)).to_string()
    }
}

/// What an instance this machine started is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Placed, its processes not yet up.
    Starting,
    /// Its app process runs.
    Running,
    /// Its app process ended without being asked to; how, when known.
    Crashed(Option<Exit>),
    /// A user stopped it (`c2c stop`); `c2c start` starts it again.
    Stopped,
}

impl State {
    /// `starting`, `running`, `crashed` or `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Crashed(_) => "crashed",
            State::Stopped => "stopped",
        }
    }

    /// For a table: the name, and a crash's reason and time.
    pub fn describe(&self) -> String {
        match self {
            State::Crashed(Some(e)) => format!("crashed ({}, {})", e.reason(), e.when()),
            s => s.name().into(),
        }
    }

    /// For `--json`: `"exit": {"code", "signal", "at"}` beside a crash, else null.
    pub fn exit_json(&self) -> serde_json::Value {
        match self {
            State::Crashed(Some(e)) => serde_json::json!({
                "code": e.code, "signal": e.signal, "at": e.when(),
            }),
            _ => serde_json::Value::Null,
        }
    }
}

/// The state of an instance this machine started, from its files and processes.
pub fn state_of(state_dir: &Path, inst: &InstanceInfo) -> State {
    let dir = Paths::new(state_dir).instance(&inst.app, inst.index);
    if dir.join(STOPPED_FILE).exists() {
        return State::Stopped;
    }
    if live_pid(&dir.join(APP_PID), &inst.netns).is_some() {
        return State::Running;
    }
    let exit = std::fs::read(dir.join(EXIT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Exit>(&b).ok());
    match exit {
        Some(e) => State::Crashed(Some(e)),
        // The supervisor still starting the app, or the push still on its way.
        None if live_pid(&dir.join(SUPERVISOR_PID), &inst.netns).is_some() => State::Starting,
        None if inst.ip.is_unspecified() => State::Starting,
        // Both gone with no record (the supervisor was killed too).
        None => State::Crashed(None),
    }
}

/// What this machine sees of the instances it started (`c2c push`): instance GUID -> state.
/// Instances started elsewhere (podman on a cell host) are not in it.
pub fn local_states(state_dir: &Path) -> std::collections::HashMap<String, State> {
    instances(state_dir, None)
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let s = state_of(state_dir, &i);
            (i.guid, s)
        })
        .collect()
}

/// `c2c supervise`: runs `program args` as a child in a process group of its own, writes its
/// PID to `pidfile`, waits for it and writes how it ended to `exit_file`. Returns its code.
pub fn supervise(pidfile: &Path, exit_file: &Path, program: &Path, args: &[String]) -> Result<i32> {
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    write_atomic(pidfile, child.id().to_string().as_bytes())?;
    let status = child.wait().context("waiting for the app")?;
    let exit = Exit {
        code: status.code(),
        signal: status.signal(),
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    write_atomic(exit_file, &serde_json::to_vec(&exit)?)?;
    eprintln!("c2c supervise: the app {}", exit.reason());
    Ok(status.code().unwrap_or(1))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Starts an instance's app (under its supervisor; `command` through `/bin/sh -c`, else the
/// demo app) and sidecar in its namespace, and waits until both listen.
pub(crate) fn launch(state_dir: &Path, rec: &InstanceInfo, command: Option<&str>) -> Result<()> {
    let dir = Paths::new(state_dir).instance(&rec.app, rec.index);
    let certs = dir.join("certs");
    for f in [EXIT_FILE, STOPPED_FILE, APP_PID] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let mut envs = vec![
        ("PORT", "8080".to_string()),
        ("CF_INSTANCE_INTERNAL_IP", rec.ip.to_string()),
        ("CF_INSTANCE_INDEX", rec.index.to_string()),
        ("CF_INSTANCE_GUID", rec.guid.clone()),
    ];
    envs.extend(identity_env(&certs));
    let c2c = bin("c2c")?;
    let mut args: Vec<String> = vec![
        "--state-dir".into(),
        state_dir.display().to_string(),
        "supervise".into(),
        "--pidfile".into(),
        dir.join(APP_PID).display().to_string(),
        "--exit-file".into(),
        dir.join(EXIT_FILE).display().to_string(),
        "--".into(),
    ];
    match command {
        Some(cmd) => args.extend(["/bin/sh".into(), "-c".into(), cmd.to_string()]),
        None => args.extend([
            c2c.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "demo-app".into(),
            "--name".into(),
            rec.app.clone(),
            "--index".into(),
            rec.index.to_string(),
        ]),
    }
    let supervisor = spawn_in(
        &rec.netns,
        &c2c,
        &args,
        &envs,
        &dir.join("app.log"),
        &dir.join(SUPERVISOR_PID),
    )?;
    let proxy_args: Vec<String> = [
        "--listen",
        "0.0.0.0:61443",
        "--upstream",
        "127.0.0.1:8080",
        "--cert-dir",
        &certs.display().to_string(),
        "--admin",
        "127.0.0.1:61003",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn_in(
        &rec.netns,
        &bin("c2c-proxy")?,
        &proxy_args,
        &[],
        &dir.join("proxy.log"),
        &dir.join(PROXY_PID),
    )?;
    let logs = format!(
        "see {} and {}",
        dir.join("app.log").display(),
        dir.join("proxy.log").display()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = in_netns(&rec.netns, || {
            [8080u16, 61443].iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
        })?;
        if ready {
            return Ok(());
        }
        // Fail at once when the app died instead of waiting out the timeout.
        if !Path::new(&format!("/proc/{supervisor}")).exists()
            || super::is_zombie_pub(supervisor as i32)
        {
            let how = match state_of(state_dir, rec) {
                State::Crashed(Some(e)) => format!(" ({})", e.reason()),
                _ => String::new(),
            };
            bail!("the app exited{how} instead of listening on $PORT (8080); {logs}");
        }
        if std::time::Instant::now() > deadline {
            bail!("the app (:8080) or the sidecar (:61443) did not start listening within 10 s; {logs}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops an instance's sidecar, app and supervisor (each only if it is still the process we
/// started).
pub(crate) fn stop_processes(state_dir: &Path, inst: &InstanceInfo) {
    let dir = Paths::new(state_dir).instance(&inst.app, inst.index);
    let grace = Duration::from_secs(3);
    stop_pidfile(&dir.join(PROXY_PID), "c2c-proxy", &inst.netns, grace);
    stop_pidfile(&dir.join(APP_PID), "", &inst.netns, grace);
    // It ends by itself once the app has; only if it did not.
    stop_pidfile(&dir.join(SUPERVISOR_PID), "supervise", &inst.netns, grace);
}

/// The command the app's last push ran (None: the demo app).
pub(crate) fn pushed_command(state_dir: &Path, app: &str) -> Option<String> {
    let raw = std::fs::read(state_dir.join("instances").join(app).join(PUSHED_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["command"].as_str().map(str::to_string)
}

/// The instances `c2c stop|start|restart APP` act on: the app's, by index; an app that was
/// never pushed here is an error that says so.
fn pushed_instances(state_dir: &Path, app: &str) -> Result<Vec<InstanceInfo>> {
    super::preflight()?;
    let found = instances(state_dir, Some(app))?;
    if found.is_empty() {
        bail!("{app} has no instances on this platform: `c2c push {app}` starts it");
    }
    Ok(found)
}

/// `c2c stop APP`: its instances' processes end; their namespaces, addresses, placements and
/// host ports stay, and they show as stopped until `c2c start APP`.
pub fn stop(state_dir: &Path, app: &str) -> Result<()> {
    let found = pushed_instances(state_dir, app)?;
    if found
        .iter()
        .all(|i| state_of(state_dir, i) == State::Stopped)
    {
        println!("App '{app}' is already stopped.\nOK");
        return Ok(());
    }
    println!("Stopping app {app}...");
    for inst in &found {
        let dir = Paths::new(state_dir).instance(&inst.app, inst.index);
        // First: whatever ends the app now is this stop, not a crash.
        std::fs::write(dir.join(STOPPED_FILE), b"")?;
        stop_processes(state_dir, inst);
    }
    println!("OK");
    Ok(())
}

/// `c2c start APP`: its stopped or crashed instances start again, as its last push made them;
/// running ones are left alone. `restart` stops every instance first.
pub fn start(state_dir: &Path, app: &str, restart: bool) -> Result<()> {
    let found = pushed_instances(state_dir, app)?;
    let command = pushed_command(state_dir, app);
    println!(
        "{} app {app}...",
        if restart { "Restarting" } else { "Starting" }
    );
    let mut started = 0;
    for inst in &found {
        match state_of(state_dir, inst) {
            State::Running | State::Starting if !restart => continue,
            _ => {}
        }
        stop_processes(state_dir, inst);
        launch(state_dir, inst, command.as_deref())
            .with_context(|| format!("starting {}/{}", inst.app, inst.index))?;
        println!(
            "  {}/{} running on {}: {}",
            inst.app, inst.index, inst.cell, inst.ip
        );
        started += 1;
    }
    if started == 0 {
        println!("App '{app}' is already started.");
    }
    println!("OK");
    Ok(())
}
