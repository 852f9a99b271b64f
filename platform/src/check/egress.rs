//! The egress check: a server of the check's own on the underlay (in the platform's underlay
//! namespace, at control's address, on two ports the kernel picks), which the probe may not
//! reach until a security group of the check's, bound to the probe space alone, allows one of
//! the two; then that port answers, seeing the probe's cell's underlay address (NAT), and the
//! other port still refuses; deleting the group closes the first again.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::traffic::name;
use super::{rt, Probes, CONVERGE, PROBE_ASG, PROBE_ORG, PROBE_SPACE};
use crate::instance;

/// The description of the check's group's rule: how a group of that name is known as the
/// check's own (one a user made under the name is never changed or deleted).
const MARK: &str = "c2c check: egress to its own server, deleted when the check ends";

/// Whether `g` is the check's own group (every rule carries [`MARK`]).
pub(super) fn ours(g: &c2c_api::asg::SecurityGroup) -> bool {
    !g.rules.is_empty()
        && g.rules
            .iter()
            .all(|r| r.description.as_deref() == Some(MARK))
        && !g.running_default
        && !g.staging_default
        && g.spaces
            .iter()
            .all(|b| b.space == format!("{PROBE_ORG}/{PROBE_SPACE}"))
}

/// Deletes the check's group if one is left (and only if it is the check's own). `rt` is the
/// runtime `c` was used on: its pooled connections live there.
pub(super) fn remove_group(
    c: &c2c_api::client::Client,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    match rt.block_on(c.security_group(PROBE_ASG)) {
        Ok(g) if ours(&g) => {
            rt.block_on(c.delete_security_group(PROBE_ASG))
                .with_context(|| format!("deleting the security group {PROBE_ASG}"))?;
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        // A token that may not read groups (one scoped to the probe space) never made one.
        Err(c2c_api::client::ClientError::Status { status, .. })
            if status == c2c_api::client::StatusCode::FORBIDDEN =>
        {
            Ok(())
        }
        Err(e) => Err(e).context(format!("reading the security group {PROBE_ASG}")),
    }
}

/// The check's listeners on the underlay; they stop when dropped.
struct Outside {
    ports: [u16; 2],
    stop: Arc<AtomicBool>,
}

impl Outside {
    /// Two listeners at `ip` inside `ns`, each answering `egress peer=ADDR` and closing.
    fn start(ns: &str, ip: Ipv4Addr) -> Result<Self> {
        let listeners = crate::in_netns(ns, move || -> std::io::Result<[TcpListener; 2]> {
            Ok([TcpListener::bind((ip, 0))?, TcpListener::bind((ip, 0))?])
        })?
        .with_context(|| format!("listening at {ip} in {ns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut ports = [0; 2];
        for (i, l) in listeners.into_iter().enumerate() {
            ports[i] = l.local_addr()?.port();
            l.set_nonblocking(true)?;
            let stop = stop.clone();
            std::thread::spawn(move || serve(&l, &stop));
        }
        Ok(Self { ports, stop })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(l: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut conn, peer)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let body = format!("egress peer={}\n", peer.ip());
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Runs the check: refused before, the group's port open after (and only it), closed again.
pub(super) fn egress(state_dir: &Path, p: &Probes, stop: &AtomicBool) -> Result<String> {
    let ip = crate::CONTROL_IP;
    let outside = Outside::start(&p.local()?.underlay_ns, ip)?;
    let [allowed, other] = outside.ports.map(|port| SocketAddr::new(ip.into(), port));
    let get = |to: SocketAddr| instance::http_get(&p.a.netns, to, "/");
    if let Ok(body) = get(allowed)? {
        bail!(
            "{} reached {allowed} on the underlay before any security group of the check's ({:?}): a group bound to every space, or to {PROBE_ORG}/{PROBE_SPACE}, allows it (`c2c security-groups`), or {} does not enforce egress",
            name(&p.a),
            body.trim(),
            p.a.cell
        );
    }
    let c = crate::client(state_dir)?;
    let rt = rt()?;
    match rt.block_on(c.security_group(PROBE_ASG)) {
        Ok(g) if !ours(&g) => bail!(
            "a security group named {PROBE_ASG} exists that the check did not make; the check leaves it alone (rename it, or --skip egress)"
        ),
        Ok(_) => remove_group(&c, &rt)?,
        Err(e) if e.is_not_found() => {}
        Err(c2c_api::client::ClientError::Status { status, .. })
            if status == c2c_api::client::StatusCode::FORBIDDEN =>
        {
            bail!("this token may not manage security groups (the admin's may); with a narrower one, --skip egress")
        }
        Err(e) => return Err(e).context(format!("reading the security group {PROBE_ASG}")),
    }
    let rules = serde_json::json!([{
        "protocol": "tcp", "destination": ip.to_string(), "ports": allowed.port().to_string(),
        "description": MARK,
    }]);
    rt.block_on(c.create_security_group(PROBE_ASG, rules))
        .with_context(|| {
            format!("creating the security group {PROBE_ASG} (the admin's token may; with a narrower one, --skip egress)")
        })?;
    let bound = rt.block_on(c.bind_security_group(
        PROBE_ASG,
        &c2c_api::types::BindingRequest {
            lifecycle: c2c_api::asg::Lifecycle::Running,
            org: Some(PROBE_ORG.into()),
            space: Some(PROBE_SPACE.into()),
        },
        true,
    ));
    // While the group is bound: its port answers, the other does not.
    let opened = bound
        .context("binding it to the probe space")
        .and_then(|_| wait_for(|| get(allowed), true, stop))
        .and_then(|(body, ms)| Ok((body, ms, get(other)?)));
    let deleted = remove_group(&c, &rt);
    let (body, opened_in, at_other) = opened.with_context(|| {
        format!(
            "{allowed} from {} with {PROBE_ASG} bound to its space",
            name(&p.a)
        )
    })?;
    if let Ok(body) = at_other {
        bail!(
            "{} reached {other}, a port {PROBE_ASG} does not name ({:?}): {} opens more than the group says",
            name(&p.a),
            body.trim(),
            p.a.cell
        );
    }
    let seen = body
        .trim()
        .strip_prefix("egress peer=")
        .unwrap_or("?")
        .to_string();
    let cell_ip = p.local()?.cell(&p.a.cell)?.underlay_ip.to_string();
    if seen != cell_ip {
        bail!(
            "the server saw {seen}, not {}'s underlay address {cell_ip} (egress is not NATed)",
            p.a.cell
        );
    }
    deleted?;
    let (_, closed_in) = wait_for(|| get(allowed), false, stop)
        .with_context(|| format!("{allowed} after {PROBE_ASG} was deleted"))?;
    Ok(format!(
        "{} -> {allowed}: refused, open {opened_in} ms after {PROBE_ASG} was bound (seen from {seen}) while {other} stayed refused, refused again {closed_in} ms after it was deleted",
        name(&p.a)
    ))
}

/// Waits until `get` reaches (`open`) or is refused (`!open`): the last answer (or error) and
/// how many ms it took; an error after [`CONVERGE`].
fn wait_for(
    get: impl Fn() -> Result<std::io::Result<String>>,
    open: bool,
    stop: &AtomicBool,
) -> Result<(String, u128)> {
    let t = Instant::now();
    loop {
        let got = get()?;
        if got.is_ok() == open {
            let said = got.unwrap_or_else(|e| e.to_string());
            return Ok((said, t.elapsed().as_millis()));
        }
        if t.elapsed() > CONVERGE || stop.load(Ordering::SeqCst) {
            bail!(
                "still {} {} s after the change (is the cell's agent running? `c2c cells`)",
                if open { "refused" } else { "open" },
                CONVERGE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
