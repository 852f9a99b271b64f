//! The text of the ruleset's sets, maps and chains, section by section, for [`super::ruleset`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::egress::egress_elements;
use super::{
    allow_elements, Allow, CellRules, EgressRule, Local, LOG_RATE, LOG_RATE_ALL, VTEP,
    VXLAN_GBP_TAG, VXLAN_INNER_SRC, VXLAN_PORT,
};
use crate::ipam::Subnet;
use c2c_api::AppGuid;

/// An `elements = { ... }` line; nft rejects an empty element list, so none then.
fn elements_line(body: &mut String, items: Vec<String>) {
    if !items.is_empty() {
        let _ = writeln!(body, "    elements = {{ {} }}", items.join(",\n      "));
    }
}

/// The policy's sets: each local container's tag (`marks`), the allowed destination, protocol,
/// port and source tag (single ports and ranges apart), and the containers' own veth and
/// address (`sources`).
pub(super) fn policy_sets(
    body: &mut String,
    cell: &CellRules,
    locals: &[Local],
    tags: &BTreeMap<AppGuid, u16>,
    allows: &[Allow],
) {
    let marks: BTreeMap<Ipv4Addr, u16> = locals
        .iter()
        .filter_map(|l| Some((l.ip, *tags.get(&l.app_guid)?)))
        .collect();
    let elements = allow_elements(locals, tags, allows);
    let (single, ranges): (Vec<_>, Vec<_>) = elements.iter().partition(|(_, _, s, e, _)| s == e);
    body.push_str("  map marks {\n    type ipv4_addr : mark\n");
    elements_line(
        body,
        marks
            .iter()
            .map(|(ip, tag)| format!("{ip} : {tag:#x}"))
            .collect(),
    );
    body.push_str("  }\n  set allow {\n    type ipv4_addr . inet_proto . inet_service . mark\n");
    elements_line(
        body,
        single
            .iter()
            .map(|(ip, p, s, _, tag)| format!("{ip} . {p} . {s} . {tag:#x}"))
            .collect(),
    );
    body.push_str("  }\n  set allow_ranges {\n    type ipv4_addr . inet_proto . inet_service . mark\n    flags interval\n");
    elements_line(
        body,
        ranges
            .iter()
            .map(|(ip, p, s, e, tag)| format!("{ip} . {p} . {s}-{e} . {tag:#x}"))
            .collect(),
    );
    body.push_str("  }\n");
    let sources: BTreeSet<Ipv4Addr> = cell.containers.iter().copied().collect();
    body.push_str("  set sources {\n    type ifname . ipv4_addr\n");
    elements_line(
        body,
        sources
            .iter()
            .map(|ip| format!("\"{}\" . {ip}", crate::cni::host_veth_name(*ip)))
            .collect(),
    );
}

/// The peers' sets: their underlay addresses, the (peer, inner source, tag) each may send and
/// the lease each may send untagged from.
pub(super) fn peer_sets(body: &mut String, cell: &CellRules) {
    body.push_str("  }\n  set peers {\n    type ipv4_addr\n");
    let peers: BTreeSet<Ipv4Addr> = cell.peers.iter().copied().collect();
    elements_line(body, peers.iter().map(|ip| ip.to_string()).collect());
    body.push_str("  }\n");
    // What a peer may send, read from the VXLAN packet before it is decapsulated: the GBP
    // group (the tag) at bits 80-95 of the UDP header's start, the inner source address at
    // bits 336-367 (UDP 8 + VXLAN 8 + Ethernet 14 + 12 bytes into the inner IPv4 header).
    let sources: BTreeSet<(Ipv4Addr, Ipv4Addr, u16)> = cell
        .remote_sources
        .iter()
        .filter(|(_, _, tag)| *tag != 0)
        .copied()
        .collect();
    let _ = writeln!(
        body,
        "  set peer_sources {{\n    typeof ip saddr . {VXLAN_INNER_SRC} . {VXLAN_GBP_TAG}"
    );
    elements_line(
        body,
        sources
            .iter()
            .map(|(peer, ip, tag)| format!("{peer} . {:#010x} . {tag:#06x}", u32::from(*ip)))
            .collect(),
    );
    let _ = writeln!(
        body,
        "  }}\n  set peer_leases {{\n    typeof ip saddr . {VXLAN_INNER_SRC}\n    flags interval"
    );
    let leases: BTreeSet<(Ipv4Addr, Subnet)> = cell.peer_leases.iter().copied().collect();
    elements_line(
        body,
        leases
            .iter()
            .map(|(peer, net)| {
                format!(
                    "{peer} . {:#010x}-{:#010x}",
                    u32::from(net.network()),
                    u32::from(net.broadcast())
                )
            })
            .collect(),
    );
    body.push_str("  }\n");
}

/// The log statements the chains carry (empty where nothing is logged).
#[derive(Default)]
pub(super) struct Logs {
    asg_accept: String,
    egress_deny: String,
    c2c_accept: String,
    c2c_deny: String,
}

/// Security groups: what each container may reach outside the overlay, three interval sets
/// of concatenations (the cost of a lookup does not grow with the number of rules), again for
/// the logged rules; and the log budgets. Returns the log statements for the chains.
pub(super) fn egress_sets(body: &mut String, cell: &CellRules) -> Logs {
    let logged: Vec<EgressRule> = cell.egress.iter().filter(|r| r.log).cloned().collect();
    for (suffix, rules) in [("", &cell.egress), ("_log", &logged)] {
        let [ports, all, icmp] = egress_elements(rules);
        let _ = writeln!(body, "  set asg_ports{suffix} {{\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service\n    flags interval");
        elements_line(body, ports);
        let _ = writeln!(
            body,
            "  }}\n  set asg_all{suffix} {{\n    type ipv4_addr . ipv4_addr\n    flags interval"
        );
        elements_line(body, all);
        let _ = writeln!(body, "  }}\n  set asg_icmp{suffix} {{\n    type ipv4_addr . ipv4_addr . icmp_type . icmp_code\n    flags interval");
        elements_line(body, icmp);
        body.push_str("  }\n");
    }
    // Logging is rate-limited per source address, so a flood is logged at a few lines a
    // second (CF's rate), not turned into a full disk.
    body.push_str("  set log_budget {\n    type ipv4_addr\n    size 65535\n    flags dynamic,timeout\n    timeout 60s\n  }\n");
    let _ = writeln!(
        body,
        "  limit log_all {{\n    rate {LOG_RATE_ALL}/second burst {} packets\n  }}",
        2 * LOG_RATE_ALL
    );
    let group = crate::nflog::GROUP;
    let log = |what: &str| {
        format!("add @log_budget {{ ip saddr limit rate {LOG_RATE}/second burst {LOG_RATE} packets }} limit name \"log_all\" log prefix \"{what}\" group {group}")
    };
    let mut logs = Logs::default();
    if !logged.is_empty() {
        logs.asg_accept = format!(
            "    ct state new ip saddr . ip daddr . meta l4proto . th dport @asg_ports_log {l}\n    ct state new ip saddr . ip daddr @asg_all_log {l}\n    ct state new ip saddr . ip daddr . icmp type . icmp code @asg_icmp_log {l}\n",
            l = log("asg-accept")
        );
    }
    if cell.log_c2c {
        logs.egress_deny = format!("    {}\n", log("egress-deny"));
        logs.c2c_accept = format!(
            "    ct state new ip daddr . meta l4proto . th dport . meta mark @allow {l}\n    ct state new ip daddr . meta l4proto . th dport . meta mark @allow_ranges {l}\n",
            l = log("c2c-accept")
        );
        logs.c2c_deny = format!("    {}\n", log("c2c-deny"));
    }
    logs
}

/// Host ports: DNAT from the cell's underlay addresses to the container; only such traffic,
/// from outside the overlay (not a container's veth, not the VTEP) and to exactly the
/// mapped container port, passes default deny (`mapped`): "was DNATed" alone never stands
/// in for a tag.
pub(super) fn host_ports(body: &mut String, cell: &CellRules) {
    let subnet = cell.subnet;
    let (any_ip, at_ip): (Vec<_>, Vec<_>) = cell
        .host_ports
        .iter()
        .partition(|(_, m)| m.host_ip.is_none());
    body.push_str(
        "  map hostports {\n    type inet_proto . inet_service : ipv4_addr . inet_service\n",
    );
    elements_line(
        body,
        any_ip
            .iter()
            .map(|(ip, m)| {
                format!(
                    "{} . {} : {ip} . {}",
                    m.protocol, m.host_port, m.container_port
                )
            })
            .collect(),
    );
    body.push_str("  }\n  map hostports_at {\n    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service\n");
    elements_line(
        body,
        at_ip
            .iter()
            .filter_map(|(ip, m)| {
                Some(format!(
                    "{} . {} . {} : {ip} . {}",
                    m.host_ip?, m.protocol, m.host_port, m.container_port
                ))
            })
            .collect(),
    );
    body.push_str("  }\n  set mapped {\n    type ipv4_addr . inet_proto . inet_service\n");
    let mapped: BTreeSet<String> = cell
        .host_ports
        .iter()
        .map(|(ip, m)| format!("{ip} . {} . {}", m.protocol, m.container_port))
        .collect();
    elements_line(body, mapped.into_iter().collect());
    body.push_str("  }\n");
    for (name, hook) in [
        ("host_ports_in", "prerouting"),
        ("host_ports_out", "output"),
    ] {
        let _ = writeln!(
            body,
            "  chain {name} {{\n    type nat hook {hook} priority -100; policy accept;\n{guard}    fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports_at\n    fib daddr type local dnat ip to meta l4proto . th dport map @hostports\n  }}",
            // Only for what reaches the cell's underlay addresses from outside the overlay:
            // never a container's packet (a host port is no way around a policy, and must not
            // capture a container's packets to its gateway, the cell's DNS), never a packet
            // that came over VXLAN from another cell (its containers would reach every host
            // port at the VTEP's overlay address, under no policy), never one addressed to the
            // overlay or the link-local gateway.
            guard = if hook == "prerouting" {
                format!(
                    "    iifname \"s-*\" return\n    iifname \"{VTEP}\" return\n    ip daddr {net}/{len} return\n    ip daddr 169.254.0.0/16 return\n",
                    net = subnet.network(),
                    len = subnet.prefix()
                )
            } else {
                String::new()
            }
        );
    }
}

/// The forward path: to the cell's containers through `ingress` (the policy), from them
/// outwards through `egress` (security groups), and masquerade for what leaves the overlay.
pub(super) fn forward_chains(body: &mut String, subnet: Subnet, logs: &Logs) {
    let Logs {
        asg_accept: asg_log,
        egress_deny,
        c2c_accept,
        c2c_deny,
    } = logs;
    let _ = writeln!(
        body,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ip daddr {net}/{len} jump ingress\n    ip daddr != {net}/{len} iifname \"s-*\" oifname != \"{VTEP}\" jump egress\n    ip daddr != {net}/{len} iifname \"{VTEP}\" drop\n  }}\n  chain egress {{\n    ct state established,related accept\n    ip daddr @peers udp dport {VXLAN_PORT} reject with icmp type admin-prohibited\n{asg_log}    ip saddr . ip daddr . meta l4proto . th dport @asg_ports accept\n    ip saddr . ip daddr @asg_all accept\n    ip saddr . ip daddr . icmp type . icmp code @asg_icmp accept\n{egress_deny}    meta l4proto tcp reject with tcp reset\n    reject with icmp type admin-prohibited\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {net}/{len} ip daddr != {net}/{len} oifname != \"{VTEP}\" masquerade\n  }}",
        net = subnet.network(),
        len = subnet.prefix()
    );
    let _ = write!(
        body,
        "  chain ingress {{\n    ct state established,related accept\n    iifname != \"s-*\" iifname != \"{VTEP}\" ct status dnat ip daddr . meta l4proto . th dport @mapped accept\n{c2c_accept}    ip daddr . meta l4proto . th dport . meta mark @allow accept\n    ip daddr . meta l4proto . th dport . meta mark @allow_ranges accept\n{c2c_deny}    meta l4proto tcp reject with tcp reset\n    reject with icmp type port-unreachable\n  }}\n",
    );
}
