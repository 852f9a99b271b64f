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
    validate(&p)
}

/// Parses and validates a create/delete body, answering with CF's message on the first problem.
pub fn parse_policies(body: &[u8]) -> Result<Vec<Policy>, String> {
    let list: PolicyList =
        serde_json::from_slice(body).map_err(|e| format!("mapper: unmarshal json: {e}"))?;
    let policies = list
        .policies
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("missing policies"))?;
    policies.iter().map(validate).collect()
}

fn invalid(msg: &str) -> String {
    format!("mapper: validate policies: {msg}")
}

fn validate(p: &WirePolicy) -> Result<Policy, String> {
    if p.source.id.is_empty() {
        return Err(invalid("missing source id"));
    }
    if p.destination.id.is_empty() {
        return Err(invalid("missing destination id"));
    }
    if p.source.tag.is_some() || p.destination.tag.is_some() {
        return Err(invalid("tags may not be specified"));
    }
    let Ok(protocol) = p.destination.protocol.parse::<crate::net::Protocol>() else {
        return Err(invalid(
            "invalid destination protocol, specify either udp or tcp",
        ));
    };
    let Ports { start, end } = p.destination.ports;
    if start == 0 {
        return Err(invalid("missing start port"));
    }
    if !(1..=65535).contains(&start) {
        return Err(invalid(&format!(
            "invalid start port {start}, must be in range 1-65535"
        )));
    }
    // CF treats a missing end as a single port.
    let end = if end == 0 { start } else { end };
    if !(1..=65535).contains(&end) {
        return Err(invalid(&format!(
            "invalid end port {end}, must be in range 1-65535"
        )));
    }
    if start > end {
        return Err(invalid(&format!(
            "invalid port range {start}-{end}, start must be less than or equal to end"
        )));
    }
    Ok(Policy {
        source: p.source.id.as_str().into(),
        destination: p.destination.id.as_str().into(),
        protocol,
        // Checked above: 1 <= start <= end <= 65535.
        ports: crate::net::PortRange::new(start as u16, end as u16).map_err(|e| invalid(&e))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(dst: &str) -> String {
        format!(r#"{{"policies":[{{"source":{{"id":"a"}},"destination":{dst}}}]}}"#)
    }

    #[test]
    fn cf_validation_messages() {
        let cases = [
            (r#"{"policies":[]}"#.to_string(), "mapper: validate policies: missing policies"),
            ("{".to_string(), "mapper: unmarshal json:"),
            (r#"{"policies":[{"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":2}}}]}"#.into(), "missing source id"),
            (body(r#"{"protocol":"tcp","ports":{"start":1,"end":2}}"#), "missing destination id"),
            (body(r#"{"id":"b","protocol":"icmp","ports":{"start":1,"end":2}}"#), "invalid destination protocol, specify either udp or tcp"),
            (body(r#"{"id":"b","protocol":"tcp","ports":{"start":0,"end":2}}"#), "missing start port"),
            (body(r#"{"id":"b","protocol":"tcp","ports":{"start":70000,"end":70000}}"#), "invalid start port 70000, must be in range 1-65535"),
            (body(r#"{"id":"b","protocol":"tcp","ports":{"start":80,"end":70000}}"#), "invalid end port 70000, must be in range 1-65535"),
            (body(r#"{"id":"b","protocol":"tcp","ports":{"start":90,"end":80}}"#), "invalid port range 90-80, start must be less than or equal to end"),
            (body(r#"{"id":"b","tag":"0001","protocol":"tcp","ports":{"start":80,"end":80}}"#), "tags may not be specified"),
        ];
        for (b, want) in cases {
            let e = parse_policies(b.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{b}: got {e}, want {want}");
        }
        let ok =
            parse_policies(body(r#"{"id":"b","protocol":"udp","ports":{"start":53}}"#).as_bytes())
                .unwrap();
        assert_eq!(
            (
                ok[0].ports.start(),
                ok[0].ports.end(),
                ok[0].protocol.as_str()
            ),
            (53, 53, "udp")
        );
    }
}
