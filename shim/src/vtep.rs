//! The cell's VXLAN tunnel endpoint (`silk-vtep`) and the overlay routes to other cells.
//!
//! Each cell's VTEP has the network address of its subnet (10.255.7.0 for 10.255.7.0/24) as its
//! overlay address and a MAC derived from it, so what a cell needs to reach another is computed
//! from (underlay IP, subnet) alone: a route to the subnet via the remote VTEP address (on-link),
//! a permanent neighbour entry for that address, and an FDB entry sending its MAC to the remote
//! underlay IP. Group-Based Policy is on: a packet's mark (the source app's tag) rides in the
//! VXLAN header and is restored as the mark on the destination cell.
//!
//! [`plan`] is the pure core (current entries, desired entries -> changes); [`ensure`] and
//! [`converge`] apply it over netlink in the caller's namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkVxlan, RouteMessageBuilder};

use crate::ipam::Subnet;
use crate::netlink::{
    link_mtu, mac_for, neighbour_ip, neighbour_mac, route_destination, route_gateway, Netlink,
    NetlinkError,
};

/// First two bytes of a VTEP's MAC (then its overlay address).
pub const VTEP_MAC_PREFIX: [u8; 2] = [0xee, 0xee];
/// The VTEP's interface name (silk's).
pub const VTEP_NAME: &str = "silk-vtep";
/// Bytes VXLAN adds to each packet (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// How this cell's VTEP is set up. Defaults are Cloud Foundry's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepConfig {
    /// Link name, `silk-vtep`.
    pub name: String,
    /// VXLAN network identifier, 1.
    pub vni: u32,
    /// UDP port, 4789.
    pub port: u16,
    /// This cell's underlay address (the VTEP's local address).
    pub underlay_ip: Ipv4Addr,
    /// This cell's overlay subnet (its lease).
    pub subnet: Subnet,
}

impl VtepConfig {
    /// A VTEP with CF's defaults for a cell at `underlay_ip` holding `subnet`.
    pub fn new(underlay_ip: Ipv4Addr, subnet: Subnet) -> Self {
        Self {
            name: VTEP_NAME.into(),
            vni: 1,
            port: 4789,
            underlay_ip,
            subnet,
        }
    }

    /// The VTEP's overlay address: the subnet's network address, never given to a container.
    pub fn overlay_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

/// Another cell: where its VTEP is on the underlay and which overlay subnet it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    /// The remote cell's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The remote cell's overlay subnet.
    pub subnet: Subnet,
}

/// The forwarding entries on a VTEP: what [`converge`] reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// Subnet -> gateway (the remote VTEP address).
    pub routes: BTreeMap<Subnet, Ipv4Addr>,
    /// Overlay address -> MAC.
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// MAC -> underlay destination.
    pub fdb: BTreeMap<[u8; 6], Ipv4Addr>,
}

/// One change [`plan`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add or replace the route to a subnet via a gateway.
    SetRoute(Subnet, Ipv4Addr),
    /// Remove the route to a subnet.
    DelRoute(Subnet, Ipv4Addr),
    /// Add or replace a permanent neighbour entry.
    SetNeighbour(Ipv4Addr, [u8; 6]),
    /// Remove a neighbour entry.
    DelNeighbour(Ipv4Addr, [u8; 6]),
    /// Add or replace an FDB entry.
    SetFdb([u8; 6], Ipv4Addr),
    /// Remove an FDB entry.
    DelFdb([u8; 6], Ipv4Addr),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::netlink::fmt_mac;
        match self {
            Change::SetRoute(s, gw) => write!(f, "route {s} via {gw}"),
            Change::DelRoute(s, gw) => write!(f, "remove route {s} via {gw}"),
            Change::SetNeighbour(ip, mac) => write!(f, "neighbour {ip} lladdr {}", fmt_mac(*mac)),
            Change::DelNeighbour(ip, mac) => {
                write!(f, "remove neighbour {ip} lladdr {}", fmt_mac(*mac))
            }
            Change::SetFdb(mac, dst) => write!(f, "fdb {} dst {dst}", fmt_mac(*mac)),
            Change::DelFdb(mac, dst) => write!(f, "remove fdb {} dst {dst}", fmt_mac(*mac)),
        }
    }
}

/// The entries that reach `remotes`. A remote holding this cell's own subnet is skipped.
pub fn desired(own: Subnet, remotes: &[Remote]) -> Entries {
    let mut e = Entries::default();
    for r in remotes.iter().filter(|r| r.subnet != own) {
        let vtep_ip = r.subnet.network();
        let mac = mac_for(VTEP_MAC_PREFIX, vtep_ip);
        e.routes.insert(r.subnet, vtep_ip);
        e.neighbours.insert(vtep_ip, mac);
        e.fdb.insert(mac, r.underlay_ip);
    }
    e
}

/// What to change to get from `current` to `want`: removals first (so a subnet that moved to
/// another cell is never routed twice), then additions. Empty when they are equal.
pub fn plan(current: &Entries, want: &Entries) -> Vec<Change> {
    let mut out = Vec::new();
    for (s, gw) in &current.routes {
        if want.routes.get(s) != Some(gw) {
            out.push(Change::DelRoute(*s, *gw));
        }
    }
    for (ip, mac) in &current.neighbours {
        if want.neighbours.get(ip) != Some(mac) {
            out.push(Change::DelNeighbour(*ip, *mac));
        }
    }
    for (mac, dst) in &current.fdb {
        if want.fdb.get(mac) != Some(dst) {
            out.push(Change::DelFdb(*mac, *dst));
        }
    }
    for (mac, dst) in &want.fdb {
        if current.fdb.get(mac) != Some(dst) {
            out.push(Change::SetFdb(*mac, *dst));
        }
    }
    for (ip, mac) in &want.neighbours {
        if current.neighbours.get(ip) != Some(mac) {
            out.push(Change::SetNeighbour(*ip, *mac));
        }
    }
    for (s, gw) in &want.routes {
        if current.routes.get(s) != Some(gw) {
            out.push(Change::SetRoute(*s, *gw));
        }
    }
    out
}

/// Setting up or converging the VTEP failed.
#[derive(Debug, thiserror::Error)]
pub enum VtepError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// No link in this namespace holds the underlay address.
    #[error("no interface holds the underlay address {0}; the VTEP needs it as its local address")]
    NoUnderlay(Ipv4Addr),
    /// The VTEP is gone (deleted by hand?) between ensure and converge.
    #[error("VTEP {0} does not exist; ensure it first")]
    Missing(String),
    /// Writing a sysctl failed.
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
}

/// The VTEP as [`ensure`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    /// Its link index.
    pub index: u32,
    /// Its MTU (underlay MTU - 50); containers use the same.
    pub mtu: u32,
    /// Whether [`ensure`] had to create (or re-create) it.
    pub created: bool,
}

fn vxlan_info(link: &LinkMessage) -> Option<&[InfoVxlan]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

/// Whether an existing link is the VTEP `cfg` describes, on underlay link `dev`.
fn matches(link: &LinkMessage, cfg: &VtepConfig, dev: u32) -> bool {
    let Some(info) = vxlan_info(link) else {
        return false;
    };
    let has = |want: &InfoVxlan| info.contains(want);
    has(&InfoVxlan::Id(cfg.vni))
        && has(&InfoVxlan::Local(cfg.underlay_ip))
        && has(&InfoVxlan::Port(cfg.port))
        && has(&InfoVxlan::Link(dev))
        && has(&InfoVxlan::Learning(false))
        && has(&InfoVxlan::Gbp)
}

/// Creates the VTEP if it is missing or differs from `cfg` (re-creating it), gives it its
/// overlay address and MAC, MTU = underlay MTU - 50, sets it up, and turns on IPv4 forwarding.
pub async fn ensure(nl: &Netlink, cfg: &VtepConfig) -> Result<Vtep, VtepError> {
    crate::netns::sysctl("net/ipv4/ip_forward", "1").map_err(VtepError::Forwarding)?;
    let (dev, dev_mtu) = underlay_link(nl, cfg.underlay_ip).await?;
    let mtu = dev_mtu.saturating_sub(VXLAN_OVERHEAD);
    let mac = mac_for(VTEP_MAC_PREFIX, cfg.overlay_ip());
    let mut created = false;
    let existing = nl.link(&cfg.name).await?;
    let keep = existing.as_ref().is_some_and(|l| matches(l, cfg, dev));
    if !keep {
        if existing.is_some() {
            nl.delete_link(&cfg.name).await?;
        }
        let msg = LinkVxlan::new(&cfg.name, cfg.vni)
            .dev(dev)
            .port(cfg.port)
            .local(cfg.underlay_ip)
            .learning(false)
            .gbp()
            .mtu(mtu)
            .address(mac.to_vec())
            .build();
        nl.add_link(msg, &format!("VTEP {}", cfg.name)).await?;
        created = true;
    }
    let index = nl
        .index(&cfg.name)
        .await?
        .ok_or_else(|| VtepError::Missing(cfg.name.clone()))?;
    // A new lease means a new overlay address: drop any other address first.
    for (ip, prefix) in nl.addresses(index).await? {
        if (ip, prefix) != (cfg.overlay_ip(), 32) {
            nl.delete_address(index, IpAddr::V4(ip), &cfg.name).await?;
        }
    }
    nl.add_address(index, IpAddr::V4(cfg.overlay_ip()), 32, &cfg.name)
        .await?;
    // A kept link may carry another MAC (the lease, and so the address, changed).
    if nl
        .link(&cfg.name)
        .await?
        .as_ref()
        .and_then(crate::netlink::link_mac)
        != Some(mac)
    {
        let set = rtnetlink::LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        nl.handle()
            .link()
            .set(set)
            .execute()
            .await
            .map_err(|source| NetlinkError {
                what: format!("setting the MAC of {}", cfg.name),
                source,
            })?;
    }
    nl.set_up(index, Some(mtu), &cfg.name).await?;
    Ok(Vtep {
        index,
        mtu,
        created,
    })
}

/// The link holding `ip`, and its MTU.
async fn underlay_link(nl: &Netlink, ip: Ipv4Addr) -> Result<(u32, u32), VtepError> {
    for link in nl.links().await? {
        let index = link.header.index;
        if nl.addresses(index).await?.iter().any(|(a, _)| *a == ip) {
            return Ok((index, link_mtu(&link).unwrap_or(1500)));
        }
    }
    Err(VtepError::NoUnderlay(ip))
}

/// Reads the VTEP's current forwarding entries.
pub async fn read(nl: &Netlink, index: u32) -> Result<Entries, VtepError> {
    let mut e = Entries::default();
    for r in nl.routes_via(index).await? {
        if let (Some((dst, len)), Some(gw)) = (route_destination(&r), route_gateway(&r)) {
            if let Ok(s) = Subnet::new(dst, len) {
                e.routes.insert(s, gw);
            }
        }
    }
    for n in nl.neighbours(index, AddressFamily::Inet).await? {
        if n.header.state == NeighbourState::Permanent {
            if let (Some(ip), Some(mac)) = (neighbour_ip(&n), neighbour_mac(&n)) {
                e.neighbours.insert(ip, mac);
            }
        }
    }
    for n in nl.neighbours(index, AddressFamily::Bridge).await? {
        if let (Some(ip), Some(mac)) = (neighbour_ip(&n), neighbour_mac(&n)) {
            e.fdb.insert(mac, ip);
        }
    }
    Ok(e)
}

/// Makes the VTEP's entries reach exactly `remotes`, removing stale ones. Returns what it
/// changed: nothing when the set is unchanged.
pub async fn converge(
    nl: &Netlink,
    cfg: &VtepConfig,
    remotes: &[Remote],
) -> Result<Vec<Change>, VtepError> {
    let index = nl
        .index(&cfg.name)
        .await?
        .ok_or_else(|| VtepError::Missing(cfg.name.clone()))?;
    let changes = plan(&read(nl, index).await?, &desired(cfg.subnet, remotes));
    for c in &changes {
        apply(nl, index, &cfg.name, *c).await?;
    }
    Ok(changes)
}

async fn apply(nl: &Netlink, index: u32, name: &str, change: Change) -> Result<(), VtepError> {
    let route = |s: Subnet, gw: Ipv4Addr| {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(s.network(), s.prefix())
            .gateway(gw)
            .output_interface(index)
            .onlink()
            .build()
    };
    let what = change.to_string();
    match change {
        Change::SetRoute(s, gw) => nl.replace_route(route(s, gw), &what).await?,
        Change::DelRoute(s, gw) => nl.delete_route(route(s, gw), &what).await?,
        Change::SetNeighbour(ip, mac) => nl.replace_neighbour(index, ip, mac, name).await?,
        Change::DelNeighbour(ip, _) | Change::DelFdb(_, ip) => {
            let family = if matches!(change, Change::DelFdb(..)) {
                AddressFamily::Bridge
            } else {
                AddressFamily::Inet
            };
            let target = match change {
                Change::DelFdb(mac, _) => Some(mac),
                _ => None,
            };
            for n in nl.neighbours(index, family).await? {
                let hit = match target {
                    Some(mac) => neighbour_mac(&n) == Some(mac) && neighbour_ip(&n) == Some(ip),
                    None => neighbour_ip(&n) == Some(ip),
                };
                if hit {
                    nl.delete_neighbour(n, &what).await?;
                }
            }
        }
        Change::SetFdb(mac, dst) => nl
            .handle()
            .neighbours()
            .add_bridge(index, &mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError { what, source })?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(u: &str, s: &str) -> Remote {
        Remote {
            underlay_ip: u.parse().unwrap(),
            subnet: s.parse().unwrap(),
        }
    }

    #[test]
    fn desired_entries_come_from_underlay_and_subnet() {
        let own: Subnet = "10.255.1.0/24".parse().unwrap();
        let e = desired(
            own,
            &[
                remote("192.0.2.2", "10.255.2.0/24"),
                remote("192.0.2.1", "10.255.1.0/24"),
            ],
        );
        assert_eq!(e.routes.len(), 1, "own subnet is not a remote: {e:?}");
        let vtep: Ipv4Addr = "10.255.2.0".parse().unwrap();
        let mac = [0xee, 0xee, 10, 255, 2, 0];
        assert_eq!(e.routes[&"10.255.2.0/24".parse().unwrap()], vtep);
        assert_eq!(e.neighbours[&vtep], mac);
        assert_eq!(e.fdb[&mac], "192.0.2.2".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn plan_is_empty_when_converged_and_removes_stale_first() {
        let own: Subnet = "10.255.1.0/24".parse().unwrap();
        let a = desired(
            own,
            &[
                remote("192.0.2.2", "10.255.2.0/24"),
                remote("192.0.2.3", "10.255.3.0/24"),
            ],
        );
        assert!(plan(&a, &a).is_empty());
        // Cell 3 left, cell 4 came, cell 2 moved to another underlay address.
        let b = desired(
            own,
            &[
                remote("192.0.2.9", "10.255.2.0/24"),
                remote("192.0.2.4", "10.255.4.0/24"),
            ],
        );
        let changes = plan(&a, &b);
        let first_add = changes
            .iter()
            .position(|c| {
                matches!(
                    c,
                    Change::SetRoute(..) | Change::SetNeighbour(..) | Change::SetFdb(..)
                )
            })
            .unwrap();
        assert!(changes[..first_add].iter().all(|c| matches!(
            c,
            Change::DelRoute(..) | Change::DelNeighbour(..) | Change::DelFdb(..)
        )));
        assert!(changes.contains(&Change::DelRoute(
            "10.255.3.0/24".parse().unwrap(),
            "10.255.3.0".parse().unwrap()
        )));
        assert!(changes.contains(&Change::SetFdb(
            [0xee, 0xee, 10, 255, 2, 0],
            "192.0.2.9".parse().unwrap()
        )));
        assert!(
            !changes.iter().any(
                |c| matches!(c, Change::SetRoute(s, _) if *s == "10.255.2.0/24".parse().unwrap())
            ),
            "unchanged route kept: {changes:?}"
        );
        // Applying the plan to a model of the current state reaches the goal.
        let mut model = a.clone();
        for c in changes {
            match c {
                Change::SetRoute(s, g) => {
                    model.routes.insert(s, g);
                }
                Change::DelRoute(s, _) => {
                    model.routes.remove(&s);
                }
                Change::SetNeighbour(i, m) => {
                    model.neighbours.insert(i, m);
                }
                Change::DelNeighbour(i, _) => {
                    model.neighbours.remove(&i);
                }
                Change::SetFdb(m, d) => {
                    model.fdb.insert(m, d);
                }
                Change::DelFdb(m, _) => {
                    model.fdb.remove(&m);
                }
            }
        }
        assert_eq!(model, b);
    }
}
