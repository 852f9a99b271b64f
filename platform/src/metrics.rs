//! `c2c metrics [control|replica-b|CELL]`: the local platform's Prometheus metrics, read from
//! inside the namespace that serves them (control's listener is on the underlay, each agent's on
//! its cell's loopback: none listens on the host), as `curl` there would print them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Result};

use super::{in_netns, Paths, PlatformInfo, AGENT_METRICS_PORT, CONTROL_IP, CONTROL_METRICS_PORT};

/// The metrics of `target` (`control`, `replica-b` or a cell's name) as Prometheus text.
pub fn show(state_dir: &Path, target: &str) -> Result<String> {
    super::preflight()?;
    let info = PlatformInfo::load(&Paths::new(state_dir))?;
    let (ns, to) = match target {
        "control" => (
            info.underlay_ns.clone(),
            SocketAddr::new(CONTROL_IP.into(), CONTROL_METRICS_PORT),
        ),
        "replica-b" => (
            info.underlay_ns.clone(),
            SocketAddr::new(super::up::CONTROL_B_IP.into(), CONTROL_METRICS_PORT),
        ),
        cell => {
            let c = info
                .cell(cell)
                .map_err(|e| anyhow::anyhow!("{e:#}; or give control or replica-b"))?;
            (
                c.netns.clone(),
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), AGENT_METRICS_PORT),
            )
        }
    };
    match in_netns(&ns, move || super::demo_app::get(to, "/metrics"))? {
        Ok(text) if text.contains("# EOF") => Ok(text),
        Ok(other) => bail!("{target} at {to} answered {:?}, not metrics", other.trim()),
        Err(e) => bail!(
            "{target}'s metrics at {to} (in netns {ns}): {e} (a platform started before metrics were served has none: c2c down, then c2c up)"
        ),
    }
}
