//! Who may call an instance through its sidecar: derived by the cell agent from control's view
//! (the same policies the packet filter enforces) and written into the sidecar's cert dir as
//! [`ACCESS_FILE`], which the sidecar reloads on every change, as it does its certificate.
//!
//! A caller is identified by its instance identity certificate (instance GUID in the CN, app
//! GUID in the `app:` OU). It is *known* if that instance is live and belongs to that app, and
//! *allowed* if, on top, a policy from its app to this instance's app covers tcp on the
//! sidecar's port. A deleted instance drops out of the next view, so its identity stops being
//! known at every sidecar as soon as its cell applies that view, not when it expires.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    net::Protocol, AppGuid, AppProtocol, CellView, ClientIdentity, Instance, ProxyProtocol,
    Revision,
};

/// The file in a sidecar's cert dir.
pub const ACCESS_FILE: &str = "access.json";

/// The sidecar's TLS port, which policies must cover for a caller to be allowed.
pub const SIDECAR_PORT: u16 = 61443;

/// What a sidecar needs to decide on a caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The view this was derived from.
    #[serde(default)]
    pub revision: Revision,
    /// This instance's GUID (for logs).
    #[serde(default)]
    pub instance: String,
    /// Whether callers must present an allowed identity.
    #[serde(default)]
    pub client_identity: ClientIdentity,
    /// Whether the app gets a PROXY protocol header.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// What the app speaks: the ALPN protocols the sidecar offers.
    #[serde(default)]
    pub app_protocol: AppProtocol,
    /// Live instances of apps with any policy to this app: instance GUID -> app GUID.
    #[serde(default)]
    pub callers: BTreeMap<String, AppGuid>,
    /// Apps a policy allows on tcp [`SIDECAR_PORT`] to this app.
    #[serde(default)]
    pub allowed: BTreeSet<AppGuid>,
}

/// What the sidecar makes of a caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live instance of an app a policy allows.
    Allowed,
    /// A live instance, but no policy covers tcp 61443 from its app.
    NoPolicy,
    /// Not a live instance of the app it names (deleted, or never placed).
    Unknown,
}

impl Access {
    /// What the sidecar of `inst` needs, from `view`.
    pub fn for_instance(view: &CellView, inst: &Instance) -> Access {
        let app = view.apps.iter().find(|a| a.guid == inst.app_guid);
        let to_me = view
            .policies
            .iter()
            .filter(|p| p.destination == inst.app_guid);
        let mut sources = BTreeSet::new();
        let mut allowed = BTreeSet::new();
        for p in to_me {
            sources.insert(p.source.clone());
            if p.protocol == Protocol::Tcp
                && p.ports.start() <= SIDECAR_PORT
                && SIDECAR_PORT <= p.ports.end()
            {
                allowed.insert(p.source.clone());
            }
        }
        let callers = view
            .instances
            .iter()
            .filter(|i| sources.contains(&i.app_guid))
            .map(|i| (i.guid.clone(), i.app_guid.clone()))
            .collect();
        Access {
            revision: view.revision,
            instance: inst.guid.clone(),
            client_identity: app.map(|a| a.client_identity).unwrap_or_default(),
            proxy_protocol: app.map(|a| a.proxy_protocol).unwrap_or_default(),
            app_protocol: app.map(|a| a.app_protocol).unwrap_or_default(),
            callers,
            allowed,
        }
    }

    /// The verdict on a caller whose certificate names instance `instance` of app `app`.
    pub fn verdict(&self, instance: &str, app: &str) -> Verdict {
        match self.callers.get(instance) {
            Some(a) if a.as_str() == app => {
                if self.allowed.contains(a) {
                    Verdict::Allowed
                } else {
                    Verdict::NoPolicy
                }
            }
            _ => Verdict::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{net::PortRange, App, Policy};

    fn app(g: &str, ci: ClientIdentity) -> App {
        App {
            guid: g.into(),
            name: g.into(),
            tag: 1,
            space: String::new(),
            client_identity: ci,
            proxy_protocol: ProxyProtocol::Off,
            app_protocol: AppProtocol::Http1,
        }
    }

    fn inst(g: &str, app: &str) -> Instance {
        Instance {
            guid: g.into(),
            app_guid: app.into(),
            index: 0,
            cell: "cell1".parse().unwrap(),
            ip: "10.255.1.2".parse().unwrap(),
        }
    }

    fn policy(src: &str, dst: &str, proto: Protocol, start: u16, end: u16) -> Policy {
        Policy {
            source: src.into(),
            destination: dst.into(),
            protocol: proto,
            ports: PortRange::new(start, end).unwrap(),
        }
    }

    #[test]
    fn app_protocols_parse_in_any_order_and_name_their_alpn() {
        for (s, p, alpn) in [
            ("http1", AppProtocol::Http1, &[][..]),
            ("http2", AppProtocol::Http2, &[&b"h2"[..]][..]),
            (
                "http1,http2",
                AppProtocol::Both,
                &[&b"h2"[..], &b"http/1.1"[..]][..],
            ),
            (
                "http2,http1",
                AppProtocol::Both,
                &[&b"h2"[..], &b"http/1.1"[..]][..],
            ),
        ] {
            let parsed: AppProtocol = s.parse().unwrap();
            assert_eq!(parsed, p);
            assert_eq!(parsed.alpn(), alpn);
            assert_eq!(parsed.to_string().parse::<AppProtocol>().unwrap(), p);
        }
        for bad in ["", "h2", "http3", "http1,,http2"] {
            assert!(bad.parse::<AppProtocol>().is_err(), "{bad}");
        }
        // As the API and the access file carry it.
        assert_eq!(
            serde_json::to_string(&AppProtocol::Both).unwrap(),
            "\"http1,http2\""
        );
    }

    #[test]
    fn only_a_live_instance_of_an_app_with_a_tcp_61443_policy_is_allowed() {
        let view = CellView {
            revision: Revision(7),
            leases: vec![],
            apps: vec![
                app("a", ClientIdentity::Off),
                app("b", ClientIdentity::Required),
                app("c", ClientIdentity::Off),
                app("d", ClientIdentity::Off),
            ],
            instances: vec![
                inst("a0", "a"),
                inst("b0", "b"),
                inst("c0", "c"),
                inst("d0", "d"),
            ],
            policies: vec![
                policy("a", "b", Protocol::Tcp, 8080, 61443),
                // c may reach b, but not on 61443; d only over UDP.
                policy("c", "b", Protocol::Tcp, 8080, 8080),
                policy("d", "b", Protocol::Udp, 61443, 61443),
                // A policy from b elsewhere says nothing about callers of b.
                policy("b", "a", Protocol::Tcp, 61443, 61443),
            ],
            routes: vec![],
            domains: vec![],
            egress: Default::default(),
            probes: vec![],
            unchanged: vec![],
        };
        let acc = Access::for_instance(&view, &inst("b0", "b"));
        assert_eq!(acc.client_identity, ClientIdentity::Required);
        assert_eq!(acc.revision, Revision(7));
        assert_eq!(acc.verdict("a0", "a"), Verdict::Allowed);
        assert_eq!(acc.verdict("c0", "c"), Verdict::NoPolicy);
        assert_eq!(acc.verdict("d0", "d"), Verdict::NoPolicy);
        // An instance naming another app than its own, or one no longer live.
        assert_eq!(acc.verdict("a0", "c"), Verdict::Unknown);
        assert_eq!(acc.verdict("a9", "a"), Verdict::Unknown);
        assert_eq!(acc.verdict("b0", "b"), Verdict::Unknown);
        // a's sidecar: b may call it, nobody requires anything.
        let acc_a = Access::for_instance(&view, &inst("a0", "a"));
        assert_eq!(acc_a.client_identity, ClientIdentity::Off);
        assert_eq!(acc_a.verdict("b0", "b"), Verdict::Allowed);
    }
}
