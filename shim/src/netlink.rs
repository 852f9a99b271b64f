//! A thin adapter over rtnetlink: the few link, address, route and neighbour operations the
//! shim needs, with "already there" and "already gone" folded into idempotent results.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// A netlink request failed.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {source}")]
pub struct NetlinkError {
    /// What we were doing, e.g. `adding route 10.255.1.2/32 via s-0aff0102`.
    pub what: String,
    /// The kernel's or the library's error.
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The errno the kernel answered with, if any (positive, e.g. `libc::EEXIST`).
    pub fn errno(&self) -> Option<i32> {
        errno(&self.source)
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const RT_TABLE_MAIN: u8 = 254;

/// A connection to the netlink route socket of the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// Shortens `.map_err(|source| NetlinkError { .. })`.
fn ctx<T>(
    r: Result<T, rtnetlink::Error>,
    what: impl FnOnce() -> String,
) -> Result<T, NetlinkError> {
    r.map_err(|source| NetlinkError {
        what: what(),
        source,
    })
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's namespace; its driver runs on the current
    /// tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The raw handle, for requests this adapter does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let r = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match r {
            Ok(l) => Ok(l),
            Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
            Err(source) => Err(NetlinkError {
                what: format!("looking up link {name}"),
                source,
            }),
        }
    }

    /// The index of the link named `name`.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    /// All links.
    pub async fn links(&self) -> Result<Vec<LinkMessage>, NetlinkError> {
        ctx(
            self.handle.link().get().execute().try_collect().await,
            || "listing links".into(),
        )
    }

    /// Deletes the link named `name`; true if it existed.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            // Gone in the meantime (a veth's peer namespace went away, say).
            Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(false),
            Err(source) => Err(NetlinkError {
                what: format!("deleting link {name}"),
                source,
            }),
        }
    }

    /// Adds a link (the message says which kind).
    pub async fn add_link(&self, msg: LinkMessage, what: &str) -> Result<(), NetlinkError> {
        ctx(self.handle.link().add(msg).execute().await, || {
            format!("creating {what}")
        })
    }

    /// Sets a link up, optionally with an MTU.
    pub async fn set_up(
        &self,
        index: u32,
        mtu: Option<u32>,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        ctx(self.handle.link().set(b.build()).execute().await, || {
            format!("setting {what} up")
        })
    }

    /// Adds an address; an address already present is fine.
    pub async fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        what: &str,
    ) -> Result<(), NetlinkError> {
        match self.handle.address().add(index, ip, prefix).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(source) => Err(NetlinkError {
                what: format!("adding address {ip}/{prefix} to {what}"),
                source,
            }),
        }
    }

    /// Removes address `ip` from link `index` (every prefix it is held with).
    pub async fn delete_address(
        &self,
        index: u32,
        ip: IpAddr,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let msgs: Vec<_> = ctx(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(ip)
                .execute()
                .try_collect()
                .await,
            || format!("reading address {ip} of {what}"),
        )?;
        for m in msgs {
            ctx(self.handle.address().del(m).execute().await, || {
                format!("removing address {ip} from {what}")
            })?;
        }
        Ok(())
    }

    /// The IPv4 addresses (with prefix) on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        use netlink_packet_route::address::AddressAttribute;
        let msgs: Vec<_> = ctx(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await,
            || format!("listing addresses of link {index}"),
        )?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                let prefix = m.header.prefix_len;
                m.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((ip, prefix)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds or replaces an IPv4 route.
    pub async fn replace_route(&self, route: RouteMessage, what: &str) -> Result<(), NetlinkError> {
        ctx(
            self.handle.route().add(route).replace().execute().await,
            || format!("adding route {what}"),
        )
    }

    /// Deletes a route; one already gone is fine.
    pub async fn delete_route(&self, route: RouteMessage, what: &str) -> Result<(), NetlinkError> {
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ESRCH) | Some(ENOENT)) => Ok(()),
            Err(source) => Err(NetlinkError {
                what: format!("deleting route {what}"),
                source,
            }),
        }
    }

    /// IPv4 routes of the main table whose output interface is `index`.
    pub async fn routes_via(&self, index: u32) -> Result<Vec<RouteMessage>, NetlinkError> {
        let all: Vec<RouteMessage> = ctx(
            self.handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await,
            || "listing routes".into(),
        )?;
        Ok(all
            .into_iter()
            .filter(|r| r.header.table == RT_TABLE_MAIN)
            .filter(|r| {
                r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == index))
            })
            .collect())
    }

    /// Adds or replaces a permanent IPv4 neighbour entry.
    pub async fn replace_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
        what: &str,
    ) -> Result<(), NetlinkError> {
        ctx(
            self.handle
                .neighbours()
                .add(index, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .replace()
                .execute()
                .await,
            || format!("adding neighbour {ip} on {what}"),
        )
    }

    /// Neighbour (or, with `AddressFamily::Bridge`, FDB) entries on link `index`.
    pub async fn neighbours(
        &self,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, NetlinkError> {
        let all: Vec<NeighbourMessage> = ctx(
            self.handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await,
            || "listing neighbours".into(),
        )?;
        Ok(all
            .into_iter()
            .filter(|n| n.header.ifindex == index)
            .collect())
    }

    /// Deletes a neighbour or FDB entry; one already gone is fine.
    pub async fn delete_neighbour(
        &self,
        msg: NeighbourMessage,
        what: &str,
    ) -> Result<(), NetlinkError> {
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH)) => Ok(()),
            Err(source) => Err(NetlinkError {
                what: format!("deleting neighbour {what}"),
                source,
            }),
        }
    }
}

/// The MAC address of a link message, if it has one of 6 bytes.
pub fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(a) => a.as_slice().try_into().ok(),
        _ => None,
    })
}

/// The MTU of a link message.
pub fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// A route's IPv4 destination and prefix length.
pub fn route_destination(r: &RouteMessage) -> Option<(Ipv4Addr, u8)> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Some((*ip, r.header.destination_prefix_length))
        }
        _ => None,
    })
}

/// A route's IPv4 gateway.
pub fn route_gateway(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// A neighbour entry's IPv4 destination (for an FDB entry: the remote underlay address).
pub fn neighbour_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // FDB (AF_BRIDGE) entries carry the remote's address raw.
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
            <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// A neighbour entry's link-layer address.
pub fn neighbour_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => m.as_slice().try_into().ok(),
        _ => None,
    })
}

/// Formats a MAC address the way `ip link` does.
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A MAC address derived from an IPv4 address, as silk does: two fixed bytes then the address.
/// Deterministic MACs mean neighbour entries can be written without asking the other side.
pub fn mac_for(prefix: [u8; 2], ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [prefix[0], prefix[1], o[0], o[1], o[2], o[3]]
}
