//! Hand-made packets for the attacks the root tests perform: IPv4 + UDP with any source, VXLAN
//! with the Group-Based Policy extension carrying any tag, sent from raw sockets.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::topo::{spawn_in, Netns};

/// The IPv4 header checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP packet (UDP checksum 0: none, as IPv4 allows).
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A VXLAN payload with the Group-Based Policy extension: flags G and I, the group (our app
/// tag), VNI 1, then an Ethernet frame to `dst_mac` carrying `inner`.
pub fn vxlan_gbp(tag: u16, dst_mac: [u8; 6], inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x88, 0x00];
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&[0, 0, 1, 0]);
    v.extend_from_slice(&dst_mac);
    v.extend_from_slice(&[0xee, 0xee, 0x0a, 0xff, 0x00, 0x00]);
    v.extend_from_slice(&[0x08, 0x00]);
    v.extend_from_slice(inner);
    v
}

/// The MAC address of `cell`'s VTEP.
pub fn vtep_mac(cell: &Netns) -> [u8; 6] {
    let out = cell.ip(&["link", "show", "silk-vtep"]);
    let hex = out
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("silk-vtep has a MAC");
    let mut mac = [0u8; 6];
    for (i, b) in hex.split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

/// Sends a hand-made IPv4 packet from a raw socket inside `ns` (IP_HDRINCL: the source
/// address is whatever the packet says).
pub fn send_raw(ns: &Netns, packet: Vec<u8>, to: Ipv4Addr) {
    spawn_in(&ns.path(), move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap();
        s.set_header_included_v4(true).unwrap();
        let _ = s.send_to(&packet, &SocketAddrV4::new(to, 0).into());
    })
    .join()
    .unwrap();
}
