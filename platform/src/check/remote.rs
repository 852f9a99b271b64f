//! `c2c check` on a multi-host platform (control URLs and a token, no local platform): the
//! cells' agents host its probes (an instance placed with runtime `probe:PORT`, see
//! [`c2c_api::probe`]) and the check drives them over the underlay, through each probe's host
//! port: `GET /tcp/IP:PORT` asks probe A to connect to IP:PORT from inside its namespace, as
//! an app would. It needs only control and the cells' probe ports (61100-61107/tcp).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use c2c_api::client::Client;
use c2c_api::probe::{Outcome, GUID_HEADER, PORTS};

use super::{rt, Probes, PROBE_A, PROBE_B, PROBE_ORG, PROBE_SPACE};
use crate::instance::{InstanceInfo, INTERNAL_DOMAIN};

/// How long the agents may take to host a probe and answer on its host port.
const HOSTED: Duration = Duration::from_secs(30);

/// One request to a probe's responder: its answer's status and body.
fn request(at: SocketAddr, guid: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\n{GUID_HEADER}: {guid}\r\nHost: {at}\r\n\r\n"
    )?;
    let mut got = String::new();
    s.take(64 * 1024).read_to_string(&mut got)?;
    let status = got
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = got.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// What probe `from` saw of `kind` (`tcp`, `udp`, `dns`) to `arg`.
pub(super) fn probe(from: &InstanceInfo, kind: &str, arg: &str) -> Result<Outcome> {
    let at = from.probe_at.context("not a hosted probe")?;
    let (status, body) = request(at, &from.guid, &format!("/{kind}/{arg}")).with_context(|| {
        format!(
            "reaching probe {}/{} at {at} (is the cell's probe port open to this host?)",
            from.app, from.index
        )
    })?;
    if status != 200 {
        bail!(
            "probe {}/{} at {at} answered {status}: {}",
            from.app,
            from.index,
            body.trim()
        );
    }
    serde_json::from_str(&body).with_context(|| format!("probe answer {body:?}"))
}

/// A probe's outcome as the connection's result, as `connect` gives it on a local platform.
pub(super) fn as_io(o: Outcome) -> std::io::Result<String> {
    if o.ok {
        return Ok(o.answer);
    }
    Err(match o.error.as_str() {
        "refused" => std::io::ErrorKind::ConnectionRefused.into(),
        "timed out" => std::io::ErrorKind::TimedOut.into(),
        e => std::io::Error::other(e.to_string()),
    })
}

/// Places the probes on the cells the agents host them on: A on the first healthy cell, B on
/// the first two; waits until each answers on its host port.
pub(super) fn place(state_dir: &std::path::Path) -> Result<(Probes, String)> {
    // The probe space first (its client and runtime are its own).
    super::probe_space(state_dir)?;
    let c = &crate::client(state_dir)?;
    let rt = rt()?;
    let mut cells: Vec<_> = rt
        .block_on(c.cells())
        .context("listing cells")?
        .into_iter()
        .filter(|c| c.healthy && c.lease.is_some())
        .collect();
    cells.sort_by(|a, b| a.name.cmp(&b.name));
    cells.truncate(2);
    if cells.is_empty() {
        bail!("no healthy cell to host the probes (`c2c cells`)");
    }
    remove(c, &rt)?;
    for app in [PROBE_A, PROBE_B] {
        rt.block_on(c.create_app_in(app, Some((PROBE_ORG, PROBE_SPACE))))
            .with_context(|| format!("creating {app} in {PROBE_ORG}/{PROBE_SPACE}"))?;
    }
    let route = PROBE_B.to_string();
    rt.block_on(c.route(
        &c2c_api::types::RouteRequest {
            app: PROBE_B.into(),
            domain: INTERNAL_DOMAIN.into(),
            hostname: route.clone(),
        },
        false,
    ))
    .context("mapping the probe's route")?;
    let mut wanted = vec![(PROBE_A, &cells[0])];
    wanted.extend(cells.iter().map(|cell| (PROBE_B, cell)));
    let mut placed = vec![];
    for (app, cell) in wanted {
        placed.push((app, place_one(c, &rt, app, &cell.name)?));
    }
    let start = Instant::now();
    let mut infos = vec![];
    for (app, (p, port)) in placed {
        let cell = cells.iter().find(|c| c.name == p.cell).context("cell")?;
        let lease = cell.lease.as_ref().context("lease")?;
        let at = SocketAddr::new(lease.underlay_ip.into(), port);
        let ip = loop {
            let found = rt
                .block_on(c.instances())?
                .into_iter()
                .find(|i| i.guid == p.guid)
                .and_then(|i| i.ip);
            let answered = found.is_some() && request(at, &p.guid, "/").is_ok();
            if let (Some(ip), true) = (found, answered) {
                break ip;
            }
            if start.elapsed() > HOSTED {
                bail!(
                    "{app}/{} on {}: {} within {} s (is c2c-agent on {} running, and its port {port}/tcp open to this host? see its log)",
                    p.index,
                    p.cell,
                    if found.is_none() { "not confirmed by the cell" } else { "no answer on its host port" },
                    HOSTED.as_secs(),
                    p.cell
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        infos.push(InstanceInfo {
            app: app.into(),
            app_guid: p.app_guid.to_string(),
            index: p.index,
            guid: p.guid.clone(),
            cell: p.cell.to_string(),
            netns: String::new(),
            container_id: String::new(),
            ip,
            host_ports: None,
            probe_at: Some(at),
        });
    }
    let a = infos.remove(0);
    let detail = format!(
        "hosted by the agents: {PROBE_A}/0 on {} ({}), {}",
        a.cell,
        a.probe_at.map(|s| s.to_string()).unwrap_or_default(),
        infos
            .iter()
            .map(|i| format!("{PROBE_B}/{} on {}", i.index, i.cell))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((
        Probes {
            a,
            b: infos,
            ca: vec![],
            route,
            info: None,
        },
        detail,
    ))
}

/// Places one probe of `app` on `cell` at the first probe port free there.
fn place_one(
    c: &Client,
    rt: &tokio::runtime::Runtime,
    app: &str,
    cell: &c2c_api::CellName,
) -> Result<(c2c_api::types::Placement, u16)> {
    let mut last = None;
    for port in PORTS {
        let runtime = c2c_api::probe::runtime(port);
        match rt.block_on(c.place_by(app, cell, None, Some(&runtime))) {
            Ok(p) => return Ok((p, port)),
            Err(c2c_api::client::ClientError::Status { status, message })
                if status == c2c_api::client::StatusCode::CONFLICT =>
            {
                last = Some(message)
            }
            Err(e) => return Err(e).with_context(|| format!("placing {app} on {cell}")),
        }
    }
    bail!(
        "{cell} has no free probe port: {}",
        last.unwrap_or_default()
    )
}

/// Deletes the probe apps (their instances and policies go with them: the agents take the
/// probes down), if they are the probe space's.
pub(super) fn remove(c: &Client, rt: &tokio::runtime::Runtime) -> Result<()> {
    let space = rt
        .block_on(c.spaces(Some(PROBE_ORG)))
        .ok()
        .and_then(|s| s.into_iter().find(|s| s.name == PROBE_SPACE))
        .map(|s| s.guid);
    for app in [PROBE_A, PROBE_B] {
        match rt.block_on(c.app(app)) {
            Ok(a) if space.as_ref().is_none_or(|s| *s == a.space) => {
                rt.block_on(c.delete_app(app))
                    .with_context(|| format!("deleting {app}"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The DNS check through probe A's resolver (the cell DNS): the route has every instance of
/// B, `0.<route>` the first, an unknown name does not resolve. (TTLs are not seen here.)
pub(super) fn dns(p: &Probes) -> Result<String> {
    let route = format!("{}.{INTERNAL_DOMAIN}", p.route);
    let mut want: Vec<String> = p.b.iter().map(|i| i.ip.to_string()).collect();
    want.sort();
    let got = probe(&p.a, "dns", &route)?;
    if !got.ok || got.answer != want.join(",") {
        bail!("{route} from {PROBE_A}: {got:?}; want {want:?}");
    }
    let first = format!("0.{route}");
    let got = probe(&p.a, "dns", &first)?;
    if !got.ok || got.answer != p.b[0].ip.to_string() {
        bail!("{first}: {got:?}; want {}", p.b[0].ip);
    }
    let nothing = format!("nosuch-{}.{INTERNAL_DOMAIN}", p.route);
    let got = probe(&p.a, "dns", &nothing)?;
    if got.ok {
        bail!("{nothing} resolved to {}; want no such name", got.answer);
    }
    Ok(format!(
        "{route} -> {}; {first} -> {}; {nothing}: {}",
        want.join(","),
        p.b[0].ip,
        got.error
    ))
}

/// Host ports, as an agent's probes have them: the operator's machine (the underlay) reaches
/// each destination probe's app through its cell's probe port; probe A does not (a host port
/// is no way around policy for a container).
pub(super) fn host_ports(p: &Probes) -> Result<String> {
    let mut seen = vec![];
    for b in &p.b {
        let at = b.probe_at.context("not a hosted probe")?;
        let (status, body) =
            request(at, &b.guid, "/").with_context(|| format!("http://{at}/ from here"))?;
        if status != 200 || !body.contains(&format!("app={PROBE_B} index={}", b.index)) {
            bail!(
                "http://{at}/ from here answered {status} {:?}, not {PROBE_B}/{}",
                body.trim(),
                b.index
            );
        }
        let through = probe(&p.a, "tcp", &at.to_string())?;
        if through.ok {
            bail!(
                "{PROBE_A}/{} reached {PROBE_B}/{} through host port {at} (answer {:?}): host ports are a way around policy on {}",
                p.a.index,
                b.index,
                through.answer.trim(),
                b.cell
            );
        }
        seen.push(format!("{} {at}", b.cell));
    }
    Ok(format!(
        "this host reaches {PROBE_B} through {}; {PROBE_A} does not",
        seen.join(", ")
    ))
}
