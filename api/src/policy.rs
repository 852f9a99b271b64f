//! The JSON shapes of the external policy API (Cloud Foundry policy server v1) and their
//! validation, with CF's messages so a CF user's scripts and expectations carry over.

use serde::{Deserialize, Serialize};

use crate::Policy;

/// `{"policies": [...]}` as posted and listed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyList {
    /// Present in list responses only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_policies: Option<usize>,
    /// The policies.
    #[serde(default)]
    pub policies: Option<Vec<WirePolicy>>,
}

/// One policy on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePolicy {
    /// Source app.
    #[serde(default)]
    pub source: Source,
    /// Destination app, protocol and ports.
    #[serde(default)]
    pub destination: Destination,
}

/// `source`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// App GUID.
    #[serde(default)]
    pub id: String,
    /// Not accepted from users; shown to cells.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
}

/// `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// App GUID.
    #[serde(default)]
    pub id: String,
    /// Not accepted from users; shown to cells.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// Port range.
    #[serde(default)]
    pub ports: Ports,
}

/// `ports`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// First port.
    #[serde(default)]
    pub start: i64,
    /// Last port.
    #[serde(default)]
    pub end: i64,
}

impl From<&Policy> for WirePolicy {
    fn from(p: &Policy) -> Self {
        WirePolicy {
            source: Source {
                id: p.source.to_string(),
                tag: None,
            },
            destination: Destination {
                id: p.destination.to_string(),
                tag: None,
                protocol: p.protocol.to_string(),
                ports: Ports {
                    start: p.ports.start().into(),
                    end: p.ports.end().into(),
                },
            },
        }
    }
}

impl PolicyList {
    /// The body that adds or removes `policies`.
    pub fn of(policies: &[Policy]) -> Self {
        PolicyList {
            total_policies: None,
            policies: Some(policies.iter().map(WirePolicy::from).collect()),
        }
    }
}

/// A policy from a list answer (where tags may be shown), checked as a posted one is.
pub fn validate_listed(p: &WirePolicy) -> Result<Policy, String> {
    let mut p = p.clone();
    p.source.tag = None;
    p.destination.tag = None;
    convert(&p)
}

/// Parses and validates a v1 create/delete body, answering with CF's message on the first
/// problem. Keys match case-insensitively, as Go's JSON decoder matches struct fields.
pub fn parse_policies(body: &[u8]) -> Result<Vec<Policy>, String> {
    let list: PolicyList = from_go_json(body)?;
    let policies = list.policies.unwrap_or_default();
    if policies.is_empty() {
        return Err(invalid("missing policies"));
    }
    // CF validates every policy before converting any.
    for p in &policies {
        check(p)?;
    }
    policies.iter().map(convert).collect()
}

/// A v0 policy (`destination.port`, one port), as CF's v0 API takes and lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePolicyV0 {
    /// Source app.
    #[serde(default)]
    pub source: Source,
    /// Destination app, protocol and port.
    #[serde(default)]
    pub destination: DestinationV0,
}

/// `destination` of a v0 policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationV0 {
    /// App GUID.
    #[serde(default)]
    pub id: String,
    /// Not accepted from users.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// The one port.
    #[serde(default)]
    pub port: i64,
}

/// `{"policies": [...]}` in v0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyListV0 {
    /// How many are listed (always present, as CF's v0 sends it).
    #[serde(default)]
    pub total_policies: usize,
    /// The policies.
    #[serde(default)]
    pub policies: Option<Vec<WirePolicyV0>>,
}

impl PolicyListV0 {
    /// The v0 list of `policies`: only one-port policies can be shown in v0 (as CF).
    pub fn of(policies: &[Policy]) -> Self {
        let listed: Vec<WirePolicyV0> = policies
            .iter()
            .filter(|p| p.ports.start() == p.ports.end())
            .map(|p| WirePolicyV0 {
                source: Source {
                    id: p.source.to_string(),
                    tag: None,
                },
                destination: DestinationV0 {
                    id: p.destination.to_string(),
                    tag: None,
                    protocol: p.protocol.to_string(),
                    port: p.ports.start().into(),
                },
            })
            .collect();
        PolicyListV0 {
            total_policies: listed.len(),
            policies: Some(listed),
        }
    }
}

/// Parses and validates a v0 create/delete body with CF's v0 validator and messages.
pub fn parse_policies_v0(body: &[u8]) -> Result<Vec<Policy>, String> {
    let list: PolicyListV0 = from_go_json(body)?;
    let policies = list.policies.unwrap_or_default();
    if policies.is_empty() {
        return Err(invalid("missing policies"));
    }
    for p in &policies {
        if p.source.id.is_empty() {
            return Err(invalid("missing source id"));
        }
        if p.destination.id.is_empty() {
            return Err(invalid("missing destination id"));
        }
        if p.destination.protocol != "udp" && p.destination.protocol != "tcp" {
            return Err(invalid(
                "invalid destination protocol, specify either udp or tcp",
            ));
        }
        let port = p.destination.port;
        if port < 0 {
            return Err(invalid(&format!(
                "invalid port {port}, must be in range 1-65535"
            )));
        }
        if port == 0 {
            return Err(invalid("missing port"));
        }
        // CF's v0 validator has no upper bound (its store then holds a port no packet can
        // carry); the range check is ours, with the message v0 uses for the lower bound.
        if port > 65535 {
            return Err(invalid(&format!(
                "invalid port {port}, must be in range 1-65535"
            )));
        }
        if has_tag(&p.source.tag) || has_tag(&p.destination.tag) {
            return Err(invalid("tags may not be specified"));
        }
    }
    policies
        .iter()
        .map(|p| {
            convert(&WirePolicy {
                source: p.source.clone(),
                destination: Destination {
                    id: p.destination.id.clone(),
                    tag: None,
                    protocol: p.destination.protocol.clone(),
                    ports: Ports {
                        start: p.destination.port,
                        end: p.destination.port,
                    },
                },
            })
        })
        .collect()
}

/// Decodes JSON as Go's `encoding/json` does for CF's shapes (all of whose field names are
/// lower-case): object keys match case-insensitively (CF's own internal client sends
/// `{"ID": ..., "Type": ...}`); unknown keys are ignored.
pub fn go_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_slice(body)?;
    lower_keys(&mut v);
    serde_json::from_value(v)
}

/// [`go_json`] with CF's mapper message on failure.
fn from_go_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    go_json(body).map_err(|e| format!("mapper: unmarshal json: {e}"))
}

fn lower_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut val) in old {
                lower_keys(&mut val);
                m.insert(k.to_ascii_lowercase(), val);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(lower_keys),
        _ => {}
    }
}

fn invalid(msg: &str) -> String {
    format!("mapper: validate policies: {msg}")
}

/// Go's `omitempty` string: an empty tag is no tag.
fn has_tag(t: &Option<String>) -> bool {
    t.as_deref().is_some_and(|t| !t.is_empty())
}

/// CF's `PolicyValidator`, check for check and in its order (`policy_validator.go`).
fn check(p: &WirePolicy) -> Result<(), String> {
    if p.source.id.is_empty() {
        return Err(invalid("missing source id"));
    }
    if p.destination.id.is_empty() {
        return Err(invalid("missing destination id"));
    }
    if p.destination.protocol != "udp" && p.destination.protocol != "tcp" {
        return Err(invalid(
            "invalid destination protocol, specify either udp or tcp",
        ));
    }
    let Ports { start, end } = p.destination.ports;
    if start > end {
        return Err(invalid(&format!(
            "invalid port range {start}-{end}, start must be less than or equal to end"
        )));
    }
    if start < 0 {
        return Err(invalid(&format!(
            "invalid start port {start}, must be in range 1-65535"
        )));
    }
    if start == 0 {
        return Err(invalid("missing start port"));
    }
    if end > 65535 {
        return Err(invalid(&format!(
            "invalid end port {end}, must be in range 1-65535"
        )));
    }
    if has_tag(&p.source.tag) || has_tag(&p.destination.tag) {
        return Err(invalid("tags may not be specified"));
    }
    Ok(())
}

/// A checked policy as ours: 1 <= start <= end <= 65535 hold after [`check`].
fn convert(p: &WirePolicy) -> Result<Policy, String> {
    check(p)?;
    let Ports { start, end } = p.destination.ports;
    Ok(Policy {
        source: p.source.id.as_str().into(),
        destination: p.destination.id.as_str().into(),
        protocol: p
            .destination
            .protocol
            .parse()
            .map_err(|e: String| invalid(&e))?,
        ports: crate::net::PortRange::new(start as u16, end as u16).map_err(|e| invalid(&e))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str, dst: &str, tag: (&str, &str), proto: &str, start: i64, end: i64) -> String {
        serde_json::json!({"policies": [{
            "source": {"id": src, "tag": tag.0},
            "destination": {"id": dst, "tag": tag.1, "protocol": proto, "ports": {"start": start, "end": end}},
        }]})
        .to_string()
    }

    /// `policy_validator_test.go` of cf-networking-release, case for case, then the cases the
    /// order of its checks decides (which message a body gets when two checks fail).
    #[test]
    fn cf_policy_validator_table() {
        let ok = one(
            "some-source-id",
            "some-destination-id",
            ("", ""),
            "tcp",
            42,
            123,
        );
        let p = parse_policies(ok.as_bytes()).unwrap();
        assert_eq!((p[0].ports.start(), p[0].ports.end()), (42, 123));
        let cases: &[(String, &str)] = &[
            // CF's table.
            (r#"{"policies": null}"#.into(), "missing policies"),
            (r#"{"policies": []}"#.into(), "missing policies"),
            (one("", "some-destination-id", ("", ""), "tcp", 42, 42), "missing source id"),
            (one("foo", "", ("", ""), "tcp", 42, 42), "missing destination id"),
            (one("foo", "bar", ("", ""), "banana", 42, 42), "invalid destination protocol, specify either udp or tcp"),
            (one("foo", "bar", ("", ""), "tcp", 1243, 999), "invalid port range 1243-999, start must be less than or equal to end"),
            (one("foo", "bar", ("", ""), "tcp", -42, 999), "invalid start port -42, must be in range 1-65535"),
            (one("foo", "bar", ("", ""), "tcp", 0, 999), "missing start port"),
            (one("foo", "bar", ("", ""), "tcp", 42, 101101), "invalid end port 101101, must be in range 1-65535"),
            (one("foo", "bar", ("some-tag", ""), "tcp", 123, 456), "tags may not be specified"),
            // The order decides: a start with no end is a range ending at 0.
            (one("foo", "bar", ("", ""), "tcp", 53, 0), "invalid port range 53-0, start must be less than or equal to end"),
            (one("foo", "bar", ("", ""), "tcp", 70000, 70000), "invalid end port 70000, must be in range 1-65535"),
            (one("foo", "bar", ("", ""), "tcp", 5, -1), "invalid port range 5--1, start must be less than or equal to end"),
            (one("foo", "bar", ("", ""), "tcp", 0, 0), "missing start port"),
            (one("foo", "bar", ("", ""), "TCP", 80, 80), "invalid destination protocol, specify either udp or tcp"),
            (one("foo", "bar", ("", "0001"), "tcp", 80, 80), "tags may not be specified"),
            ("{".into(), "mapper: unmarshal json:"),
            (r#"{"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": "80", "end": 80}}}]}"#.into(), "mapper: unmarshal json:"),
        ];
        for (b, want) in cases {
            let e = parse_policies(b.as_bytes()).unwrap_err();
            assert!(
                e.ends_with(want) || e.starts_with(want),
                "{b}: got {e:?}, want {want:?}"
            );
            if !want.starts_with("mapper:") {
                assert_eq!(e, format!("mapper: validate policies: {want}"));
            }
        }
    }

    #[test]
    fn empty_tags_and_any_key_case_are_accepted_as_go_decodes_them() {
        let b = one("foo", "bar", ("", ""), "udp", 53, 53);
        let p = parse_policies(b.as_bytes()).unwrap();
        assert_eq!((p[0].ports.start(), p[0].protocol.as_str()), (53, "udp"));
        let b = r#"{"Policies": [{"Source": {"ID": "foo"}, "DESTINATION": {"Id": "bar", "Protocol": "tcp", "Ports": {"Start": 8080, "END": 8081}}, "extra": 1}]}"#;
        let p = parse_policies(b.as_bytes()).unwrap();
        assert_eq!(
            (
                p[0].source.as_str(),
                p[0].destination.as_str(),
                p[0].ports.end()
            ),
            ("foo", "bar", 8081)
        );
    }

    /// `api_v0/validator_test.go`'s cases, and v0 lists only one-port policies.
    #[test]
    fn cf_v0_validator_and_listing() {
        let v0 = |src: &str, dst: &str, proto: &str, port: i64| {
            serde_json::json!({"policies": [{"source": {"id": src}, "destination": {"id": dst, "protocol": proto, "port": port}}]}).to_string()
        };
        let cases = [
            (r#"{"policies": []}"#.to_string(), "missing policies"),
            (v0("", "b", "tcp", 8080), "missing source id"),
            (v0("a", "", "tcp", 8080), "missing destination id"),
            (
                v0("a", "b", "banana", 8080),
                "invalid destination protocol, specify either udp or tcp",
            ),
            (
                v0("a", "b", "tcp", -1),
                "invalid port -1, must be in range 1-65535",
            ),
            (v0("a", "b", "tcp", 0), "missing port"),
        ];
        for (b, want) in cases {
            assert_eq!(
                parse_policies_v0(b.as_bytes()).unwrap_err(),
                format!("mapper: validate policies: {want}"),
                "{b}"
            );
        }
        let p = parse_policies_v0(v0("a", "b", "tcp", 8080).as_bytes()).unwrap();
        let mut range = p[0].clone();
        range.ports = crate::net::PortRange::new(9000, 9001).unwrap();
        let listed = serde_json::to_value(PolicyListV0::of(&[p[0].clone(), range])).unwrap();
        assert_eq!(
            listed,
            serde_json::json!({"total_policies": 1, "policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "port": 8080}}]})
        );
    }
}
