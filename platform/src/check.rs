//! `c2c check`: proves, by traffic, that a live local platform enforces what it says. It puts
//! two probe apps on the cells (`c2c-check-a` on the first cell; `c2c-check-b` with one
//! instance per cell, up to two), then checks default deny within and across cells, that a
//! policy opens exactly its port in one direction on every cell (and how long each took), the
//! cells' `apps.internal` DNS, TLS on 61443 verified against the platform CA, a route mapped to
//! the running sidecar, and that removing the policy closes the path again. Everything it made
//! goes at the end, also on failure or Ctrl-C, unless `--keep` (a later run reuses the probes).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::instance::{self, InstanceInfo, PushArgs, INTERNAL_DOMAIN};
use super::{in_netns, Paths, PlatformInfo};
use c2c_api::net::{PortRange, Protocol};
use c2c_api::Policy;

/// The probe apps.
pub const PROBE_A: &str = "c2c-check-a";
/// The probe apps' destination.
pub const PROBE_B: &str = "c2c-check-b";
/// The route mapped to the running destination while the checks run.
const EXTRA_ROUTE: &str = "c2c-check-b-mapped";

/// Every check, in the order they run (`--only` and `--skip` take these names).
pub const CHECKS: &[&str] = &[
    "probes",
    "deny-same-cell",
    "deny-cross-cell",
    "policy-enforced",
    "policy-exact-port",
    "policy-one-way",
    "host-ports",
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
    info: PlatformInfo,
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
    let info = PlatformInfo::load(&Paths::new(state_dir))?;
    let _lock = Lock::take(state_dir)?;
    let stop = interrupted();
    let mut r = Report::new(opts);
    let probes = r.step("probes", || probes(state_dir, info));
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
    let policy = |port: u16| -> Result<Policy> {
        let c = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let rt = rt()?;
        Ok(Policy {
            source: rt.block_on(c.app(PROBE_A))?.guid,
            destination: rt.block_on(c.app(PROBE_B))?.guid,
            protocol: Protocol::Tcp,
            ports: PortRange::single(port).map_err(anyhow::Error::msg)?,
        })
    };
    let set = |port: u16, add: bool| -> Result<()> {
        let c = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let pol = policy(port)?;
        let rt = rt()?;
        if add {
            rt.block_on(c.add_policies(&[pol]))?;
        } else {
            rt.block_on(c.remove_policies(&[pol]))?;
        }
        Ok(())
    };
    // A clean start: no policy between the probes (a --keep run may have left none, a crash one).
    let _ = set(8080, false);
    let _ = set(61443, false);
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
    let enforced = r.step_if(!halt(), "policy-enforced", || {
        set(8080, true)?;
        converge(a, &p.b, 8080, true, stop)
    });
    if enforced.is_some() {
        r.step_if(!halt(), "policy-exact-port", || refused(a, b0, 61443));
        r.step_if(!halt(), "policy-one-way", || refused(b0, a, 8080));
    } else {
        r.not_run("policy-exact-port", "the policy was not enforced");
        r.not_run("policy-one-way", "the policy was not enforced");
    }
    r.step_if(!halt(), "host-ports", || host_ports(p));
    r.step_if(!halt(), "dns", || dns(p));
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
        converge(a, &p.b, 8080, false, stop)
    });
}

/// Places the probes (or takes those a `--keep` run left, if they still run where they
/// should): A on the first cell, B on the first two.
fn probes(state_dir: &Path, info: PlatformInfo) -> Result<(Probes, String)> {
    let cells: Vec<String> = info.cells.iter().take(2).map(|c| c.name.clone()).collect();
    let want_b = cells.len() as u32;
    let running = |app: &str, n: usize| -> Option<Vec<InstanceInfo>> {
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
                        org: None,
                        space: None,
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
            info,
        },
        detail,
    ))
}

/// Deletes the probe apps (instances, routes, policies), if there are any.
fn remove_probes(state_dir: &Path) -> Result<()> {
    for app in [PROBE_A, PROBE_B] {
        let here = !instance::instances(state_dir, Some(app))?.is_empty();
        let placed = super::client(state_dir)
            .ok()
            .and_then(|c| rt().ok()?.block_on(c.app(app)).ok())
            .is_some();
        if here || placed {
            instance::delete_quietly(state_dir, app)?;
        }
    }
    Ok(())
}

/// `from` -> `to`:port over TCP, as a container connects: the app's answer, or the error.
fn connect(from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<std::io::Result<String>> {
    instance::http_get(&from.netns, SocketAddr::new(to.ip.into(), port), "/")
}

fn name(i: &InstanceInfo) -> String {
    format!("{}/{} on {}", i.app, i.index, i.cell)
}

/// The connection must fail: no policy allows it.
fn refused(from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<String> {
    match connect(from, to, port)? {
        Ok(body) => bail!(
            "{} reached {}:{port} with no policy allowing it (answer {:?}): {} does not enforce default deny",
            name(from),
            name(to),
            body.trim(),
            to.cell
        ),
        Err(e) => Ok(format!(
            "{} -> {}:{port}: {}",
            name(from),
            name(to),
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "refused".to_string()
            } else {
                e.to_string()
            }
        )),
    }
}

/// Waits until `a` reaches every one of `to` on `port` (`open`) or none (`!open`), each within
/// [`CONVERGE`]; says how long each cell took.
fn converge(
    a: &InstanceInfo,
    to: &[InstanceInfo],
    port: u16,
    open: bool,
    stop: &AtomicBool,
) -> Result<String> {
    let t = Instant::now();
    let mut took = vec![];
    for b in to {
        loop {
            let reached = connect(a, b, port)?.is_ok();
            if reached == open {
                took.push(format!("{} {} ms", b.cell, t.elapsed().as_millis()));
                break;
            }
            if t.elapsed() > CONVERGE || stop.load(Ordering::SeqCst) {
                bail!(
                    "{} -> {}:{port} still {} {} s after the change: {} has not applied it (is its agent running? `c2c cells`)",
                    name(a),
                    name(b),
                    if open { "refused" } else { "open" },
                    CONVERGE.as_secs(),
                    b.cell
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(format!(
        "{} -> {PROBE_B}:{port} {} on every cell: {}",
        name(a),
        if open { "open" } else { "closed" },
        took.join(", ")
    ))
}

/// The cells' DNS, as the probe's resolver sees it: the route has every instance, `0.<route>`
/// the first, an unknown name is NXDOMAIN, and nothing is cached (TTL 0).
fn dns(p: &Probes) -> Result<String> {
    let server = resolver(&p.a.netns)?;
    let route = format!("{}.{INTERNAL_DOMAIN}", p.route);
    let want: BTreeSet<Ipv4Addr> = p.b.iter().map(|i| i.ip).collect();
    let (rcode, got, ttls) = query(&p.a.netns, server, &route)?;
    if rcode != 0 || got != want {
        bail!(
            "{route} from {}: rcode {rcode}, {got:?}; want {want:?}",
            name(&p.a)
        );
    }
    if ttls.iter().any(|t| *t != 0) {
        bail!("{route}: TTL {ttls:?}, want 0 (instances come and go)");
    }
    let first = format!("0.{route}");
    let (rcode, got, _) = query(&p.a.netns, server, &first)?;
    if rcode != 0 || got != BTreeSet::from([p.b[0].ip]) {
        bail!("{first}: rcode {rcode}, {got:?}; want {}", p.b[0].ip);
    }
    let nothing = format!("nosuch-{}.{INTERNAL_DOMAIN}", p.route);
    let (rcode, got, _) = query(&p.a.netns, server, &nothing)?;
    if rcode != 3 {
        bail!("{nothing}: rcode {rcode} ({got:?}); want NXDOMAIN (3)");
    }
    Ok(format!(
        "{route} -> {want:?}, {first} -> {}, {nothing} NXDOMAIN, TTL 0 (resolver {server})",
        p.b[0].ip
    ))
}

/// The nameserver an instance's resolv.conf names.
fn resolver(netns: &str) -> Result<Ipv4Addr> {
    let conf = Path::new("/etc/netns").join(netns).join("resolv.conf");
    std::fs::read_to_string(&conf)
        .with_context(|| format!("reading {}", conf.display()))?
        .lines()
        .find_map(|l| l.strip_prefix("nameserver ")?.trim().parse().ok())
        .with_context(|| format!("no nameserver in {}", conf.display()))
}

/// One A query from inside `netns`: (rcode, addresses, TTLs).
fn query(netns: &str, server: Ipv4Addr, qname: &str) -> Result<(u8, BTreeSet<Ipv4Addr>, Vec<u32>)> {
    let mut q = vec![0x43, 0x21, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in qname.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let answer = in_netns(netns, move || -> std::io::Result<Vec<u8>> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&q, (server, 53))?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    })?
    .with_context(|| format!("asking {server} for {qname}"))?;
    parse_answer(&answer).with_context(|| format!("the answer for {qname}"))
}

/// (rcode, A addresses, their TTLs) of a DNS answer to one question.
fn parse_answer(m: &[u8]) -> Result<(u8, BTreeSet<Ipv4Addr>, Vec<u32>)> {
    anyhow::ensure!(m.len() >= 12 && m[0..2] == [0x43, 0x21], "not our answer");
    let rcode = m[3] & 0x0f;
    let an = u16::from_be_bytes([m[6], m[7]]);
    // Skips a name (labels or a compression pointer) at `i`.
    let skip = |mut i: usize| -> Result<usize> {
        loop {
            let len = *m.get(i).context("truncated name")?;
            if len & 0xc0 == 0xc0 {
                return Ok(i + 2);
            }
            if len == 0 {
                return Ok(i + 1);
            }
            i += 1 + len as usize;
        }
    };
    let mut i = skip(12)? + 4;
    let (mut ips, mut ttls) = (BTreeSet::new(), vec![]);
    for _ in 0..an {
        i = skip(i)?;
        let h = m.get(i..i + 10).context("truncated record")?;
        let (kind, ttl, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            u16::from_be_bytes([h[8], h[9]]) as usize,
        );
        let data = m.get(i + 10..i + 10 + len).context("truncated data")?;
        if kind == 1 && len == 4 {
            ips.insert(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            ttls.push(ttl);
        }
        i += 10 + len;
    }
    Ok((rcode, ips, ttls))
}

/// TLS from the probe to the destination's sidecar by its route, verified against the
/// platform CA, once the 61443 policy is enforced.
fn tls(p: &Probes, host: &str, stop: &AtomicBool) -> Result<String> {
    let name = format!("{host}.{INTERNAL_DOMAIN}");
    let to = SocketAddr::new(p.b[0].ip.into(), 61443);
    let t = Instant::now();
    loop {
        match super::demo::tls_get(&p.a.netns, to, &name, &p.ca) {
            Ok((body, sans)) if body.contains(&format!("app={PROBE_B}")) => {
                return Ok(format!(
                    "https://{name}:61443 -> {} verified against the platform CA (SANs {sans}) in {} ms",
                    p.b[0].ip,
                    t.elapsed().as_millis()
                ))
            }
            Ok((body, _)) if t.elapsed() > CONVERGE => {
                bail!("https://{name}:61443 answered {:?}, not the probe app", body.trim())
            }
            Err(e) if t.elapsed() > CONVERGE || stop.load(Ordering::SeqCst) => {
                bail!("https://{name}:61443 on {}: {e:#}", name_of(&p.b[0]))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn name_of(i: &InstanceInfo) -> String {
    name(i)
}

/// A route mapped to the running destination is served by the same sidecar process within
/// [`CONVERGE`], without a restart.
fn route_hot(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    let pidfile: PathBuf = Paths::new(state_dir)
        .instance(PROBE_B, p.b[0].index)
        .join(super::lifecycle::PROXY_PID);
    let before = std::fs::read_to_string(&pidfile).context("the sidecar's pid")?;
    let c = super::client(state_dir)?;
    let r = c2c_api::types::RouteRequest {
        app: PROBE_B.into(),
        domain: INTERNAL_DOMAIN.into(),
        hostname: EXTRA_ROUTE.into(),
    };
    rt()?.block_on(c.route(&r, false))?;
    let served = tls(p, EXTRA_ROUTE, stop);
    let _ = rt()?.block_on(c.route(&r, true));
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            // Reached by its first route, the sidecar says which names its certificate has.
            let first = format!("{}.{INTERNAL_DOMAIN}", p.route);
            let to = SocketAddr::new(p.b[0].ip.into(), 61443);
            match super::demo::tls_get(&p.a.netns, to, &first, &p.ca) {
                Ok((_, sans)) => bail!(
                    "the sidecar of {} serves a stale certificate: {} s after {EXTRA_ROUTE}.{INTERNAL_DOMAIN} was mapped its names are still {sans} (is {}'s agent writing certificates? see its log)",
                    name_of(&p.b[0]),
                    CONVERGE.as_secs(),
                    p.b[0].cell
                ),
                Err(_) => return Err(e),
            }
        }
    };
    let after = std::fs::read_to_string(&pidfile).unwrap_or_default();
    if after != before {
        bail!(
            "the sidecar was restarted to serve the new route (pid {} -> {})",
            before.trim(),
            after.trim()
        );
    }
    Ok(format!("{served}; same sidecar (pid {})", before.trim()))
}

/// Host ports: the underlay reaches each destination instance's app through its cell's
/// address; a container does not (host ports are for the underlay, no way around policy).
fn host_ports(p: &Probes) -> Result<String> {
    let mut seen = vec![];
    for b in &p.b {
        let ports = b
            .host_ports
            .with_context(|| format!("{} has no host ports", name(b)))?;
        let cell = p.info.cell(&b.cell)?;
        let to = SocketAddr::new(cell.underlay_ip.into(), ports.app);
        match instance::http_get(&p.info.underlay_ns, to, "/")? {
            Ok(body) if body.contains(&format!("app={PROBE_B} index={}", b.index)) => {}
            Ok(body) => bail!(
                "http://{to}/ from the underlay answered {:?}, not {}",
                body.trim(),
                name(b)
            ),
            Err(e) => bail!("http://{to}/ from the underlay ({} host port): {e}", b.cell),
        }
        if let Ok(body) = instance::http_get(&p.a.netns, to, "/")? {
            bail!(
                "{} reached {} through host port {to} (answer {:?}): host ports are a way around policy on {}",
                name(&p.a),
                name(b),
                body.trim(),
                b.cell
            );
        }
        seen.push(format!("{} {to}", b.cell));
    }
    Ok(format!(
        "the underlay reaches {PROBE_B} through {}; {} does not",
        seen.join(", "),
        name(&p.a)
    ))
}

/// Client identity required: once the destination requires it, a caller without a
/// certificate is refused and the probe with its own instance identity (CF_INSTANCE_CERT)
/// is served. The setting is put back afterwards.
fn identity(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    let c = super::client(state_dir)?;
    let set = |v: c2c_api::ClientIdentity| -> Result<()> {
        let s = c2c_api::types::AppSettings {
            client_identity: Some(v),
            ..Default::default()
        };
        rt()?.block_on(c.update_app(PROBE_B, &s))?;
        Ok(())
    };
    set(c2c_api::ClientIdentity::Required)?;
    let r = identity_enforced(state_dir, p, stop);
    let back = set(c2c_api::ClientIdentity::Off);
    let seen = r?;
    back.context("setting client identity back to off")?;
    Ok(seen)
}

fn identity_enforced(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    let name = format!("{}.{INTERNAL_DOMAIN}", p.route);
    let to = SocketAddr::new(p.b[0].ip.into(), 61443);
    let id = c2c_api::layout::identity_dir(
        &Paths::new(state_dir)
            .instance(PROBE_A, p.a.index)
            .join("certs"),
    );
    let chain = std::fs::read(id.join(c2c_certs::identity::CERT_FILE))
        .context("the probe's instance identity")?;
    let key = std::fs::read(id.join(c2c_certs::identity::KEY_FILE))?;
    let anonymous = super::demo::tls_client(&p.ca, None)?;
    let with_id = super::demo::tls_client(&p.ca, Some((&chain, &key)))?;
    let t = Instant::now();
    // The sidecars follow the setting: a caller without an identity is turned away.
    while super::demo::tls_get_with(&p.a.netns, to, &name, anonymous.clone())
        .is_ok_and(|(body, _)| body.contains("app="))
    {
        if t.elapsed() > CONVERGE || stop.load(Ordering::SeqCst) {
            bail!(
                "{} still serves callers without an identity {} s after it was required",
                name_of(&p.b[0]),
                CONVERGE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused_in = t.elapsed().as_millis();
    let (body, _) = super::demo::tls_get_with(&p.a.netns, to, &name, with_id)
        .with_context(|| format!("{} with its own identity", name_of(&p.a)))?;
    if !body.contains(&format!("app={PROBE_B}")) {
        bail!("with its identity, {} got {:?}", name_of(&p.a), body.trim());
    }
    Ok(format!(
        "without a certificate refused ({refused_in} ms after required); with {}'s instance identity served",
        name_of(&p.a)
    ))
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

/// The outcomes so far, printed as they come (or as JSON at the end).
struct Report<'a> {
    opts: &'a Options,
    out: Vec<Outcome>,
    started: Instant,
}

impl<'a> Report<'a> {
    fn new(opts: &'a Options) -> Self {
        if !opts.json {
            println!("c2c check: probing the platform with {PROBE_A} and {PROBE_B}");
        }
        Report {
            opts,
            out: vec![],
            started: Instant::now(),
        }
    }

    fn wanted(&self, name: &str) -> bool {
        name == "probes"
            || ((self.opts.only.is_empty() || self.opts.only.iter().any(|o| o == name))
                && !self.opts.skip.iter().any(|s| s == name))
    }

    fn record(&mut self, o: Outcome) {
        if !self.opts.json {
            let mark = if o.ok { "✓" } else { "✗" };
            match &o.reason {
                None => println!("  {mark} {} ({} ms) {}", o.name, o.ms, o.detail),
                Some(r) => println!("  {mark} {} ({} ms): {r}", o.name, o.ms),
            }
        }
        self.out.push(o);
    }

    /// Runs `f` as check `name` (unless not wanted); its value when it passed.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String)>,
    ) -> Option<T> {
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_millis() as u64;
        match r {
            Ok((v, detail)) => {
                self.record(Outcome {
                    name,
                    ok: true,
                    ms,
                    reason: None,
                    detail,
                });
                Some(v)
            }
            Err(e) => {
                self.record(Outcome {
                    name,
                    ok: false,
                    ms,
                    reason: Some(format!("{e:#}")),
                    detail: String::new(),
                });
                None
            }
        }
    }

    /// A check that says what it saw; None when it did not run or failed.
    fn step_if(
        &mut self,
        go: bool,
        name: &'static str,
        f: impl FnOnce() -> Result<String>,
    ) -> Option<()> {
        if !self.wanted(name) {
            return Some(());
        }
        if !go {
            self.not_run(name, "interrupted");
            return None;
        }
        self.step(name, || f().map(|d| ((), d)))
    }

    fn passed_as(&mut self, name: &'static str, detail: &str) {
        if self.wanted(name) {
            self.record(Outcome {
                name,
                ok: true,
                ms: 0,
                reason: None,
                detail: detail.into(),
            });
        }
    }

    fn not_run(&mut self, name: &str, why: &str) {
        let Some(name) = CHECKS.iter().find(|c| **c == name) else {
            return;
        };
        if self.wanted(name) {
            self.record(Outcome {
                name,
                ok: false,
                ms: 0,
                reason: Some(format!("not run: {why}")),
                detail: String::new(),
            });
        }
    }

    fn note(&self, text: &str) {
        if !self.opts.json {
            println!("  {text}");
        }
    }

    /// Prints the summary (or the JSON); whether every check passed.
    fn finish(self) -> bool {
        let ok = self.out.iter().all(|o| o.ok);
        let failed = self.out.iter().filter(|o| !o.ok).count();
        if self.opts.json {
            println!(
                "{}",
                serde_json::json!({"ok": ok, "checks": self.out, "ms": self.started.elapsed().as_millis() as u64})
            );
        } else {
            println!(
                "{} of {} checks passed in {} ms{}",
                self.out.len() - failed,
                self.out.len(),
                self.started.elapsed().as_millis(),
                if ok { "" } else { "; see the reasons above" }
            );
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_answer_is_read_with_its_ttls_and_rcode() {
        // Question appb.apps.internal A, two answers by compression pointer, TTL 0 and 5.
        let mut m = vec![0x43, 0x21, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        for l in ["appb", "apps", "internal"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        for (ip, ttl) in [([10, 255, 0, 1], 0u32), ([10, 255, 1, 1], 5)] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(&ip);
        }
        let (rcode, ips, ttls) = parse_answer(&m).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(
            ips,
            BTreeSet::from([Ipv4Addr::new(10, 255, 0, 1), Ipv4Addr::new(10, 255, 1, 1)])
        );
        assert_eq!(ttls, [0, 5]);
        // NXDOMAIN, no answers.
        m[3] = 0x83;
        m[7] = 0;
        assert_eq!(parse_answer(&m[..12 + 19 + 4]).unwrap().0, 3);
        // Someone else's id.
        m[0] = 0;
        assert!(parse_answer(&m).is_err());
    }
}
