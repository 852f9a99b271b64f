//! c2c-api: what the control API speaks: the records it stores and sends ([`App`],
//! [`Instance`], [`Policy`], [`Lease`], [`CellView`]) and a small HTTPS client ([`client`])
//! that the `c2c` CLI (bearer token) and the cell agent (client certificate) share.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub mod access;
pub mod asg;
pub mod client;
pub mod cni_list;
pub mod endpoints;
pub mod metrics_http;

pub use names::{AppGuid, CellName};
pub mod layout;
pub mod logging;
pub mod names;
pub mod net;
pub mod paths;
pub mod per_source;
pub mod pin;
pub mod policy;
pub mod probe;
pub mod types;

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// GUID.
    pub guid: AppGuid,
    /// Name, unique.
    pub name: String,
    /// Policy tag (1-65535), unique among live apps; carried in the VXLAN GBP header.
    pub tag: u16,
    /// The GUID of its space (see [`asg::Space`]): which security groups apply to it.
    #[serde(default)]
    pub space: String,
    /// Whether its sidecar requires callers to present their instance identity.
    #[serde(default, skip_serializing_if = "ClientIdentity::is_off")]
    pub client_identity: ClientIdentity,
    /// Whether its sidecar sends it a PROXY protocol header before each connection's bytes.
    #[serde(default, skip_serializing_if = "ProxyProtocol::is_off")]
    pub proxy_protocol: ProxyProtocol,
    /// What its port 8080 speaks, which its sidecar offers callers in TLS's ALPN.
    #[serde(default, skip_serializing_if = "AppProtocol::is_default")]
    pub app_protocol: AppProtocol,
}

/// What an app speaks on its port (`c2c update-app --app-protocol`): what its sidecar offers in
/// ALPN. The sidecar forwards the stream as it is; the app speaks what it declared (HTTP/2
/// over cleartext with prior knowledge for `http2`, as gRPC servers do on an insecure port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppProtocol {
    /// HTTP/1.1, or anything else over TCP: no ALPN offered (the behaviour before the setting).
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2 only (gRPC): `h2` offered; a client offering ALPN without `h2` is refused.
    #[serde(rename = "http2")]
    Http2,
    /// Both: `h2` then `http/1.1` offered.
    #[serde(rename = "http1,http2")]
    Both,
}

impl AppProtocol {
    /// Whether it is the default, `http1`.
    pub fn is_default(&self) -> bool {
        *self == Self::Http1
    }

    /// The ALPN protocol names the sidecar offers, in its order of preference.
    pub fn alpn(&self) -> &'static [&'static [u8]] {
        match self {
            Self::Http1 => &[],
            Self::Http2 => &[b"h2"],
            Self::Both => &[b"h2", b"http/1.1"],
        }
    }
}

impl std::str::FromStr for AppProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut h1 = false;
        let mut h2 = false;
        for p in s.split(',').map(str::trim) {
            match p {
                "http1" => h1 = true,
                "http2" => h2 = true,
                _ => {
                    return Err(format!(
                        "{s:?}: the app protocol is `http1`, `http2` or `http1,http2`"
                    ))
                }
            }
        }
        Ok(match (h1, h2) {
            (_, false) => Self::Http1,
            (false, true) => Self::Http2,
            (true, true) => Self::Both,
        })
    }
}

impl std::fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Both => "http1,http2",
        })
    }
}

/// Whether an app's sidecar requires a caller's identity (`c2c update-app --client-identity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIdentity {
    /// Any caller the packet filter lets through is served (Cloud Foundry's behaviour).
    #[default]
    Off,
    /// Only a caller presenting a valid identity of a live instance, whose app a policy allows
    /// on tcp 61443 to this app, is served.
    Required,
}

impl ClientIdentity {
    /// Whether it is the default, off.
    pub fn is_off(&self) -> bool {
        *self == Self::Off
    }
}

impl std::str::FromStr for ClientIdentity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "required" => Ok(Self::Required),
            _ => Err(format!("{s:?}: client identity is `required` or `off`")),
        }
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Required => "required",
        })
    }
}

/// Whether an app's sidecar sends a PROXY protocol header (`c2c update-app --proxy-protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The app gets the stream alone.
    #[default]
    Off,
    /// HAProxy's PROXY protocol version 2, binary, with the caller's identity in TLVs.
    V2,
}

impl ProxyProtocol {
    /// Whether it is the default, off.
    pub fn is_off(&self) -> bool {
        *self == Self::Off
    }
}

impl std::str::FromStr for ProxyProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "v2" => Ok(Self::V2),
            _ => Err(format!("{s:?}: the PROXY protocol is `v2` or `off`")),
        }
    }
}

impl std::fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::V2 => "v2",
        })
    }
}

/// An app instance placed on a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance GUID.
    pub guid: String,
    /// Its app.
    pub app_guid: AppGuid,
    /// Index within the app.
    pub index: u32,
    /// Cell name.
    pub cell: CellName,
    /// Overlay address.
    pub ip: Ipv4Addr,
}

/// A policy: source app may reach destination app on protocol and ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Source app GUID.
    pub source: AppGuid,
    /// Destination app GUID.
    pub destination: AppGuid,
    /// `tcp` or `udp`.
    pub protocol: net::Protocol,
    /// The destination ports (`start` and `end` in JSON).
    #[serde(flatten)]
    pub ports: net::PortRange,
}

/// A cell's subnet lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Cell name.
    pub cell: CellName,
    /// Its underlay address.
    pub underlay_ip: Ipv4Addr,
    /// Its overlay subnet, e.g. `10.255.7.0/24`.
    pub subnet: net::Subnet,
    /// Unix seconds of the last acquire or renew.
    pub renewed_at: i64,
}

/// An internal route `<host>.<domain>` mapped to an app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    /// Host label(s), e.g. `appb`.
    pub host: String,
    /// Internal domain, e.g. `apps.internal`.
    pub domain: String,
    /// The app it is mapped to.
    pub app_guid: AppGuid,
}

impl Route {
    /// `<host>.<domain>`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.host, self.domain)
    }
}

/// The DNS names an instance's certificate carries: each internal route of its app and
/// `<index>.<route>` for each (pure; control and the agent both compute it). The instance IP
/// goes in as an IP SAN beside these; the instance GUID is the subject CN, never a SAN.
pub fn instance_names(routes: &[Route], inst: &Instance) -> Vec<String> {
    let mut names: Vec<String> = routes
        .iter()
        .filter(|r| r.app_guid == inst.app_guid)
        .flat_map(|r| [r.fqdn(), format!("{}.{}", inst.index, r.fqdn())])
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The platform state's revision: bumped by every change, what a watch waits past.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a cell learns from the watch: everything it needs to route and enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellView {
    /// The state revision this view is of.
    pub revision: Revision,
    /// Every cell's lease (for VTEP convergence).
    #[serde(default)]
    pub leases: Vec<Lease>,
    /// Every app with its tag.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Every instance (for DNS and certificates).
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// Policies whose source or destination app has an instance on this cell.
    pub policies: Vec<Policy>,
    /// Every internal route.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The internal domains (the cell's DNS answers for these).
    #[serde(default)]
    pub domains: Vec<String>,
    /// The security groups' egress rules for running apps.
    #[serde(default)]
    pub egress: asg::Egress,
    /// The probes this cell hosts for `c2c check` (see [`probe`]); this cell's own, never
    /// left out of a delta.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<probe::Hosted>,
    /// In an answer to a watch that asked for changes only (`delta=1`): the parts left out
    /// because they are as they were at the revision the watch named (`leases`, `apps`,
    /// `instances`, `routes`, `domains`, `egress`). Empty in a whole view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
}

impl CellView {
    /// Fills the parts a delta answer left out from `prev`, the view at the revision the watch
    /// named; the result is a whole view. `None` if a part was left out that `prev` cannot
    /// supply (an unknown part name).
    pub fn merged(mut self, prev: &CellView) -> Option<CellView> {
        for part in std::mem::take(&mut self.unchanged) {
            match part.as_str() {
                "leases" => self.leases = prev.leases.clone(),
                "apps" => self.apps = prev.apps.clone(),
                "instances" => self.instances = prev.instances.clone(),
                "routes" => self.routes = prev.routes.clone(),
                "domains" => self.domains = prev.domains.clone(),
                "egress" => self.egress = prev.egress.clone(),
                _ => return None,
            }
        }
        Some(self)
    }
}

/// Decodes a path segment made by [`path_segment`] (or any percent-encoding); malformed
/// escapes are kept as they are.
pub fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded, so a name typed by a user can never change the path it is put in.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn path_segments_round_trip() {
        for name in ["appA", "bad name!", "a/b", "100%", "ü", "%zz"] {
            let enc = path_segment(name);
            assert!(!enc.contains(['/', ' ', '?', '#']), "{enc}");
            assert_eq!(decode_segment(&enc), name);
        }
        assert_eq!(path_segment("app-b_1.x~"), "app-b_1.x~");
        assert_eq!(decode_segment("%zz%4"), "%zz%4");
    }
    use super::*;

    #[test]
    fn instance_names_follow_routes_of_its_app() {
        let inst = Instance {
            guid: "g-1".into(),
            app_guid: "b".into(),
            index: 2,
            cell: "c".parse().unwrap(),
            ip: Ipv4Addr::new(10, 255, 1, 2),
        };
        let r = |h: &str, app: &str| Route {
            host: h.into(),
            domain: "apps.internal".into(),
            app_guid: app.into(),
        };
        assert!(instance_names(&[], &inst).is_empty());
        let names = instance_names(&[r("appb", "b"), r("other", "a"), r("v2", "b")], &inst);
        assert_eq!(
            names,
            [
                "2.appb.apps.internal",
                "2.v2.apps.internal",
                "appb.apps.internal",
                "v2.apps.internal"
            ]
        );
    }
}
