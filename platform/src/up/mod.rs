//! `c2c up` and `c2c down`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    bin, ip, netns_exists, prefix_for, preflight, spawn_in, wait_for, CellInfo, Paths,
    PlatformInfo, CONTROL_IP, CONTROL_PORT,
};
use c2c_api::layout::Layout;

mod down;

pub use down::down;
use down::sweep;

/// The underlay bridge's MAC, fixed (locally administered): see `up`.
const UNDERLAY_BRIDGE_MAC: &str = "02:c2:c0:00:00:fe";

pub use super::CONTROL_B_IP;
pub use crate::replica::{ControlOptions, REPLICA_B_DIR};

/// Brings the platform up: underlay, control, `cells` cells with their agents. Idempotent: an
/// existing platform in this state dir is reused (missing cells are added).
pub fn up(
    state_dir: &Path,
    cells: u8,
    dns_upstreams: &[SocketAddr],
    log_c2c: bool,
    control: &ControlOptions,
) -> Result<PlatformInfo> {
    preflight()?;
    anyhow::ensure!((1..=50).contains(&cells), "--cells must be 1-50");
    anyhow::ensure!(
        (1..=2).contains(&control.replicas),
        "--replicas must be 1 or 2"
    );
    anyhow::ensure!(
        control.replicas == 1 || control.database_file.is_some(),
        "--replicas 2 needs --database-file: the replicas share one PostgreSQL database"
    );
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let paths = Paths::new(state_dir);
    let prefix = prefix_for(state_dir);
    let underlay_ns = format!("{prefix}-u");
    let started = Instant::now();

    // No record of a platform here, yet namespaces or processes of one: its state dir was
    // deleted under it (or a first `up` died half-way). Start clean rather than trip over them.
    if !paths.info().exists() {
        sweep_leftovers(state_dir, &prefix);
    }
    if !netns_exists(&underlay_ns) {
        make_underlay(&underlay_ns)?;
    }
    // Flags given now that what already runs was started without (said at the end).
    let mut not_applied: Vec<String> = vec![];
    let control_urls = start_control(state_dir, &underlay_ns, control, &mut not_applied)?;
    let agents = Agents {
        state_dir,
        control_urls: &control_urls,
        dns_upstreams,
        log_c2c,
    };
    let mut infos = vec![];
    for n in 1..=cells {
        let name = format!("cell{n}");
        let netns = format!("{prefix}-{name}");
        let underlay_ip = std::net::Ipv4Addr::new(192, 0, 2, n);
        std::fs::create_dir_all(paths.cell(&name))?;
        if !netns_exists(&netns) {
            plug_cell(&underlay_ns, &name, &netns, underlay_ip)?;
        }
        let agent_pid = paths.cell(&name).join("agent.pid");
        match super::live_pid(&agent_pid, &netns) {
            Some(pid) => not_applied.extend(agents.not_applied(pid, &name)),
            None => agents.start(&name, &netns, underlay_ip)?,
        }
        infos.push(CellInfo {
            name,
            netns,
            underlay_ip,
        });
    }
    for c in &infos {
        let conf = paths.cell(&c.name).join("cni.conflist");
        wait_for(
            &format!("{} to be ready (lease, VTEP, first rules)", c.name),
            Duration::from_secs(15),
            || conf.exists(),
        )
        .with_context(|| format!("see {}", paths.cell(&c.name).join("agent.log").display()))?;
    }
    // Keep cells a bigger earlier `up` made.
    let mut all = infos;
    if let Ok(old) = PlatformInfo::load(&paths) {
        for c in old.cells {
            if !all.iter().any(|x| x.name == c.name) {
                all.push(c);
            }
        }
    }
    let info = PlatformInfo {
        prefix,
        underlay_ns,
        cells: all,
    };
    std::fs::write(paths.info(), serde_json::to_vec_pretty(&info)?)?;
    let mut targets = vec!["control".to_string()];
    if control.replicas > 1 {
        targets.push("replica-b".into());
    }
    targets.extend(info.cells.iter().map(|c| c.name.clone()));
    targets.push("console".into());
    crate::metrics::start_relay(state_dir, &info.underlay_ns, &targets)?;
    if !not_applied.is_empty() {
        eprintln!(
            "c2c up: the platform already runs; flags not applied to what runs:\n  {}\n  (to apply them: c2c down, then c2c up with them)",
            not_applied.join("\n  ")
        );
    }
    remove_lost_instances(state_dir)?;
    tracing::debug!(elapsed = ?started.elapsed(), "platform up");
    Ok(info)
}

/// Removes (and says) what an earlier platform of this state dir left: its namespaces and
/// processes.
fn sweep_leftovers(state_dir: &Path, prefix: &str) {
    let swept = sweep(prefix);
    let said: Vec<String> = (swept.killed.iter().map(|p| format!("process {p} killed")))
        .chain(
            swept
                .removed
                .iter()
                .map(|n| format!("namespace {n} removed")),
        )
        .chain(swept.failed.iter().cloned())
        .collect();
    if !said.is_empty() {
        eprintln!(
            "c2c up: removed what an earlier platform at {} left behind:\n  {}",
            state_dir.display(),
            said.join("\n  ")
        );
    }
}

/// The underlay: a namespace with a bridge that holds control's address, the cells' ports
/// join it.
fn make_underlay(underlay_ns: &str) -> Result<()> {
    ip(&["netns", "add", underlay_ns])?;
    ip(&["-n", underlay_ns, "link", "set", "lo", "up"])?;
    // A bridge takes the lowest MAC of its ports unless given one: each cell added later
    // could change it under the cells that already resolved control's address, and their
    // frames to the old MAC are then dropped until ARP gives up on it (~10 s stalls).
    ip(&[
        "-n",
        underlay_ns,
        "link",
        "add",
        "br0",
        "address",
        UNDERLAY_BRIDGE_MAC,
        "type",
        "bridge",
    ])?;
    ip(&[
        "-n",
        underlay_ns,
        "addr",
        "add",
        &format!("{CONTROL_IP}/24"),
        "dev",
        "br0",
    ])?;
    ip(&["-n", underlay_ns, "link", "set", "br0", "up"])
}

/// Control in the underlay namespace (started unless it runs; what runs with other flags is
/// added to `not_applied`), and replica B when asked. Returns every replica's URL.
fn start_control(
    state_dir: &Path,
    underlay_ns: &str,
    control: &ControlOptions,
    not_applied: &mut Vec<String>,
) -> Result<Vec<String>> {
    let layout = Layout::new(state_dir);
    std::fs::create_dir_all(state_dir.join("control"))?;
    let control_pid = state_dir.join("control/control.pid");
    if let Some(pid) = super::live_pid(&control_pid, underlay_ns) {
        let want = control
            .identity_validity
            .map(|v| humantime::format_duration(v).to_string());
        if flag_value(pid, "--identity-validity") != want {
            not_applied.push(format!(
                "control runs with --identity-validity {}",
                flag_value(pid, "--identity-validity")
                    .unwrap_or_else(|| "24h (the default)".into())
            ));
        }
        let want = control
            .database_file
            .as_ref()
            .map(|f| f.display().to_string());
        if flag_value(pid, "--database-file") != want {
            not_applied.push(format!(
                "control keeps its state in {}",
                flag_value(pid, "--database-file")
                    .map_or("SQLite in the state dir".into(), |f| format!(
                        "the database named in {f}"
                    ))
            ));
        }
    } else {
        let _ = std::fs::remove_file(layout.url());
        let mut args = vec![
            "--state-dir".into(),
            state_dir.display().to_string(),
            "control".into(),
            "serve".into(),
            "--listen".into(),
            format!("{CONTROL_IP}:{CONTROL_PORT}"),
        ];
        args.extend(crate::replica::control_flags(control));
        args.extend([
            "--metrics-listen".into(),
            format!("{CONTROL_IP}:{}", super::CONTROL_METRICS_PORT),
            "--console-listen".into(),
            format!("{CONTROL_IP}:{}", super::CONTROL_CONSOLE_PORT),
        ]);
        spawn_in(
            underlay_ns,
            &bin("c2c")?,
            &args,
            &[],
            &state_dir.join("control/control.log"),
            &control_pid,
        )?;
        wait_for("control to listen", Duration::from_secs(15), || {
            layout.url().exists()
        })
        .with_context(|| format!("see {}", state_dir.join("control/control.log").display()))?;
    }
    std::fs::write(layout.netns(), format!("/run/netns/{underlay_ns}"))?;
    let mut control_urls = vec![std::fs::read_to_string(layout.url())?.trim().to_string()];
    if control.replicas > 1 {
        control_urls.push(crate::replica::start_b(state_dir, underlay_ns, control)?);
    }
    if control_urls.len() > 1 {
        std::fs::write(layout.replica_urls(), control_urls[1..].join("\n") + "\n")?;
    } else {
        let _ = std::fs::remove_file(layout.replica_urls());
    }
    Ok(control_urls)
}

/// A cell's namespace, its `eth0` plugged into the underlay bridge at `underlay_ip`.
fn plug_cell(
    underlay_ns: &str,
    name: &str,
    netns: &str,
    underlay_ip: std::net::Ipv4Addr,
) -> Result<()> {
    ip(&["netns", "add", netns])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    let port = format!("u-{name}");
    ip(&[
        "-n",
        underlay_ns,
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns,
    ])?;
    ip(&[
        "-n",
        underlay_ns,
        "link",
        "set",
        &port,
        "master",
        "br0",
        "up",
    ])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{underlay_ip}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])
}

/// The cells' agents as this `up` wants them.
struct Agents<'a> {
    state_dir: &'a Path,
    control_urls: &'a [String],
    dns_upstreams: &'a [SocketAddr],
    log_c2c: bool,
}

impl Agents<'_> {
    /// What the running agent `pid` of cell `name` runs with that this `up` would not.
    fn not_applied(&self, pid: i32, name: &str) -> Vec<String> {
        let mut out = vec![];
        let args = cmdline(pid);
        if args.iter().any(|a| a == "--log-c2c") != self.log_c2c {
            out.push(format!(
                "{name}'s agent runs {} --log-c2c",
                if self.log_c2c { "without" } else { "with" }
            ));
        }
        let running: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--dns-upstream")
            .map(|w| w[1].as_str())
            .collect();
        let wanted: Vec<String> = self.dns_upstreams.iter().map(|u| u.to_string()).collect();
        if running
            .iter()
            .copied()
            .ne(wanted.iter().map(|s| s.as_str()))
        {
            out.push(format!(
                "{name}'s agent runs with --dns-upstream [{}]",
                running.join(", ")
            ));
        }
        out
    }

    /// Registers cell `name` with control and starts its agent in `netns`.
    fn start(&self, name: &str, netns: &str, underlay_ip: std::net::Ipv4Addr) -> Result<()> {
        let dir = Paths::new(self.state_dir).cell(name);
        let tls = dir.join("tls");
        // The cell's identity, registered with control as any cell joins: its key made
        // here, its client certificate signed by the cell issuer (CN = cell name). A
        // re-registration revokes whatever certificate the cell had before.
        crate::cells::register(self.state_dir, name, &tls)
            .with_context(|| format!("registering {name} with control"))?;
        // Every replica: the agent goes on to the next when one does not answer.
        let urls = self.control_urls.join(",");
        let args: Vec<String> = [
            "--cell",
            name,
            "--underlay-ip",
            &underlay_ip.to_string(),
            "--control",
            &urls,
            "--ca",
            &tls.join(crate::cells::CONTROL_CA_FILE)
                .display()
                .to_string(),
            "--cert-dir",
            &tls.display().to_string(),
            "--data-dir",
            &dir.join("cni").display().to_string(),
            "--cni-config",
            &dir.join("cni.conflist").display().to_string(),
            // Its own runtime path reads 1.1.0 lists, and runs STATUS before ADD.
            "--cni-version",
            "1.1.0",
            // On the cell's underlay address: reached from the underlay (`c2c metrics
            // CELL`, the metrics relay), not from the cell's containers.
            "--metrics-listen",
            &format!("{underlay_ip}:{}", super::AGENT_METRICS_PORT),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            self.dns_upstreams
                .iter()
                .flat_map(|u| ["--dns-upstream".to_string(), u.to_string()]),
        )
        .chain(self.log_c2c.then(|| "--log-c2c".to_string()))
        .collect();
        let _ = std::fs::remove_file(dir.join("cni.conflist"));
        spawn_in(
            netns,
            &bin("c2c-agent")?,
            &args,
            &[],
            &dir.join("agent.log"),
            &dir.join("agent.pid"),
        )?;
        Ok(())
    }
}

/// Instances whose namespace is gone (the machine rebooted, or someone deleted it) cannot
/// come back by themselves: CNI DEL them so their address, registration, DNS names and
/// cert go, and say so.
fn remove_lost_instances(state_dir: &Path) -> Result<()> {
    for inst in super::instance::instances(state_dir, None)? {
        if !super::netns_exists(&inst.netns) {
            match super::instance::remove_instance(state_dir, &inst) {
                Ok(()) => eprintln!(
                    "c2c up: {}/{} did not survive (its namespace {} is gone); removed it: `c2c push {}` starts a new one",
                    inst.app, inst.index, inst.netns, inst.app
                ),
                Err(e) => eprintln!("c2c up: removing the lost instance {}/{}: {e:#}", inst.app, inst.index),
            }
        }
    }
    Ok(())
}
/// The command line of process `pid`, one argument each.
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The value that follows `flag` on process `pid`'s command line.
fn flag_value(pid: i32, flag: &str) -> Option<String> {
    cmdline(pid)
        .windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].clone())
}
