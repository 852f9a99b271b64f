//! c2c-api: what the control API speaks: the records it stores and sends ([`App`],
//! [`Instance`], [`Policy`], [`Lease`], [`CellView`]) and a small HTTPS client ([`client`])
//! that the `c2c` CLI (bearer token) and the cell agent (client certificate) share.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub mod client;

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// GUID.
    pub guid: String,
    /// Name, unique.
    pub name: String,
    /// Policy tag (1-65535), unique among live apps; carried in the VXLAN GBP header.
    pub tag: u16,
}

/// An app instance placed on a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance GUID.
    pub guid: String,
    /// Its app.
    pub app_guid: String,
    /// Index within the app.
    pub index: u32,
    /// Cell name.
    pub cell: String,
    /// Overlay address.
    pub ip: Ipv4Addr,
}

/// A policy: source app may reach destination app on protocol and ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Source app GUID.
    pub source: String,
    /// Destination app GUID.
    pub destination: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

/// A cell's subnet lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Cell name.
    pub cell: String,
    /// Its underlay address.
    pub underlay_ip: Ipv4Addr,
    /// Its overlay subnet, e.g. `10.255.7.0/24`.
    pub subnet: String,
    /// Unix seconds of the last acquire or renew.
    pub renewed_at: i64,
}

/// What a cell learns from the watch: everything it needs to route and enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellView {
    /// The state revision this view is of.
    pub revision: u64,
    /// Every cell's lease (for VTEP convergence).
    pub leases: Vec<Lease>,
    /// Every app with its tag.
    pub apps: Vec<App>,
    /// Every instance (for DNS and certificates).
    pub instances: Vec<Instance>,
    /// Policies whose source or destination app has an instance on this cell.
    pub policies: Vec<Policy>,
}
