//! The checks that send traffic between the probes: refused and allowed paths, how long a
//! policy takes on each cell, host ports, TLS to the sidecar, a route mapped hot, identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{rt, Probes, CONVERGE, EXTRA_ROUTE, PROBE_A, PROBE_B};
use crate::instance::{self, InstanceInfo, INTERNAL_DOMAIN};
use crate::Paths;

/// `from` -> `to`:port over TCP, as a container connects: the app's answer, or the error.
fn connect(from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<std::io::Result<String>> {
    if from.probe_at.is_some() {
        let o = super::remote::probe(from, "tcp", &format!("{}:{port}", to.ip))?;
        return Ok(super::remote::as_io(o));
    }
    instance::http_get(&from.netns, SocketAddr::new(to.ip.into(), port), "/")
}

pub(super) fn name(i: &InstanceInfo) -> String {
    format!("{}/{} on {}", i.app, i.index, i.cell)
}

/// The connection must fail: no policy allows it.
pub(super) fn refused(from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<String> {
    match connect(from, to, port)? {
        Ok(body) => bail!(
            "{} reached {}:{port} with no policy allowing it (answer {:?}): {} does not enforce default deny",
            name(from),
            name(to),
            body.trim(),
            to.cell
        ),
        Err(e) => Ok(format!("{} -> {}:{port}: {}", name(from), name(to), why(&e))),
    }
}

/// How a probe was turned away, in a word where there is one.
fn why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".to_string(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "no answer (timed out)".to_string()
        }
        _ => e.to_string(),
    }
}

/// How a probe reaches a port: a TCP connection and a request, or a UDP datagram answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    Tcp,
    Udp,
}

impl Probe {
    fn reaches(self, from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<bool> {
        Ok(match self {
            Probe::Tcp => connect(from, to, port)?.is_ok(),
            Probe::Udp => datagram(from, to, port)?.is_ok(),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Udp => "udp",
        }
    }
}

/// `from` -> `to`:port over UDP: the app's answer, or the error (no answer, or refused).
fn datagram(from: &InstanceInfo, to: &InstanceInfo, port: u16) -> Result<std::io::Result<String>> {
    if from.probe_at.is_some() {
        let o = super::remote::probe(from, "udp", &format!("{}:{port}", to.ip))?;
        return Ok(super::remote::as_io(o));
    }
    instance::udp_get(&from.netns, SocketAddr::new(to.ip.into(), port))
}

/// No datagram from `from` to any of `to` on `port`/udp is answered: no policy allows it.
pub(super) fn udp_refused(from: &InstanceInfo, to: &[InstanceInfo], port: u16) -> Result<String> {
    let mut seen = vec![];
    for b in to {
        match datagram(from, b, port)? {
            Ok(answer) => bail!(
                "{} had an answer from {}:{port}/udp with no udp policy allowing it ({:?}): {} does not enforce default deny for udp",
                name(from),
                name(b),
                answer.trim(),
                b.cell
            ),
            Err(e) => seen.push(format!("{}: {}", name(b), why(&e))),
        }
    }
    Ok(format!(
        "{} -> :{port}/udp: {}",
        name(from),
        seen.join(", ")
    ))
}

/// Waits until `a` reaches every one of `to` on `port` (`open`) or none (`!open`), each within
/// [`CONVERGE`]; says how long each cell took.
pub(super) fn converge(
    a: &InstanceInfo,
    to: &[InstanceInfo],
    port: u16,
    how: Probe,
    open: bool,
    stop: &AtomicBool,
) -> Result<String> {
    let t = Instant::now();
    let mut took = vec![];
    for b in to {
        loop {
            let reached = how.reaches(a, b, port)?;
            if reached == open {
                took.push(format!("{} {} ms", b.cell, t.elapsed().as_millis()));
                break;
            }
            if t.elapsed() > CONVERGE || stop.load(Ordering::SeqCst) {
                bail!(
                    "{} -> {}:{port}/{} still {} {} s after the change: {} has not applied it (is its agent running? `c2c cells`)",
                    name(a),
                    name(b),
                    how.name(),
                    if open { "refused" } else { "open" },
                    CONVERGE.as_secs(),
                    b.cell
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(format!(
        "{} -> {PROBE_B}:{port}/{} {} on every cell: {}",
        name(a),
        how.name(),
        if open { "open" } else { "closed" },
        took.join(", ")
    ))
}

/// TLS from probe A to `to` for `name`, verified against the platform CA, presenting A's own
/// instance identity when `identity` (the local platform's state dir; an agent's probe finds
/// its own): the answer and the names served.
fn tls_get(
    p: &Probes,
    to: SocketAddr,
    name: &str,
    identity: Option<&Path>,
) -> Result<(String, String)> {
    if p.a.probe_at.is_some() {
        let kind = if identity.is_some() { "tls-id" } else { "tls" };
        let o = super::remote::probe(&p.a, kind, &format!("{to}/{name}"))?;
        if !o.ok {
            bail!("{}", o.error);
        }
        return Ok((o.answer, o.names.join(", ")));
    }
    let id = match identity {
        Some(state_dir) => {
            let dir = c2c_api::layout::identity_dir(
                &Paths::new(state_dir)
                    .instance(PROBE_A, p.a.index)
                    .join("certs"),
            );
            let chain = std::fs::read(dir.join(c2c_certs::identity::CERT_FILE))
                .context("the probe's instance identity")?;
            Some((
                chain,
                std::fs::read(dir.join(c2c_certs::identity::KEY_FILE))?,
            ))
        }
        None => None,
    };
    let cfg = crate::demo::tls_client(
        &p.ca,
        id.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )?;
    crate::demo::tls_get_with(&p.a.netns, to, name, cfg)
}

/// TLS from the probe to the destination's sidecar by its route, verified against the
/// platform CA, once the 61443 policy is enforced.
pub(super) fn tls(p: &Probes, host: &str, stop: &AtomicBool) -> Result<String> {
    let name = format!("{host}.{INTERNAL_DOMAIN}");
    let to = SocketAddr::new(p.b[0].ip.into(), 61443);
    let t = Instant::now();
    loop {
        match tls_get(p, to, &name, None) {
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
pub(super) fn route_hot(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    // The sidecar's process, where this host sees it (an agent's probe's is on its cell).
    let pidfile: Option<PathBuf> = p.info.is_some().then(|| {
        Paths::new(state_dir)
            .instance(PROBE_B, p.b[0].index)
            .join(crate::lifecycle::PROXY_PID)
    });
    let before = match &pidfile {
        Some(f) => Some(std::fs::read_to_string(f).context("the sidecar's pid")?),
        None => None,
    };
    let c = crate::client(state_dir)?;
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
            match tls_get(p, to, &first, None) {
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
    let (Some(before), Some(pidfile)) = (before, pidfile) else {
        return Ok(format!(
            "{served} (the sidecar's process is on its cell, not seen from here)"
        ));
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
pub(super) fn host_ports(p: &Probes) -> Result<String> {
    let mut seen = vec![];
    for b in &p.b {
        let ports = b
            .host_ports
            .with_context(|| format!("{} has no host ports", name(b)))?;
        let cell = p.local()?.cell(&b.cell)?;
        let to = SocketAddr::new(cell.underlay_ip.into(), ports.app);
        match instance::http_get(&p.local()?.underlay_ns, to, "/")? {
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
pub(super) fn identity(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    let c = crate::client(state_dir)?;
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
    let t = Instant::now();
    // The sidecars follow the setting: a caller without an identity is turned away.
    while tls_get(p, to, &name, None).is_ok_and(|(body, _)| body.contains("app=")) {
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
    let (body, _) = tls_get(p, to, &name, Some(state_dir))
        .with_context(|| format!("{} with its own identity", name_of(&p.a)))?;
    if !body.contains(&format!("app={PROBE_B}")) {
        bail!("with its identity, {} got {:?}", name_of(&p.a), body.trim());
    }
    Ok(format!(
        "without a certificate refused ({refused_in} ms after required); with {}'s instance identity served",
        name_of(&p.a)
    ))
}
