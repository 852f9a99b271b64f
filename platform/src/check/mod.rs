//! `c2c check`: proves, by traffic, that a live local platform enforces what it says. It puts
//! two probe apps on the cells, in a space of their own (`c2c-check/probes`: `c2c-check-a` on
//! the first cell; `c2c-check-b` with one instance per cell, up to two), then checks default
//! deny (TCP and UDP) within and across cells, that a policy opens exactly its protocol and
//! port in one direction on every cell (and how long each took), host ports, security-group
//! egress (a group of the check's own, bound to the probe space only), the cells'
//! `apps.internal` DNS, TLS on 61443 verified against the platform CA, a route mapped to the
//! running sidecar, client identity, and that removing the policy closes the path again.
//! Everything it made goes at the end, also on failure or Ctrl-C, unless `--keep` (a later
//! run reuses the probes); the empty probe space stays, as a system space does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use c2c_api::net::{PortRange, Protocol};
use c2c_api::Policy;

use super::instance::{self, InstanceInfo, PushArgs};
use super::{Paths, PlatformInfo};

mod dns;
mod egress;
mod remote;
mod report;
mod traffic;

use dns::dns;
use egress::egress;
use report::Report;
use traffic::{converge, host_ports, identity, refused, route_hot, tls, udp_refused, Probe};

/// The probe apps.
pub const PROBE_A: &str = "c2c-check-a";
/// The probe apps' destination.
pub const PROBE_B: &str = "c2c-check-b";
/// The probes' org: theirs alone, so nothing the check binds to it reaches another app.
pub const PROBE_ORG: &str = c2c_api::probe::ORG;
/// The probes' space in [`PROBE_ORG`] (the only one whose apps an agent hosts as probes).
pub const PROBE_SPACE: &str = c2c_api::probe::SPACE;
/// The check's security group, bound to the probe space only, while `egress` runs.
pub const PROBE_ASG: &str = "c2c-check-egress";
/// The route mapped to the running destination while the checks run.
const EXTRA_ROUTE: &str = "c2c-check-b-mapped";

/// Every check, in the order they run (`--only` and `--skip` take these names).
pub const CHECKS: &[&str] = &[
    "probes",
    "deny-same-cell",
    "deny-cross-cell",
    "deny-udp",
    "policy-enforced",
    "policy-exact-port",
    "policy-one-way",
    "policy-protocol",
    "host-ports",
    "egress",
    "dns",
    "tls",
    "route-hot",
    "identity",
    "policy-removed",
];

/// How long a change may take to be enforced before a check fails.
const CONVERGE: Duration = Duration::from_secs(10);

/// What `c2c check` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print one JSON object instead of lines.
    pub json: bool,
    /// Run only these checks (and the probes they need).
    pub only: Vec<String>,
    /// Skip these checks.
    pub skip: Vec<String>,
    /// Leave the probes in place at the end.
    pub keep: bool,
}

/// One check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// Its name (one of [`CHECKS`]).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub ms: u64,
    /// Why it failed (None when it passed).
    pub reason: Option<String>,
    /// What it saw.
    pub detail: String,
}

/// The probes as placed: A's instance, B's instances by index.
struct Probes {
    a: InstanceInfo,
    b: Vec<InstanceInfo>,
    ca: Vec<u8>,
    route: String,
    /// The local platform; None on a multi-host one (the agents host the probes).
    info: Option<PlatformInfo>,
}

impl Probes {
    /// The local platform, for the checks that need one.
    fn local(&self) -> Result<&PlatformInfo> {
        self.info
            .as_ref()
            .context("this check runs on a local platform only")
    }
}

/// Runs the checks; prints each as it completes (or the JSON at the end). Ok(true) when every
/// check that ran passed.
pub fn run(state_dir: &Path, opts: &Options) -> Result<bool> {
    super::preflight()?;
    for n in opts.only.iter().chain(&opts.skip) {
        if !CHECKS.contains(&n.as_str()) {
            bail!("no check named {n:?}; the checks: {}", CHECKS.join(", "));
        }
    }
    let info = match PlatformInfo::load(&Paths::new(state_dir)) {
        Ok(info) => Some(info),
        Err(e) => match multi_host(state_dir) {
            Some(_) => None,
            None => return Err(e),
        },
    };
    let remote = info.is_none();
    // On an operator's machine the state dir may not exist: one check at a time is then the
    // operator's to keep.
    let _lock = match Lock::take(state_dir) {
        Ok(l) => Some(l),
        Err(e) if !remote || state_dir.exists() => return Err(e),
        Err(_) => None,
    };
    let stop = interrupted();
    let mut r = Report::new(opts);
    let probes = r.step("probes", || match info {
        Some(info) => probes(state_dir, info),
        None => remote::place(state_dir),
    });
    if let Some(p) = probes.as_ref() {
        checks(state_dir, p, &mut r, &stop);
    } else {
        for n in &CHECKS[1..] {
            r.not_run(n, "the probes could not be placed");
        }
    }
    if stop.load(Ordering::SeqCst) {
        r.note("interrupted: removing the probes");
    }
    let cleaned = if opts.keep && !stop.load(Ordering::SeqCst) {
        Ok(())
    } else if remote {
        super::client(state_dir).and_then(|c| remote::remove(&c, &rt()?))
    } else {
        remove_probes(state_dir)
    };
    let ok = r.finish();
    cleaned.context("removing the probes")?;
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(ok)
}

/// The checks after the probes, in order; a check whose premise failed is reported as not run.
fn checks(state_dir: &Path, p: &Probes, r: &mut Report, stop: &AtomicBool) {
    let client = super::client(state_dir);
    let policy = |protocol: Protocol, port: u16| -> Result<Policy> {
        let c = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let rt = rt()?;
        Ok(Policy {
            source: rt.block_on(c.app(PROBE_A))?.guid,
            destination: rt.block_on(c.app(PROBE_B))?.guid,
            protocol,
            ports: PortRange::single(port).map_err(anyhow::Error::msg)?,
        })
    };
    let set_as = |protocol: Protocol, port: u16, add: bool| -> Result<()> {
        let c = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pol = policy(protocol, port)?;
        let rt = rt()?;
        if add {
            rt.block_on(c.add_policies(&[pol]))?;
        } else {
            rt.block_on(c.remove_policies(&[pol]))?;
        }
        Ok(())
    };
    let set = |port: u16, add: bool| set_as(Protocol::Tcp, port, add);
    // A clean start: no policy between the probes (a --keep run may have left none, a crash one).
    let _ = set(8080, false);
    let _ = set(61443, false);
    let _ = set_as(Protocol::Udp, 8080, false);
    let halt = || stop.load(Ordering::SeqCst);
    let a = &p.a;
    let b0 = &p.b[0];
    r.step_if(!halt(), "deny-same-cell", || refused(a, b0, 8080));
    match p.b.get(1) {
        Some(b1) => {
            r.step_if(!halt(), "deny-cross-cell", || refused(a, b1, 8080));
        }
        None => r.passed_as("deny-cross-cell", "skipped: the platform has one cell"),
    }
    r.step_if(!halt(), "deny-udp", || udp_refused(a, &p.b, 8080));
    let enforced = r.step_if(!halt(), "policy-enforced", || {
        set(8080, true)?;
        converge(a, &p.b, 8080, Probe::Tcp, true, stop)
    });
    if enforced.is_some() {
        r.step_if(!halt(), "policy-exact-port", || refused(a, b0, 61443));
        r.step_if(!halt(), "policy-one-way", || refused(b0, a, 8080));
        r.step_if(!halt(), "policy-protocol", || {
            // The tcp policy leaves UDP shut; a udp policy opens it, and closes it once gone.
            let shut = udp_refused(a, &p.b, 8080)?;
            set_as(Protocol::Udp, 8080, true)?;
            let opened = converge(a, &p.b, 8080, Probe::Udp, true, stop);
            let removed = set_as(Protocol::Udp, 8080, false);
            let opened = opened?;
            removed?;
            let closed = converge(a, &p.b, 8080, Probe::Udp, false, stop)?;
            Ok(format!(
                "with the tcp policy only: {shut}; a udp policy: {opened}; removed: {closed}"
            ))
        });
    } else {
        r.not_run("policy-exact-port", "the policy was not enforced");
        r.not_run("policy-one-way", "the policy was not enforced");
        r.not_run("policy-protocol", "the policy was not enforced");
    }
    if p.info.is_none() {
        // On a multi-host platform, through the probes the agents host.
        r.step_if(!halt(), "host-ports", || remote::host_ports(p));
        r.passed_as(
            "egress",
            "skipped: needs a local platform (a server of its own outside the platform)",
        );
        r.step_if(!halt(), "dns", || remote::dns(p));
    } else {
        r.step_if(!halt(), "host-ports", || host_ports(p));
        r.step_if(!halt(), "egress", || egress(state_dir, p, stop));
        r.step_if(!halt(), "dns", || dns(p));
    }
    let tls = r.step_if(!halt(), "tls", || {
        set(61443, true)?;
        tls(p, &p.route, stop)
    });
    if tls.is_some() {
        r.step_if(!halt(), "route-hot", || route_hot(state_dir, p, stop));
        r.step_if(!halt(), "identity", || identity(state_dir, p, stop));
    } else {
        r.not_run("route-hot", "TLS to the sidecar failed");
        r.not_run("identity", "TLS to the sidecar failed");
    }
    r.step_if(!halt(), "policy-removed", || {
        set(8080, false)?;
        set(61443, false)?;
        converge(a, &p.b, 8080, Probe::Tcp, false, stop)
    });
}

/// Places the probes (or takes those a `--keep` run left, if they still run where they
/// should): A on the first cell, B on the first two.
fn probes(state_dir: &Path, info: PlatformInfo) -> Result<(Probes, String)> {
    let cells: Vec<String> = info.cells.iter().take(2).map(|c| c.name.clone()).collect();
    let want_b = cells.len() as u32;
    let space = probe_space(state_dir)?;
    let c = super::client(state_dir)?;
    // App names are the platform's: one a user took in another space is theirs. The check
    // neither deletes it nor places probes of it.
    if let Some(guid) = &space {
        for app in [PROBE_A, PROBE_B] {
            if rt()?.block_on(c.app(app)).is_ok_and(|a| a.space != *guid) {
                bail!(
                    "an app named {app} exists outside {PROBE_ORG}/{PROBE_SPACE}; the check leaves it alone (rename or delete it to run the check)"
                );
            }
        }
    }
    let running = |app: &str, n: usize| -> Option<Vec<InstanceInfo>> {
        // Only probes in the probe space are reused (one an older check left in another space
        // would put the check's security group out of reach of them).
        let placed = rt().ok()?.block_on(c.app(app)).ok()?;
        if space.as_ref().is_some_and(|s| placed.space != *s) {
            return None;
        }
        let found = instance::instances(state_dir, Some(app)).ok()?;
        let states = super::lifecycle::local_states(state_dir);
        (found.len() == n
            && found
                .iter()
                .all(|i| states.get(&i.guid) == Some(&super::lifecycle::State::Running)))
        .then_some(found)
    };
    let reused = running(PROBE_A, 1).zip(running(PROBE_B, want_b as usize));
    let (a, b, how) = match reused {
        Some((a, b)) => (a, b, "reused the probes a --keep run left"),
        None => {
            remove_probes(state_dir)?;
            let push = |app: &str, n: u32, cell: Option<&str>| -> Result<Vec<InstanceInfo>> {
                instance::push(
                    state_dir,
                    &PushArgs {
                        app: app.into(),
                        instances: Some(n),
                        no_route: false,
                        cell: cell.map(str::to_string),
                        command: None,
                        org: Some(PROBE_ORG.into()),
                        space: Some(PROBE_SPACE.into()),
                        host_ports: instance::DEFAULT_HOST_PORTS,
                        quiet: true,
                    },
                )
                .with_context(|| format!("pushing {app}"))
            };
            let a = push(PROBE_A, 1, Some(&cells[0]))?;
            let b = push(PROBE_B, want_b, None)?;
            (a, b, "placed")
        }
    };
    let mut b = b;
    b.sort_by_key(|i| i.index);
    let ca = std::fs::read(
        c2c_api::layout::Layout::new(state_dir)
            .ca_dir()
            .join("ca.pem"),
    )
    .context("reading the platform CA")?;
    let detail = format!(
        "{how}: {PROBE_A}/0 on {}, {}",
        a[0].cell,
        b.iter()
            .map(|i| format!("{PROBE_B}/{} on {}", i.index, i.cell))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let route = instance::default_hostname(PROBE_B).context("the probe's route")?;
    Ok((
        Probes {
            a: a.into_iter().next().context("no probe A")?,
            b,
            ca,
            route,
            info: Some(info),
        },
        detail,
    ))
}

/// The control a multi-host setup names (the environment, or a control host's state dir),
/// when there is no local platform here.
fn multi_host(state_dir: &Path) -> Option<String> {
    std::env::var(c2c_api::client::CONTROL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string(c2c_api::layout::Layout::new(state_dir).url())
                .ok()
                .map(|u| u.trim().to_string())
        })
        .map(|u| format!("control at {u}"))
}

/// The probe space's GUID if it exists and this token may list it (nothing is made).
fn probe_space_found(state_dir: &Path) -> Option<String> {
    let c = super::client(state_dir).ok()?;
    let spaces = rt().ok()?.block_on(c.spaces(Some(PROBE_ORG))).ok()?;
    spaces
        .into_iter()
        .find(|s| s.name == PROBE_SPACE)
        .map(|s| s.guid)
}

/// The probe space's GUID, made (with its org) if missing; None for a token that may not list
/// spaces (one scoped to the probe space, which an admin made: every app it sees is there).
fn probe_space(state_dir: &Path) -> Result<Option<String>> {
    let c = super::client(state_dir)?;
    let rt = rt()?;
    match rt.block_on(c.spaces(Some(PROBE_ORG))) {
        Ok(spaces) => {
            if let Some(s) = spaces.into_iter().find(|s| s.name == PROBE_SPACE) {
                return Ok(Some(s.guid));
            }
        }
        Err(c2c_api::client::ClientError::Status { status, .. })
            if status == c2c_api::client::StatusCode::FORBIDDEN =>
        {
            return Ok(None)
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e).context("listing the probe org's spaces"),
    }
    let orgs = rt.block_on(c.orgs()).context("listing orgs")?;
    if !orgs.iter().any(|o| o.name == PROBE_ORG) {
        rt.block_on(c.create_org(PROBE_ORG))
            .with_context(|| format!("creating the probe org {PROBE_ORG}"))?;
    }
    let spaces = rt.block_on(c.spaces(Some(PROBE_ORG)))?;
    let space = match spaces.into_iter().find(|s| s.name == PROBE_SPACE) {
        Some(s) => s,
        None => rt
            .block_on(c.create_space(PROBE_ORG, PROBE_SPACE))
            .with_context(|| format!("creating the probe space {PROBE_ORG}/{PROBE_SPACE}"))?,
    };
    Ok(Some(space.guid))
}

/// Deletes the probe apps (instances, routes, policies) and the check's security group, if
/// there are any.
fn remove_probes(state_dir: &Path) -> Result<()> {
    if let Ok(c) = super::client(state_dir) {
        egress::remove_group(&c, &rt()?)?;
    }
    let space = probe_space_found(state_dir);
    for app in [PROBE_A, PROBE_B] {
        let here = !instance::instances(state_dir, Some(app))?.is_empty();
        let placed = super::client(state_dir)
            .ok()
            .and_then(|c| rt().ok()?.block_on(c.app(app)).ok());
        // Another space's app of that name is not the check's to delete.
        if placed
            .as_ref()
            .zip(space.as_ref())
            .is_some_and(|(a, guid)| a.space != *guid)
        {
            continue;
        }
        if here || placed.is_some() {
            instance::delete_quietly(state_dir, app)?;
        }
    }
    Ok(())
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Set on Ctrl-C or SIGTERM: the checks stop and the probes are removed.
fn interrupted() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = rt() else { return };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            f.store(true, Ordering::SeqCst);
        });
    });
    flag
}

/// One `c2c check` at a time per platform (`STATE_DIR/check.lock`, holding the PID).
struct Lock(PathBuf);

impl Lock {
    fn take(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join("check.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id())?;
                    return Ok(Lock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    if Path::new("/proc").join(pid.trim()).exists() && !pid.trim().is_empty() {
                        bail!(
                            "another c2c check runs on this platform (pid {})",
                            pid.trim()
                        );
                    }
                    // Left by a check that died: taken over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("could not take {}", path.display())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
