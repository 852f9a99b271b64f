//! Probes the cell agent hosts for `c2c check` on a platform whose cells it cannot start
//! containers on (as Cilium's agent hosts a health endpoint per node). The check places an
//! instance of a probe app with runtime `probe:PORT`; the view of that cell names it
//! ([`Hosted`]); the agent gives it a network namespace on the overlay (CNI ADD, as a runtime
//! would), a sidecar and certificate like any instance, and runs the probe responder in it: the
//! app on 8080 (TCP and UDP), reachable from the underlay on the cell's host port PORT.
//!
//! The responder answers `GET /` with its app, index and address, and, only to a request that
//! carries its instance GUID in [`GUID_HEADER`], makes one probe from inside its namespace:
//! `GET /tcp/IP:PORT`, `GET /udp/IP:PORT` (overlay addresses only), `GET /dns/NAME`, and
//! `GET /tls/IP:PORT/NAME` (TLS verified for NAME against the platform root;
//! `/tls-id/IP:PORT/NAME` presents the probe's own instance identity). The answer is one
//! JSON [`Outcome`].

use serde::{Deserialize, Serialize};

/// The org of the only space whose apps may be probes (`c2c check`'s own).
pub const ORG: &str = "c2c-check";
/// That space: a probe opens a port on the cell's underlay, so no tenant's app may be one.
pub const SPACE: &str = "probes";

/// A probe instance's runtime: this prefix and its host port.
pub const RUNTIME_PREFIX: &str = "probe:";
/// The host ports probes may take on a cell (operators open them to whoever runs the check).
pub const PORTS: std::ops::RangeInclusive<u16> = 61100..=61107;
/// The most probes one cell hosts (one per port).
pub const PER_CELL: usize = 8;
/// The request header that must carry the probe's own instance GUID.
pub const GUID_HEADER: &str = "x-c2c-probe";

/// The runtime string of a probe on `port`.
pub fn runtime(port: u16) -> String {
    format!("{RUNTIME_PREFIX}{port}")
}

/// `None`: not a probe's runtime; `Some(Err)`: a probe's runtime with a port it may not take.
pub fn port_of(runtime: &str) -> Option<Result<u16, String>> {
    let port = runtime.strip_prefix(RUNTIME_PREFIX)?;
    Some(match port.parse::<u16>() {
        Ok(p) if PORTS.contains(&p) => Ok(p),
        _ => Err(format!(
            "a probe's runtime is {RUNTIME_PREFIX}PORT with PORT in {}-{}, not {runtime:?}",
            PORTS.start(),
            PORTS.end()
        )),
    })
}

/// A probe a cell hosts, as its view names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hosted {
    /// The instance GUID.
    pub guid: String,
    /// Its app.
    pub app_guid: crate::AppGuid,
    /// Its index.
    pub index: u32,
    /// The cell's host port that reaches its 8080.
    pub host_port: u16,
}

/// What a probe request saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Reached (an answer came), or resolved.
    pub ok: bool,
    /// The answer, or the addresses a name resolved to.
    #[serde(default)]
    pub answer: String,
    /// Why not: `refused`, `timed out`, `no such name`, or the error.
    #[serde(default)]
    pub error: String,
    /// Over TLS: the DNS names of the certificate served (its subject, the instance GUID,
    /// left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Answers each datagram on `udp` with `hello`, cut to the datagram's length (never an
/// answer larger than what asked for it: no amplification). The probe responder's and the
/// demo app's UDP side.
pub fn echo(udp: &std::net::UdpSocket, hello: &str) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let _ = udp.send_to(&hello.as_bytes()[..n.min(hello.len())], from);
    }
}

/// One datagram to `to` and its answer (what `nc -u` in a container would do), or the error:
/// no answer within half a second, or refused (an ICMP port unreachable).
pub fn datagram(to: std::net::SocketAddr) -> std::io::Result<String> {
    let s = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    s.connect(to)?;
    s.set_read_timeout(Some(std::time::Duration::from_millis(500)))?;
    s.send(&[b'?'; 128])?;
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_runtime_names_a_port_in_the_range_only() {
        assert_eq!(port_of(&runtime(61100)), Some(Ok(61100)));
        assert_eq!(port_of("podman 3f2a9c1b0d2e"), None);
        for bad in ["probe:22", "probe:4002", "probe:", "probe:61108", "probe:x"] {
            assert!(matches!(port_of(bad), Some(Err(_))), "{bad}");
        }
    }
}
