//! Policy enforcement on a cell, with the semantics of Cloud Foundry's VXLAN policy agent, as one
//! nftables table (`ip c2c`) replaced in a single transaction (`nft -f`): at no instant is the
//! cell without its rules or with half of them.
//!
//! - `prerouting`: a packet that entered by a container's veth must carry that veth's assigned
//!   address as its source (the `sources` set of `veth . address`), else it is dropped: a
//!   container cannot pass as another. Its mark is cleared, then set to its app's tag (a map
//!   lookup by source address); the VTEP carries the mark to other cells in the VXLAN GBP
//!   header. A packet that arrived on the VTEP keeps the mark it came with: it is never
//!   re-marked by its (remote) source address.
//! - `forward` -> `ingress`, for packets to the cell's subnet: established connections pass; a
//!   packet passes if `(destination, protocol, port, mark)` is in the `allow` set, a hash set
//!   with port intervals, so the cost of a new connection does not grow with the number of
//!   policies; everything else is rejected (a TCP reset: the client sees "connection refused").
//!   A container's packets for anything outside the overlay are rejected (no egress without a
//!   security group), and a packet from the VTEP must be for this cell's subnet.
//! - `input`: VXLAN (UDP 4789) is accepted only from the other cells' underlay addresses (the
//!   `peers` set, from the leases), so no container or underlay host can inject a packet with a
//!   forged GBP tag; containers reach the cell itself only for DNS (and ping) at the gateway.
//!
//! [`ruleset`] is pure; [`apply`] runs `nft`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ipam::Subnet;
use c2c_api::net::{PortRange, Protocol};
use c2c_api::AppGuid;

mod delta;
mod egress;
mod sets;

pub use delta::delta;

use sets::{egress_sets, forward_chains, host_ports, peer_sets, policy_sets};

/// Log lines a second each source may cause (CF logs a few a second).
pub const LOG_RATE: u32 = 5;

/// Log lines a second the whole cell may cause (burst twice that), in front of the per-source
/// rate: an underlay host sending from many spoofed sources got a line per source.
pub const LOG_RATE_ALL: u32 = 100;

/// The nftables table that holds every rule of ours.
pub const TABLE: &str = "c2c";

/// The VTEP's name: packets that entered by it are never re-marked.
const VTEP: &str = crate::vtep::VTEP_NAME;

/// What the cell's rules are built from besides apps and policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRules {
    /// The cell's overlay subnet.
    pub subnet: Subnet,
    /// The address of every container wired on this cell (app instance or not): each may send
    /// only from its own address, by its own veth.
    pub containers: Vec<Ipv4Addr>,
    /// The other cells' underlay addresses: the only sources of VXLAN accepted.
    pub peers: Vec<Ipv4Addr>,
    /// Each other cell's underlay address and lease: an untagged VXLAN packet from it must come
    /// from an address of its lease.
    pub peer_leases: Vec<(Ipv4Addr, Subnet)>,
    /// What each other cell may send with a tag: (its underlay address, an instance it runs,
    /// that instance's app tag). VXLAN GBP is not authenticated, so a cell is trusted only to
    /// speak for the instances control confirmed on it.
    pub remote_sources: Vec<(Ipv4Addr, Ipv4Addr, u16)>,
    /// What each local container may reach outside the overlay (its app's security groups);
    /// everything else leaving the overlay is rejected.
    pub egress: Vec<EgressRule>,
    /// Host ports forwarded to containers (their address, the mapping).
    pub host_ports: Vec<(Ipv4Addr, crate::store::PortMapping)>,
    /// Log c2c accepts (the first packet of each flow), c2c denies and egress denies to NFLOG
    /// group [`crate::nflog::GROUP`] (CF's `iptables_c2c_logging_enabled`).
    pub log_c2c: bool,
}

/// One security-group rule as it applies to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// The container's address.
    pub source: Ipv4Addr,
    /// Destination ranges (first, last).
    pub destinations: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// What may go to them.
    pub allowed: Vec<c2c_api::asg::Allowed>,
    /// The security group it comes from.
    pub group: String,
    /// Log what it accepts (the rule's `"log": true`).
    pub log: bool,
}

/// VXLAN's UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN packet's GBP group (our tag), as nftables reads it from the transport header
/// before decapsulation.
const VXLAN_GBP_TAG: &str = "@th,80,16";
/// The inner IPv4 source address of a VXLAN packet (outer UDP, VXLAN, inner Ethernet).
const VXLAN_INNER_SRC: &str = "@th,336,32";

/// A container of an app on this cell, confirmed by control.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Local {
    /// Its overlay address.
    pub ip: Ipv4Addr,
    /// Its app.
    pub app_guid: AppGuid,
}

/// An allow rule: `source` app may reach `destination` app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    /// Source app GUID.
    pub source: AppGuid,
    /// Destination app GUID.
    pub destination: AppGuid,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// The destination ports.
    pub ports: PortRange,
}

/// The allow-set elements: (destination IP, protocol, first port, last port, source tag), for
/// the local containers that policies name as destinations (pure, sorted, deduplicated).
/// Apps without a tag are skipped: their packets carry no mark, so nothing could match.
pub fn allow_elements(
    locals: &[Local],
    tags: &BTreeMap<AppGuid, u16>,
    allows: &[Allow],
) -> BTreeSet<(Ipv4Addr, &'static str, u16, u16, u16)> {
    let mut by_app: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for l in locals {
        by_app.entry(l.app_guid.as_str()).or_default().push(l.ip);
    }
    let mut out = BTreeSet::new();
    for a in allows {
        let proto = a.protocol.as_str();
        let (Some(ips), Some(tag)) = (by_app.get(a.destination.as_str()), tags.get(&a.source))
        else {
            continue;
        };
        for ip in ips {
            out.insert((*ip, proto, a.ports.start(), a.ports.end(), *tag));
        }
    }
    out
}

/// The `nft -f` script for the cell: creates the table if missing, deletes it and defines it
/// anew, all in one transaction. Deterministic: the same inputs give the same text. Single ports
/// go to a hash set and ranges to an interval set: the kernel loads 10,000 hash elements in
/// about a tenth of a second, interval elements some 25 times slower. A `gen` set holds a hash
/// of the script, so [`in_place`] can tell cheaply whether the kernel still has it.
pub fn ruleset(
    cell: &CellRules,
    locals: &[Local],
    tags: &BTreeMap<AppGuid, u16>,
    allows: &[Allow],
) -> String {
    let mut body = String::new();
    policy_sets(&mut body, cell, locals, tags, allows);
    peer_sets(&mut body, cell);
    // Container veths are `s-<hex ip>` (c2c-cni names them); the VTEP is silk-vtep.
    let _ = writeln!(
        body,
        "  chain prerouting {{\n    type filter hook prerouting priority mangle; policy accept;\n    iifname \"s-*\" jump from_container\n  }}\n  chain from_container {{\n    iifname . ip saddr != @sources drop\n    meta mark set 0\n    meta mark set ip saddr map @marks\n  }}"
    );
    let gw = crate::cni::GATEWAY;
    let _ = writeln!(
        body,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    udp dport {VXLAN_PORT} ip saddr != @peers drop\n    udp dport {VXLAN_PORT} {VXLAN_GBP_TAG} 0 ip saddr . {VXLAN_INNER_SRC} != @peer_leases drop\n    udp dport {VXLAN_PORT} {VXLAN_GBP_TAG} != 0 ip saddr . {VXLAN_INNER_SRC} . {VXLAN_GBP_TAG} != @peer_sources drop\n    iifname \"s-*\" jump container_to_cell\n    iifname \"{VTEP}\" ct state established,related accept\n    iifname \"{VTEP}\" drop\n  }}\n  chain container_to_cell {{\n    ct state established,related accept\n    ip daddr {gw} udp dport 53 accept\n    ip daddr {gw} tcp dport 53 accept\n    ip daddr {gw} icmp type echo-request accept\n    meta l4proto tcp reject with tcp reset\n    reject with icmp type admin-prohibited\n  }}"
    );
    let logs = egress_sets(&mut body, cell);
    host_ports(&mut body, cell);
    forward_chains(&mut body, cell.subnet, &logs);
    let gen = generation_of(&body);
    let mut out = String::with_capacity(body.len() + 200);
    // `flush table` would keep set elements; deleting and re-creating in the same file is still
    // one transaction.
    let _ = writeln!(
        out,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let _ = writeln!(
        out,
        "  set gen {{\n    type mark\n    elements = {{ {gen:#x} }}\n  }}"
    );
    out.push_str(&body);
    out.push_str("}\n");
    out
}

/// FNV-1a of the ruleset body: the value kept in the `gen` set.
fn generation_of(body: &str) -> u32 {
    body.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}

/// The generation a [`ruleset`] script carries.
pub fn generation(script: &str) -> Option<u32> {
    let at = script.find("set gen {")?;
    let rest = &script[at..];
    let hex = rest
        .split("elements = { 0x")
        .nth(1)?
        .split_whitespace()
        .next()?;
    u32::from_str_radix(hex, 16).ok()
}

/// Whether the kernel still holds the ruleset of generation `gen` with its chains intact: the
/// `gen` set, then the table listed once, tersely (no set's elements printed; nft still reads
/// them: about 50 ms with 10,000, as much as listing one chain costs). Catches a deleted
/// table, flushed chains and someone else's ruleset; not elements deleted from a set by hand.
pub fn in_place(gen: u32) -> bool {
    let list = |args: &[&str]| {
        Command::new("nft")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(g) = list(&["list", "set", "ip", TABLE, "gen"]) else {
        return false;
    };
    if !g.contains(&format!("0x{gen:08x}")) {
        return false;
    }
    let Some(table) = list(&["-t", "list", "table", "ip", TABLE]) else {
        return false;
    };
    chains_hold(&table)
}

/// Whether a table as `nft -t list table` prints it has the chains the ruleset depends on,
/// each with its telling rule.
fn chains_hold(table: &str) -> bool {
    let chain = |name: &str| -> Option<&str> {
        let at = table.find(&format!("\tchain {name} {{\n"))?;
        let body = &table[at..];
        Some(&body[..body.find("\n\t}")?])
    };
    [
        ("ingress", "reject with tcp reset"),
        ("forward", "jump ingress"),
        ("prerouting", "jump from_container"),
        ("from_container", "meta mark set"),
        ("input", "@peers drop"),
        ("input", "@peer_sources drop"),
    ]
    .iter()
    .all(|(name, needle)| chain(name).is_some_and(|c| c.contains(needle)))
}

/// The mappings of `ip` that the kernel's ruleset does not forward (CNI CHECK): each must be
/// in the `mapped` set and in its host-port map.
pub fn missing_host_ports(
    ip: Ipv4Addr,
    mappings: &[crate::store::PortMapping],
) -> Vec<crate::store::PortMapping> {
    if mappings.is_empty() {
        return vec![];
    }
    let list = |what: &str, name: &str| {
        Command::new("nft")
            .args(["list", what, "ip", TABLE, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let (mapped, any, at) = (
        list("set", "mapped"),
        list("map", "hostports"),
        list("map", "hostports_at"),
    );
    mappings
        .iter()
        .filter(|m| {
            let target = format!("{ip} . {}", m.container_port);
            let in_map = match m.host_ip {
                None => any.contains(&format!("{} . {} : {target}", m.protocol, m.host_port)),
                Some(h) => at.contains(&format!(
                    "{h} . {} . {} : {target}",
                    m.protocol, m.host_port
                )),
            };
            !in_map || !mapped.contains(&format!("{ip} . {} . {}", m.protocol, m.container_port))
        })
        .cloned()
        .collect()
}

/// Applying rules failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// `nft` could not be run.
    #[error("running nft: {0} (is nftables installed? apt-get install -y nftables)")]
    Spawn(std::io::Error),
    /// `nft` refused the script.
    #[error("nft -f refused the ruleset: {0}")]
    Failed(String),
}

/// Applies a [`ruleset`] in the calling process's network namespace in one transaction.
/// Blocking: call it off async threads.
pub fn apply(script: &str) -> Result<(), RulesError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RulesError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(RulesError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(RulesError::Spawn)?;
    if !out.status.success() {
        return Err(RulesError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A table as `nft -t list table ip c2c` prints one (sets without elements).
    fn listed(ingress_last: &str, input: &str) -> String {
        format!(
            "table ip c2c {{\n\tset gen {{\n\t\ttype mark\n\t}}\n\n\tchain ingress {{\n\t\tct state established,related accept\n\t\t{ingress_last}\n\t}}\n\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip daddr 10.255.2.0/24 jump ingress\n\t}}\n\n\tchain prerouting {{\n\t\tiifname \"s-*\" jump from_container\n\t}}\n\n\tchain from_container {{\n\t\tmeta mark set 0x0\n\t}}\n\n\tchain input {{\n{input}\t}}\n}}\n"
        )
    }

    #[test]
    fn a_table_holds_only_with_each_chains_own_rules() {
        let input = "\t\tudp dport 4789 ip saddr != @peers drop\n\t\tudp dport 4789 ip saddr . @th,336,32 . @th,80,16 != @peer_sources drop\n";
        assert!(chains_hold(&listed("reject with tcp reset", input)));
        // ingress flushed of its reject: the rule found elsewhere (here: in input) is no proof.
        let moved = format!("{input}\t\treject with tcp reset\n");
        assert!(!chains_hold(&listed("counter", &moved)));
        // input flushed.
        assert!(!chains_hold(&listed("reject with tcp reset", "")));
        // Another's table with none of the chains.
        assert!(!chains_hold("table ip c2c {\n}\n"));
    }
    use super::*;

    /// A cell's rule inputs with one peer and `locals`' containers (also for delta's tests).
    pub(super) fn cell(subnet: Subnet, locals: &[Local]) -> CellRules {
        CellRules {
            subnet,
            containers: locals.iter().map(|l| l.ip).collect(),
            peers: vec!["192.0.2.2".parse().unwrap()],
            peer_leases: vec![],
            remote_sources: vec![],
            egress: vec![],
            host_ports: vec![],
            log_c2c: false,
        }
    }

    fn inputs() -> (Subnet, Vec<Local>, BTreeMap<AppGuid, u16>) {
        let locals = vec![
            Local {
                ip: "10.255.1.2".parse().unwrap(),
                app_guid: "b".into(),
            },
            Local {
                ip: "10.255.1.1".parse().unwrap(),
                app_guid: "a".into(),
            },
            Local {
                ip: "10.255.1.3".parse().unwrap(),
                app_guid: "b".into(),
            },
        ];
        let tags = BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 0x1234)]);
        ("10.255.1.0/24".parse().unwrap(), locals, tags)
    }

    fn allow(s: &str, d: &str, p: &str, start: u16, end: u16) -> Allow {
        Allow {
            source: s.into(),
            destination: d.into(),
            protocol: p.parse().unwrap(),
            ports: PortRange::new(start, end).unwrap(),
        }
    }

    #[test]
    fn a_peer_may_send_only_its_own_instances_tags() {
        let (subnet, locals, tags) = inputs();
        let mut c = cell(subnet, &locals);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        c.peer_leases = vec![(ip("192.0.2.2"), "10.255.2.0/24".parse().unwrap())];
        c.remote_sources = vec![
            (ip("192.0.2.2"), ip("10.255.2.5"), 0x1234),
            (ip("192.0.2.2"), ip("10.255.2.6"), 0),
        ];
        let text = ruleset(&c, &locals, &tags, &[]);
        for want in [
            "set peer_sources {\n    typeof ip saddr . @th,336,32 . @th,80,16\n    elements = { 192.0.2.2 . 0x0aff0205 . 0x1234 }",
            "set peer_leases {\n    typeof ip saddr . @th,336,32\n    flags interval\n    elements = { 192.0.2.2 . 0x0aff0200-0x0aff02ff }",
            "udp dport 4789 @th,80,16 0 ip saddr . @th,336,32 != @peer_leases drop",
            "udp dport 4789 @th,80,16 != 0 ip saddr . @th,336,32 . @th,80,16 != @peer_sources drop",
        ] {
            assert!(text.contains(want), "{want} missing: {text}");
        }
        // Checked after the peers' own check, before anything is decapsulated.
        let at = |s: &str| text.find(s).unwrap();
        assert!(at("ip saddr != @peers drop") < at("!= @peer_sources drop"));
    }

    #[test]
    fn security_groups_compile_to_disjoint_set_elements() {
        use c2c_api::asg::Allowed;
        let (subnet, locals, tags) = inputs();
        let mut c = cell(subnet, &locals);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let src = ip("10.255.1.2");
        c.egress = vec![
            EgressRule {
                source: src,
                destinations: vec![(ip("192.0.2.0"), ip("192.0.2.255"))],
                allowed: vec![Allowed::Tcp(80, 80), Allowed::Tcp(443, 443)],
                group: "g1".into(),
                log: true,
            },
            // Overlaps the first: one element must not overlap another.
            EgressRule {
                source: src,
                destinations: vec![(ip("192.0.2.10"), ip("192.0.2.10"))],
                allowed: vec![Allowed::Tcp(1, 1000), Allowed::All],
                group: "g2".into(),
                log: false,
            },
            EgressRule {
                source: src,
                destinations: vec![(ip("0.0.0.0"), ip("255.255.255.255"))],
                allowed: vec![Allowed::Icmp((8, 8), (0, 255))],
                group: "g3".into(),
                log: false,
            },
        ];
        let text = ruleset(&c, &locals, &tags, &[]);
        for want in [
            "10.255.1.2 . 192.0.2.0-192.0.2.9 . tcp . 80",
            "10.255.1.2 . 192.0.2.0-192.0.2.9 . tcp . 443",
            "10.255.1.2 . 192.0.2.10 . tcp . 1-1000",
            "10.255.1.2 . 192.0.2.11-192.0.2.255 . tcp . 80",
            "elements = { 10.255.1.2 . 192.0.2.10 }",
            "10.255.1.2 . 0.0.0.0-255.255.255.255 . 8 . 0-255",
            "ip saddr 10.255.1.0/24 ip daddr != 10.255.1.0/24 oifname != \"silk-vtep\" masquerade",
            "oifname != \"silk-vtep\" jump egress",
            // Only the logged rule's elements are in the log set; c2c logging is off.
            "set asg_ports_log {\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service\n    flags interval\n    elements = { 10.255.1.2 . 192.0.2.0-192.0.2.255 . tcp . 80,\n      10.255.1.2 . 192.0.2.0-192.0.2.255 . tcp . 443 }",
            "@asg_ports_log add @log_budget { ip saddr limit rate 5/second burst 5 packets } limit name \"log_all\" log prefix \"asg-accept\" group 4789",
            "limit log_all {\n    rate 100/second burst 200 packets\n  }",
        ] {
            assert!(text.contains(want), "{want} missing: {text}");
        }
        let accept_set = text
            .split("set asg_ports {")
            .nth(1)
            .and_then(|t| t.split('}').next())
            .unwrap_or_default();
        assert!(
            !accept_set.contains("10.255.1.2 . 192.0.2.0-192.0.2.255 . tcp"),
            "{text}"
        );
    }

    #[test]
    fn marks_allow_set_and_default_reject() {
        let (subnet, locals, tags) = inputs();
        let text = ruleset(
            &cell(subnet, &locals),
            &locals,
            &tags,
            &[
                allow("a", "b", "tcp", 8080, 8080),
                allow("c", "b", "udp", 53, 60),
                allow("b", "remote-app", "tcp", 1, 2),
            ],
        );
        assert!(
            text.contains(
                "elements = { 10.255.1.1 : 0x1,\n      10.255.1.2 : 0x2,\n      10.255.1.3 : 0x2 }"
            ),
            "{text}"
        );
        for want in [
            "10.255.1.2 . tcp . 8080 . 0x1",
            "10.255.1.3 . tcp . 8080 . 0x1",
            "10.255.1.2 . udp . 53-60 . 0x1234",
        ] {
            assert!(text.contains(want), "{want} missing: {text}");
        }
        assert!(
            !text.contains(". 1-2 ."),
            "policies to apps not on this cell add nothing"
        );
        assert!(text.contains("ip daddr 10.255.1.0/24 jump ingress"));
        // Each container may send only from its own veth and address; VXLAN only from peers.
        assert!(
            text.contains("\"s-0aff0101\" . 10.255.1.1"),
            "sources by veth: {text}"
        );
        assert!(text.contains("iifname . ip saddr != @sources drop"));
        assert!(text.contains("udp dport 4789 ip saddr != @peers drop"));
        assert!(text.contains("elements = { 192.0.2.2 }"));
        let clear = text.find("meta mark set 0").unwrap();
        let mark = text.find("meta mark set ip saddr map @marks").unwrap();
        assert!(clear < mark);
        assert!(
            text.contains("iifname \"s-*\" jump from_container"),
            "only container packets are marked, never the VTEP's"
        );
        let ingress = &text[text.find("chain ingress").unwrap()..];
        let est = ingress.find("ct state established").unwrap();
        let set = ingress.find("@allow accept").unwrap();
        let reject = ingress.find("reject with tcp reset").unwrap();
        assert!(est < set && set < reject);
        assert!(
            text.starts_with("table ip c2c\ndelete table ip c2c\n"),
            "one transaction replaces the table"
        );
    }

    #[test]
    fn deterministic_and_untagged_apps_get_nothing() {
        let (subnet, mut locals, tags) = inputs();
        let a = ruleset(
            &cell(subnet, &locals),
            &locals,
            &tags,
            &[allow("a", "b", "tcp", 1, 2), allow("zz", "b", "tcp", 3, 4)],
        );
        locals.reverse();
        let b = ruleset(
            &cell(subnet, &locals),
            &locals,
            &tags,
            &[allow("zz", "b", "tcp", 3, 4), allow("a", "b", "tcp", 1, 2)],
        );
        assert_eq!(a, b);
        assert!(!a.contains("3-4"), "{a}");
        assert_eq!(generation(&a), generation(&b));
        let other = ruleset(&cell(subnet, &locals), &locals, &tags, &[]);
        assert_ne!(
            generation(&a),
            generation(&other),
            "another ruleset, another generation"
        );
        let mut lonely = cell(subnet, &[]);
        lonely.peers.clear();
        let empty = ruleset(&lonely, &[], &tags, &[]);
        assert!(
            empty.matches("elements").count() == 1,
            "only gen has elements; no empty lists (nft rejects them): {empty}"
        );
    }
}
