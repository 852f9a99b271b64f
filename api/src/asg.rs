//! Application Security Groups (ASGs): Cloud Foundry's egress rules, in CF's own JSON (the file
//! `cf create-security-group NAME FILE` reads), validated with Cloud Controller's messages and
//! in its order, and compiled to the address and port ranges a cell enforces. Orgs and spaces,
//! the tenancy that bindings name, are here too.
//!
//! Validation follows Cloud Controller's `RulesValidator` with comma-delimited destinations
//! enabled and IPv6 disabled (the overlay and the cells are IPv4).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One rule as CF writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// An IP, a CIDR, a range `a-b`, or a comma list of these.
    pub destination: String,
    /// For tcp and udp: `"443"`, `"80,443"`, `"8000-9000"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// For icmp: the type, -1 for any.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<i64>,
    /// For icmp: the code, -1 for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// Log packets this rule accepts (when the cell logs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a rule lets through, compiled: the protocol part of the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allowed {
    /// Any protocol.
    All,
    /// TCP to these ports (inclusive).
    Tcp(u16, u16),
    /// UDP to these ports (inclusive).
    Udp(u16, u16),
    /// ICMP of these types and codes (inclusive ranges; -1 in the rule is 0-255).
    Icmp((u8, u8), (u8, u8)),
}

impl Rule {
    /// The destination ranges (first and last address, inclusive). Only meaningful on a rule
    /// that passed [`validate`].
    pub fn destinations(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.destination
            .split(',')
            .filter_map(|d| parse_destination(d).ok())
            .collect()
    }

    /// What the rule allows towards each of its destinations. Only meaningful on a rule that
    /// passed [`validate`].
    pub fn allowed(&self) -> Vec<Allowed> {
        let icmp_range = |v: Option<i64>| match v {
            Some(n) if (0..=255).contains(&n) => (n as u8, n as u8),
            _ => (0, 255),
        };
        match self.protocol.as_str() {
            "all" => vec![Allowed::All],
            "icmp" => vec![Allowed::Icmp(
                icmp_range(self.icmp_type),
                icmp_range(self.code),
            )],
            p => {
                let ports = self
                    .ports
                    .as_deref()
                    .and_then(port_ranges)
                    .unwrap_or_default();
                ports
                    .into_iter()
                    .map(|(a, b)| {
                        if p == "tcp" {
                            Allowed::Tcp(a, b)
                        } else {
                            Allowed::Udp(a, b)
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Most destinations one rule may list (CF's limit).
pub const MAX_DESTINATIONS: usize = 6000;

const KEYS: [&str; 7] = [
    "code",
    "description",
    "destination",
    "log",
    "ports",
    "protocol",
    "type",
];

/// Validates `rules` (the JSON of a security group's rules) as Cloud Controller does: every
/// problem of every rule, each as `Rules[i]: ...`, in CF's words and order.
pub fn validate(rules: &Value) -> Result<Vec<Rule>, Vec<String>> {
    let Some(list) = rules.as_array() else {
        return Err(vec!["Rules must be an array".into()]);
    };
    let mut errors = vec![];
    for (i, rule) in list.iter().enumerate() {
        let mut add = |m: &str| errors.push(format!("Rules[{i}]: {m}"));
        let Some(obj) = rule.as_object() else {
            add("must be an object");
            continue;
        };
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !KEYS.contains(&k.as_str()))
            .map(|k| format!("{k:?}"))
            .collect();
        if !unknown.is_empty() {
            add(&format!("unknown field(s): [{}]", unknown.join(", ")));
        }
        let protocol = obj.get("protocol").and_then(Value::as_str);
        if !matches!(protocol, Some("tcp" | "udp" | "icmp" | "all")) {
            if protocol == Some("icmpv6") {
                add("icmpv6 cannot be used if enable_ipv6 is false");
            } else {
                add("protocol must be 'tcp', 'udp', 'icmp', 'icmpv6' or 'all'");
            }
        }
        match obj.get("destination") {
            None | Some(Value::Null) => add("nil destination; destination must be a comma-delimited list of valid CIDRs, IP addresses, or IP address ranges"),
            Some(Value::String(d)) if d.chars().any(char::is_whitespace) => {
                add("destination must not contain whitespace")
            }
            Some(Value::String(d)) => {
                for m in destination_errors(d) {
                    add(m);
                }
            }
            Some(_) => add("destination must be a string"),
        }
        if obj
            .get("description")
            .is_some_and(|d| !d.is_null() && !d.is_string())
        {
            add("description must be a string");
        }
        if obj
            .get("log")
            .is_some_and(|l| !l.is_null() && !l.is_boolean())
        {
            add("log must be a boolean");
        }
        let ports = obj.get("ports").filter(|p| !p.is_null());
        match protocol {
            Some("tcp" | "udp") => {
                if ports.is_none() {
                    add("ports are required for protocols of type TCP and UDP");
                }
                if ports
                    .and_then(Value::as_str)
                    .and_then(port_ranges)
                    .is_none()
                {
                    add("ports must be a valid single port, comma separated list of ports, or range or ports, formatted as a string");
                }
            }
            Some("icmp") => {
                for field in ["code", "type"] {
                    let v = obj.get(field).filter(|v| !v.is_null());
                    if v.is_none() {
                        add(&format!("{field} is required for protocols of type ICMP"));
                    }
                    if !v
                        .and_then(Value::as_i64)
                        .is_some_and(|n| (-1..=255).contains(&n))
                    {
                        add(&format!(
                            "{field} must be an integer between -1 and 255 (inclusive)"
                        ));
                    }
                }
            }
            Some("all") if ports.is_some() => {
                add("ports are not allowed for protocols of type all")
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_json::from_value(rules.clone()).map_err(|e| vec![format!("Rules: {e}")])
}

/// CF's messages for a destination without whitespace: one list for each part of a comma list.
fn destination_errors(d: &str) -> Vec<&'static str> {
    let parts: Vec<&str> = d.split(',').collect();
    if parts.len() > MAX_DESTINATIONS {
        return vec!["maximum destinations per rule exceeded - must be under 6000"];
    }
    let listed = parts.len() > 1;
    let invalid = if listed {
        "destination must contain valid CIDR(s), IP address(es), or IP address range(s)"
    } else {
        "destination must be a valid CIDR, IP address, or IP address range"
    };
    let mut out = vec![];
    for p in parts {
        match parse_destination(p) {
            Ok(_) => {}
            Err(DestError::Empty) => {
                out.push("empty destination specified in comma-delimited list");
                out.push(invalid);
            }
            Err(DestError::Invalid) => out.push(invalid),
            Err(DestError::LeadingZero) => {
                out.push("destination octets cannot contain leading zeros")
            }
            Err(DestError::BadRange) => out.push("destination IP address range is invalid"),
            Err(DestError::Inverted) => out.push("beginning of IP address range is numerically greater than the end of its range (range endpoints are inverted)"),
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum DestError {
    Empty,
    Invalid,
    LeadingZero,
    BadRange,
    Inverted,
}

/// Dotted quad, refusing leading zeros (`010.0.0.1`) as CF does.
fn parse_ip(s: &str) -> Result<Ipv4Addr, DestError> {
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4
        || octets
            .iter()
            .any(|o| o.is_empty() || o.len() > 3 || !o.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(DestError::Invalid);
    }
    if octets.iter().any(|o| o.len() > 1 && o.starts_with('0')) {
        return Err(DestError::LeadingZero);
    }
    s.parse().map_err(|_| DestError::Invalid)
}

/// One destination: `a.b.c.d`, `a.b.c.d/n` (host bits allowed, as CF allows them) or
/// `a.b.c.d-e.f.g.h`, as the first and last address it covers.
fn parse_destination(d: &str) -> Result<(Ipv4Addr, Ipv4Addr), DestError> {
    if d.is_empty() {
        return Err(DestError::Empty);
    }
    let ends: Vec<&str> = d.split('-').collect();
    match ends.as_slice() {
        [one] => {
            let (ip, len) = match one.split_once('/') {
                Some((ip, len)) => {
                    let len: u32 = len
                        .parse()
                        .ok()
                        .filter(|l| *l <= 32 && !len.starts_with('+'))
                        .ok_or(DestError::Invalid)?;
                    (parse_ip(ip)?, len)
                }
                None => (parse_ip(one)?, 32),
            };
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let first = u32::from(ip) & mask;
            Ok((Ipv4Addr::from(first), Ipv4Addr::from(first | !mask)))
        }
        [a, b] => {
            let parse = |s: &str| match parse_ip(s) {
                Err(DestError::LeadingZero) => Err(DestError::LeadingZero),
                Err(_) => Err(DestError::BadRange),
                Ok(ip) => Ok(ip),
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(DestError::Inverted);
            }
            Ok((a, b))
        }
        _ => Err(DestError::Invalid),
    }
}

/// CF's ports: one range `a-b` (a < b) or a comma list of ports, each 1-65535; spaces around
/// numbers allowed; a trailing comma ignored (Ruby's `split`). The ranges, inclusive.
pub fn port_ranges(ports: &str) -> Option<Vec<(u16, u16)>> {
    if !ports
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_whitespace() || c == '-' || c == ',')
    {
        return None;
    }
    let port = |s: &str| -> Option<u16> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u16)
    };
    if let Some((a, b)) = ports.split_once('-') {
        let (a, b) = (port(a)?, port(b)?);
        return (a < b).then(|| vec![(a, b)]);
    }
    let mut list: Vec<&str> = ports.split(',').collect();
    while list.last().is_some_and(|s| s.is_empty()) {
        list.pop();
    }
    if list.is_empty() {
        return None;
    }
    list.into_iter().map(|p| port(p).map(|p| (p, p))).collect()
}

/// An org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// GUID.
    pub guid: String,
    /// Name, unique.
    pub name: String,
}

/// A space in an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// GUID.
    pub guid: String,
    /// Name, unique in its org.
    pub name: String,
    /// Its org's GUID.
    pub org_guid: String,
    /// Its org's name.
    pub org: String,
}

/// The org and space every platform starts with; apps pushed without `-o`/`-s` land here.
pub const DEFAULT_ORG: &str = "default";
/// See [`DEFAULT_ORG`].
pub const DEFAULT_SPACE: &str = "default";

/// When a binding applies: to running apps or to staging (CF's lifecycles). Nothing stages
/// here, so staging bindings are stored and listed but never enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Running apps.
    Running,
    /// Staging.
    Staging,
}

impl Lifecycle {
    /// `running` or `staging`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Staging => "staging",
        }
    }
}

impl std::str::FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(Lifecycle::Running),
            "staging" => Ok(Lifecycle::Staging),
            _ => Err(format!(
                "Incorrect Usage: --lifecycle must be 'running' or 'staging', not {s:?}"
            )),
        }
    }
}

/// A security group with where it is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// GUID.
    pub guid: String,
    /// Name, unique.
    pub name: String,
    /// Its rules.
    pub rules: Vec<Rule>,
    /// Bound to every space for running apps (`bind-running-security-group`).
    pub running_default: bool,
    /// Bound to every space for staging.
    pub staging_default: bool,
    /// Spaces it is bound to, with the lifecycle.
    #[serde(default)]
    pub spaces: Vec<SpaceBinding>,
}

/// A security group's binding to one space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpaceBinding {
    /// The space's GUID.
    pub space_guid: String,
    /// `org/space`, for people.
    pub space: String,
    /// Running or staging.
    pub lifecycle: Lifecycle,
}

/// What the cells enforce for egress: the rules of the running groups bound to every space and
/// those bound to each space (by space GUID), each rule with its group's name (for logs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Egress {
    /// Rules of the groups bound for running apps in every space.
    #[serde(default)]
    pub everywhere: Vec<NamedRule>,
    /// Rules of the groups bound for running apps to one space.
    #[serde(default)]
    pub by_space: BTreeMap<String, Vec<NamedRule>>,
}

/// A rule and its group's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedRule {
    /// The group's name.
    pub group: String,
    /// The rule.
    #[serde(flatten)]
    pub rule: Rule,
}

impl Egress {
    /// The rules that apply to an app in `space` (a GUID).
    pub fn for_space<'a>(&'a self, space: &str) -> impl Iterator<Item = &'a NamedRule> + 'a {
        self.everywhere
            .iter()
            .chain(self.by_space.get(space).into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(rules: Value) -> Vec<String> {
        validate(&rules).err().unwrap_or_default()
    }

    fn ok(rules: Value) {
        assert_eq!(validate(&rules).err(), None, "{rules}");
    }

    const INVALID: &str = "destination must be a valid CIDR, IP address, or IP address range";
    const INVALID_LIST: &str =
        "destination must contain valid CIDR(s), IP address(es), or IP address range(s)";
    const INVERTED: &str = "beginning of IP address range is numerically greater than the end of its range (range endpoints are inverted)";
    const BAD_PORTS: &str = "ports must be a valid single port, comma separated list of ports, or range or ports, formatted as a string";

    fn has(errors: &[String], want: &str) {
        assert!(
            errors.iter().any(|e| e == want),
            "missing {want:?} in {errors:?}"
        );
    }

    // Cloud Controller's security_group_rule_validator_spec, ported (IPv4, comma-delimited
    // destinations enabled).
    #[test]
    fn cf_rule_table() {
        ok(json!([]));
        assert_eq!(errs(json!("bad rule")), ["Rules must be an array"]);
        let e = errs(json!([{"protocol": "blah"}, {"not-a-field": true}]));
        has(
            &e,
            "Rules[0]: protocol must be 'tcp', 'udp', 'icmp', 'icmpv6' or 'all'",
        );
        has(
            &e,
            "Rules[1]: protocol must be 'tcp', 'udp', 'icmp', 'icmpv6' or 'all'",
        );
        has(&e, "Rules[1]: unknown field(s): [\"not-a-field\"]");
        has(&errs(json!(["bad rule"])), "Rules[0]: must be an object");
        has(
            &errs(json!([{"blork": "busted", "blark": "also busted"}])),
            "Rules[0]: unknown field(s): [\"blark\", \"blork\"]",
        );
        ok(json!([{"protocol": "udp", "destination": "10.10.10.0/24", "ports": "8080"}]));
        has(
            &errs(json!([{"protocol": "udp", "destination": 42}])),
            "Rules[0]: destination must be a string",
        );
        has(&errs(json!([{"protocol": "udp", "destination": null}])), "Rules[0]: nil destination; destination must be a comma-delimited list of valid CIDRs, IP addresses, or IP address ranges");
        for d in ["    10.10.10.10", "    10.10.10.10   ,   192.168.17.12"] {
            has(
                &errs(json!([{"protocol": "udp", "destination": d}])),
                "Rules[0]: destination must not contain whitespace",
            );
        }
        let e = errs(json!([
            {"protocol": "tcp", "destination": "10.000.0.0/24", "ports": "443"},
            {"protocol": "tcp", "destination": "10.0.0.000/24", "ports": "443"},
            {"protocol": "tcp", "destination": "1.0.0.000-1.0.0.200", "ports": "443"},
        ]));
        for i in 0..3 {
            has(
                &e,
                &format!("Rules[{i}]: destination octets cannot contain leading zeros"),
            );
        }
        let ips = [
            "010.0.0.53",
            "10.000.0.53",
            "10.0.000.53",
            "10.0.0.053",
            "010.000.000.053",
        ];
        let rules: Vec<Value> = ips
            .iter()
            .map(|d| json!({"protocol": "tcp", "destination": d, "ports": "443"}))
            .collect();
        let e = errs(Value::Array(rules));
        assert_eq!(e.len(), 5, "{e:?}");
        has(
            &errs(json!([{"protocol": "udp", "destination": "1010"}])),
            &format!("Rules[0]: {INVALID}"),
        );
        has(
            &errs(
                json!([{"protocol": "tcp", "destination": "192.168.10.2-192.168.105", "ports": "8080"}]),
            ),
            "Rules[0]: destination IP address range is invalid",
        );
        has(
            &errs(json!([{"protocol": "udp", "destination": "9.9.9.9-0.0.0.0"}])),
            &format!("Rules[0]: {INVERTED}"),
        );
        has(
            &errs(json!([{"protocol": "udp", "destination": "192.168.10.2/240"}])),
            &format!("Rules[0]: {INVALID}"),
        );
        for d in [
            "192.168.10.2",
            "192.168.10.2-192.168.15.254",
            "192.168.10.2/24",
            "10.0.0.0/8,192.168.0.0/16",
            "10.0.0.0/8,1.0.0.0-1.0.0.255,4.5.6.7",
            "0.0.0.0/0",
        ] {
            ok(json!([{"protocol": "udp", "destination": d, "ports": "8080"}]));
        }
        has(
            &errs(
                json!([{"protocol": "udp", "destination": "192.168.10.2/24,1.2", "ports": "8080"}]),
            ),
            &format!("Rules[0]: {INVALID_LIST}"),
        );
        let e = errs(
            json!([{"protocol": "udp", "destination": "1.2-7.8,999.999.999.999,200.0.0.0-150.0.0.0,10.0.0.0/500", "ports": "8080"}]),
        );
        assert_eq!(e.len(), 4, "{e:?}");
        has(&e, &format!("Rules[0]: {INVALID_LIST}"));
        has(&e, "Rules[0]: destination IP address range is invalid");
        has(&e, &format!("Rules[0]: {INVERTED}"));
        let many = vec!["192.168.1.3"; 7000].join(",");
        has(
            &errs(json!([{"protocol": "all", "destination": many}])),
            "Rules[0]: maximum destinations per rule exceeded - must be under 6000",
        );
        for d in [
            ",10.10.10.10,11.11.11.11",
            "10.10.10.10,,11.11.11.11",
            "10.10.10.10,11.11.11.11,",
        ] {
            let e = errs(json!([{"protocol": "udp", "destination": d, "ports": "8080"}]));
            assert_eq!(e.len(), 2, "{d}: {e:?}");
            has(
                &e,
                "Rules[0]: empty destination specified in comma-delimited list",
            );
            has(&e, &format!("Rules[0]: {INVALID_LIST}"));
        }
        let e = errs(
            json!([{"protocol": "udp", "destination": ",10.10.10.10,,11.11.11.11,", "ports": "8080"}]),
        );
        assert_eq!(e.len(), 6, "{e:?}");
        for i in [0, 2, 4] {
            assert_eq!(
                e[i],
                "Rules[0]: empty destination specified in comma-delimited list"
            );
        }
        // IPv6 is off: addresses and icmpv6 refused.
        has(
            &errs(json!([{"protocol": "udp", "destination": "2001:db8::", "ports": "8080"}])),
            &format!("Rules[0]: {INVALID}"),
        );
        has(
            &errs(
                json!([{"protocol": "icmpv6", "destination": "2001:db8::/32", "type": -1, "code": 255}]),
            ),
            "Rules[0]: icmpv6 cannot be used if enable_ipv6 is false",
        );
        ok(
            json!([{"protocol": "udp", "destination": "192.168.10.2/24", "description": "a description", "ports": "8080"}]),
        );
        has(
            &errs(json!([{"protocol": "udp", "description": 42}])),
            "Rules[0]: description must be a string",
        );
        ok(
            json!([{"protocol": "udp", "destination": "192.168.10.2/24", "log": true, "ports": "8080"}]),
        );
        has(
            &errs(json!([{"protocol": "udp", "log": 42, "ports": "8080"}])),
            "Rules[0]: log must be a boolean",
        );
        for p in [json!(4), Value::Null, json!("arp")] {
            has(
                &errs(json!([{"protocol": p}])),
                "Rules[0]: protocol must be 'tcp', 'udp', 'icmp', 'icmpv6' or 'all'",
            );
        }
        ok(json!([{"protocol": "tcp", "destination": "10.10.10.0/24", "ports": "8080"}]));
        ok(json!([{"protocol": "icmp", "destination": "10.10.10.0/24", "type": -1, "code": 255}]));
        ok(json!([{"protocol": "all", "destination": "10.10.10.0/24"}]));
        for p in ["8080", "3000,8888", "4000-5000", "80, 443", "80,"] {
            ok(json!([{"protocol": "udp", "destination": "192.168.10.2/24", "ports": p}]));
        }
        has(
            &errs(json!([{"protocol": "udp", "destination": "192.168.10.2/24"}])),
            "Rules[0]: ports are required for protocols of type TCP and UDP",
        );
        for p in [
            json!("6000-5000"),
            json!(42),
            json!("0"),
            json!("65536"),
            json!(",80"),
            json!("80;443"),
        ] {
            has(
                &errs(json!([{"protocol": "udp", "destination": "192.168.10.2/24", "ports": p}])),
                &format!("Rules[0]: {BAD_PORTS}"),
            );
        }
        has(
            &errs(json!([{"protocol": "all", "destination": "192.168.10.2/24", "ports": "6000"}])),
            "Rules[0]: ports are not allowed for protocols of type all",
        );
        let e = errs(json!([{"protocol": "icmp", "destination": "10.10.10.0/24"}]));
        has(&e, "Rules[0]: type is required for protocols of type ICMP");
        has(&e, "Rules[0]: code is required for protocols of type ICMP");
        for v in [json!([-2, 256]), json!(["not an int", "not an int"])] {
            let e = errs(json!([{"protocol": "icmp", "type": v[0], "code": v[1]}]));
            has(
                &e,
                "Rules[0]: type must be an integer between -1 and 255 (inclusive)",
            );
            has(
                &e,
                "Rules[0]: code must be an integer between -1 and 255 (inclusive)",
            );
        }
    }

    #[test]
    fn compiles_to_ranges() {
        let rules = validate(&json!([
            {"protocol": "tcp", "destination": "10.1.2.3/24,8.8.8.8,1.0.0.1-1.0.0.9", "ports": "80, 443"},
            {"protocol": "udp", "destination": "0.0.0.0/0", "ports": "8000-9000"},
            {"protocol": "icmp", "destination": "192.0.2.1", "type": 8, "code": -1},
            {"protocol": "all", "destination": "192.0.2.0/31"},
        ]))
        .unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            rules[0].destinations(),
            [
                (ip("10.1.2.0"), ip("10.1.2.255")),
                (ip("8.8.8.8"), ip("8.8.8.8")),
                (ip("1.0.0.1"), ip("1.0.0.9"))
            ]
        );
        assert_eq!(
            rules[0].allowed(),
            [Allowed::Tcp(80, 80), Allowed::Tcp(443, 443)]
        );
        assert_eq!(
            rules[1].destinations(),
            [(ip("0.0.0.0"), ip("255.255.255.255"))]
        );
        assert_eq!(rules[1].allowed(), [Allowed::Udp(8000, 9000)]);
        assert_eq!(rules[2].allowed(), [Allowed::Icmp((8, 8), (0, 255))]);
        assert_eq!(rules[3].allowed(), [Allowed::All]);
        assert_eq!(
            rules[3].destinations(),
            [(ip("192.0.2.0"), ip("192.0.2.1"))]
        );
    }
}
