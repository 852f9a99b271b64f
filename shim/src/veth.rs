//! Wiring one container into its cell, silk style: a veth pair, the container's address as a
//! /32, a link-local gateway with permanent neighbour entries on both sides (no ARP, no overlay
//! address spent on gateways), and the host route to the /32.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkFlags};
use netlink_packet_route::route::RouteScope;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::cni::{host_veth_name, GATEWAY};
use crate::netlink::{link_mac, mac_for, Netlink, NetlinkError};
use crate::netns::{self, NetnsError};

/// First two bytes of a container-side MAC (then the container's IPv4 address).
pub const CONTAINER_MAC_PREFIX: [u8; 2] = [0xee, 0xee];
/// First two bytes of a host-side MAC (then the container's IPv4 address).
pub const HOST_MAC_PREFIX: [u8; 2] = [0xaa, 0xaa];

/// Wiring failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The container's namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Writing a sysctl failed.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The sysctl path under /proc/sys.
        key: String,
        /// Why.
        source: std::io::Error,
    },
    /// The interface name is already taken inside the container.
    #[error("interface {ifname} already exists in {netns}")]
    IfnameTaken {
        /// CNI_IFNAME.
        ifname: String,
        /// CNI_NETNS.
        netns: String,
    },
    /// What CHECK found wrong.
    #[error("{0}")]
    Check(String),
    /// Opening a netlink socket failed.
    #[error("opening netlink socket: {0}")]
    Socket(std::io::Error),
}

/// What to wire: the inputs, and the names and MACs derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The container's overlay address.
    pub ip: Ipv4Addr,
    /// Interface name inside the container (CNI_IFNAME).
    pub ifname: String,
    /// Host-side veth name, from the IP.
    pub host_veth: String,
    /// Host-side MAC.
    pub host_mac: [u8; 6],
    /// Container-side MAC.
    pub container_mac: [u8; 6],
    /// MTU of both ends.
    pub mtu: u32,
}

impl Plan {
    /// Derives names and MACs from the container's IP.
    pub fn new(ip: Ipv4Addr, ifname: &str, mtu: u32) -> Self {
        Self {
            ip,
            ifname: ifname.to_string(),
            host_veth: host_veth_name(ip),
            host_mac: mac_for(HOST_MAC_PREFIX, ip),
            container_mac: mac_for(CONTAINER_MAC_PREFIX, ip),
            mtu,
        }
    }
}

fn sysctl(key: String, value: &str) -> Result<(), WireError> {
    netns::sysctl(&key, value)
        .map(drop)
        .map_err(|source| WireError::Sysctl { key, source })
}

/// Wires the container at `netns_path` into the cell (the namespace the caller runs in).
/// A host veth left by an earlier, interrupted ADD for the same IP is replaced.
pub async fn add(host: &Netlink, netns_path: &Path, plan: &Plan) -> Result<(), WireError> {
    // A stale host veth of ours (same IP, so the same name) from an ADD killed half-way.
    host.delete_link(&plan.host_veth).await?;

    // Create the pair with the peer born inside the container's namespace, so no interface of
    // the container ever appears in the cell's namespace.
    let ns = netns::open(netns_path)?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(plan.ifname.clone())
        .address(plan.container_mac.to_vec())
        .mtu(plan.mtu)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(plan.host_veth.clone())
        .address(plan.host_mac.to_vec())
        .mtu(plan.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    if let Err(e) = host
        .add_link(pair, &format!("veth {}", plan.host_veth))
        .await
    {
        if e.errno() == Some(17) {
            // The host name was freed above, so the clash is inside the container.
            return Err(WireError::IfnameTaken {
                ifname: plan.ifname.clone(),
                netns: netns_path.display().to_string(),
            });
        }
        return Err(e.into());
    }

    let result = async {
        wire_host_side(host, plan).await?;
        let plan2 = plan.clone();
        netns::block_on_in(netns_path, move || async move {
            wire_container_side(&plan2).await
        })??;
        Ok(())
    }
    .await;
    if result.is_err() {
        // Leave nothing half-wired behind; deleting one end removes both.
        let _ = host.delete_link(&plan.host_veth).await;
    }
    result
}

async fn wire_host_side(host: &Netlink, plan: &Plan) -> Result<(), WireError> {
    let what = &plan.host_veth;
    let index = host
        .index(what)
        .await?
        .ok_or_else(|| WireError::Check(format!("host veth {what} vanished after creation")))?;
    sysctl(format!("net/ipv6/conf/{what}/disable_ipv6"), "1")?;
    // The cell routes between its containers and the VTEP.
    sysctl("net/ipv4/ip_forward".into(), "1")?;
    host.add_address(index, IpAddr::V4(GATEWAY), 32, what)
        .await?;
    host.set_up(index, None, what).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(plan.ip, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    host.replace_route(route, &format!("{}/32 dev {what}", plan.ip))
        .await?;
    host.replace_neighbour(index, plan.ip, plan.container_mac, what)
        .await?;
    Ok(())
}

async fn wire_container_side(plan: &Plan) -> Result<(), WireError> {
    let nl = Netlink::open().map_err(WireError::Socket)?;
    let ifname = &plan.ifname;
    let index = nl
        .index(ifname)
        .await?
        .ok_or_else(|| WireError::Check(format!("{ifname} did not appear in the container")))?;
    sysctl(format!("net/ipv6/conf/{ifname}/disable_ipv6"), "1")?;
    if let Some(lo) = nl.index("lo").await? {
        nl.set_up(lo, None, "lo").await?;
    }
    nl.add_address(index, IpAddr::V4(plan.ip), 32, ifname)
        .await?;
    nl.set_up(index, None, ifname).await?;
    let to_gateway = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(GATEWAY, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    nl.replace_route(to_gateway, &format!("{GATEWAY}/32 dev {ifname}"))
        .await?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(GATEWAY)
        .output_interface(index)
        .build();
    nl.replace_route(default, &format!("default via {GATEWAY} dev {ifname}"))
        .await?;
    nl.replace_neighbour(index, GATEWAY, plan.host_mac, ifname)
        .await?;
    Ok(())
}

/// Removes the container's wiring from the cell: deleting the host veth removes its peer, the
/// host route and the neighbour entry with it. True if there was something to remove.
pub async fn del(host: &Netlink, ip: Ipv4Addr) -> Result<bool, WireError> {
    Ok(host.delete_link(&host_veth_name(ip)).await?)
}

/// Verifies the wiring is as [`add`] left it (CNI CHECK).
pub async fn check(host: &Netlink, netns_path: &Path, plan: &Plan) -> Result<(), WireError> {
    let link = host
        .link(&plan.host_veth)
        .await?
        .ok_or_else(|| WireError::Check(format!("host veth {} is missing", plan.host_veth)))?;
    if !link.header.flags.contains(LinkFlags::Up) {
        return Err(WireError::Check(format!(
            "host veth {} is down",
            plan.host_veth
        )));
    }
    let routes = host.routes_via(link.header.index).await?;
    if !routes
        .iter()
        .any(|r| crate::netlink::route_destination(r) == Some((plan.ip, 32)))
    {
        return Err(WireError::Check(format!(
            "host route {}/32 dev {} is missing",
            plan.ip, plan.host_veth
        )));
    }
    let plan2 = plan.clone();
    netns::block_on_in(netns_path, move || async move {
        let nl = Netlink::open().map_err(WireError::Socket)?;
        let link = nl.link(&plan2.ifname).await?.ok_or_else(|| {
            WireError::Check(format!("{} is missing in the container", plan2.ifname))
        })?;
        if link_mac(&link) != Some(plan2.container_mac) {
            return Err(WireError::Check(format!(
                "{} has an unexpected MAC",
                plan2.ifname
            )));
        }
        let addrs = nl.addresses(link.header.index).await?;
        if !addrs.contains(&(plan2.ip, 32)) {
            return Err(WireError::Check(format!(
                "{} lacks address {}/32 (has {addrs:?})",
                plan2.ifname, plan2.ip
            )));
        }
        let routes = nl.routes_via(link.header.index).await?;
        if !routes.iter().any(|r| {
            crate::netlink::route_destination(r).is_none_or(|(_, len)| len == 0)
                && crate::netlink::route_gateway(r) == Some(GATEWAY)
        }) {
            return Err(WireError::Check(format!(
                "default route via {GATEWAY} is missing in the container"
            )));
        }
        Ok(())
    })?
}
