//! The local platform's Prometheus metrics. Control (and replica B) serve them on the underlay,
//! each agent on its cell's underlay address: none in the host's namespace. `c2c metrics
//! [control|replica-b|CELL]` prints them, read from the underlay; and the relay `c2c up` starts
//! makes each reachable from the host on a 127.0.0.1 port (`up` prints the URLs, and they are
//! in `metrics.json`), for a Prometheus there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    bin, in_netns, stop_pidfile, wait_for, Paths, PlatformInfo, AGENT_METRICS_PORT, CONTROL_IP,
    CONTROL_METRICS_PORT,
};

/// The metrics of `target` (`control`, `replica-b` or a cell's name) as Prometheus text.
pub fn show(state_dir: &Path, target: &str) -> Result<String> {
    super::preflight()?;
    let info = PlatformInfo::load(&Paths::new(state_dir))?;
    let to = target_addr(&info, target)?;
    let ns = info.underlay_ns.clone();
    match in_netns(&ns, move || super::demo_app::get(to, "/metrics"))? {
        Ok(text) if text.contains("# EOF") => Ok(text),
        Ok(other) => bail!("{target} at {to} answered {:?}, not metrics", other.trim()),
        Err(e) => bail!(
            "{target}'s metrics at {to} (in netns {ns}): {e} (a platform started before metrics were served has none: c2c down, then c2c up)"
        ),
    }
}

/// Where `target` serves metrics on the underlay.
fn target_addr(info: &PlatformInfo, target: &str) -> Result<SocketAddr> {
    Ok(match target {
        "control" => SocketAddr::new(CONTROL_IP.into(), CONTROL_METRICS_PORT),
        "replica-b" => SocketAddr::new(super::CONTROL_B_IP.into(), CONTROL_METRICS_PORT),
        "console" => SocketAddr::new(CONTROL_IP.into(), super::CONTROL_CONSOLE_PORT),
        cell => {
            let c = info
                .cell(cell)
                .map_err(|e| anyhow::anyhow!("{e:#}; or give control or replica-b"))?;
            SocketAddr::new(c.underlay_ip.into(), AGENT_METRICS_PORT)
        }
    })
}

/// The relay's record: each target's URL on the host.
pub fn urls_file(state_dir: &Path) -> PathBuf {
    state_dir.join("metrics.json")
}

/// The host URL of each target the relay carries: control, replica B, the cells, then the
/// console (its root: `/login?token=T` logs in).
pub fn urls(state_dir: &Path) -> Result<Vec<(String, String)>> {
    let f = urls_file(state_dir);
    let text = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
    let m: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)?;
    let mut v: Vec<(String, String)> = m
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    let rank = |t: &str| match t {
        "control" => (0, 0),
        "replica-b" => (1, 0),
        "console" => (3, 0),
        cell => (
            2,
            cell.trim_start_matches("cell").parse().unwrap_or(u32::MAX),
        ),
    };
    v.sort_by_key(|(t, _)| rank(t));
    Ok(v)
}

/// The relay's pidfile.
pub fn relay_pidfile(state_dir: &Path) -> PathBuf {
    state_dir.join("metrics-relay.pid")
}

/// Starts the metrics relay (see [`relay`]) unless one runs for the same
/// targets (one for fewer, from before cells were added, is replaced); waits for its URLs.
pub(crate) fn start_relay(state_dir: &Path, underlay_ns: &str, targets: &[String]) -> Result<()> {
    let pidfile = relay_pidfile(state_dir);
    let file = urls_file(state_dir);
    if super::live_pid(&pidfile, underlay_ns).is_some() {
        let want: std::collections::BTreeSet<&String> = targets.iter().collect();
        let same = urls(state_dir).is_ok_and(|u| {
            u.iter()
                .map(|(t, _)| t)
                .collect::<std::collections::BTreeSet<_>>()
                == want
        });
        if same {
            return Ok(());
        }
        stop_pidfile(
            &pidfile,
            "metrics-relay",
            underlay_ns,
            Duration::from_secs(5),
        );
    }
    let _ = std::fs::remove_file(&file);
    let log = state_dir.join("metrics-relay.log");
    let out = std::fs::File::create(&log)?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(bin("c2c")?)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("metrics-relay")
        .args(targets)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("starting the metrics relay")?;
    std::fs::write(&pidfile, child.id().to_string())?;
    // It outlives this CLI, in the underlay namespace once it has bound its ports; stopped by
    // PID (down).
    std::mem::forget(child);
    wait_for("the metrics relay", Duration::from_secs(10), || {
        file.exists()
    })
    .with_context(|| format!("see {}", log.display()))
}

/// Connections the relay carries at once, in all (each is a scrape, over in seconds).
const RELAY_CONNECTIONS: usize = 32;

/// `c2c metrics-relay TARGET...` (started by `up`): binds a 127.0.0.1 port on the host for each
/// target, writes `metrics.json` (`{"control": "http://127.0.0.1:PORT/metrics", ...}`), then
/// moves into the underlay namespace (where every process of the platform lives, and from where
/// every target is reached) and carries each connection to its target and back. It reaches only
/// those targets, at most [`RELAY_CONNECTIONS`] connections at once, each for 30 s at most.
pub fn relay(state_dir: &Path, targets: &[String]) -> Result<()> {
    let info = PlatformInfo::load(&Paths::new(state_dir))?;
    let mut bound = vec![];
    let mut urls = serde_json::Map::new();
    for t in targets {
        let to = target_addr(&info, t)?;
        let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1")?;
        let port = l.local_addr()?.port();
        let path = if t == "console" { "/" } else { "/metrics" };
        urls.insert(t.clone(), format!("http://127.0.0.1:{port}{path}").into());
        bound.push((l, to));
    }
    // This thread, and every thread it starts, now connects from the underlay.
    let ns = std::fs::File::open(Path::new("/run/netns").join(&info.underlay_ns))
        .with_context(|| format!("namespace {}", info.underlay_ns))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", info.underlay_ns))?;
    let file = urls_file(state_dir);
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&urls)?)?;
    std::fs::rename(&tmp, &file)?;
    let open = Arc::new(AtomicUsize::new(0));
    let mut threads = vec![];
    for (l, to) in bound {
        let open = open.clone();
        threads.push(std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= RELAY_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let open = open.clone();
                std::thread::spawn(move || {
                    let _ = carry(c, to);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One connection to `to` and back, both ways, within 30 s.
fn carry(client: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let limit = Some(Duration::from_secs(30));
    let server = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    for s in [&client, &server] {
        s.set_read_timeout(limit)?;
        s.set_write_timeout(limit)?;
    }
    let (mut c_in, mut s_out) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let _ = copy(&mut s_in, &mut c_out);
    let _ = c_out.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}
