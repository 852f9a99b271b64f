//! The cell's DNS for internal domains, as Cloud Foundry's bosh-dns adapter answers them:
//! `<host>.<domain>` -> A records of every instance of the apps mapped to that route (shuffled),
//! `<index>.<host>.<domain>` -> that instance, an unknown name in an internal domain ->
//! NXDOMAIN, TTL 0. Other names go to the upstream resolvers, or are refused if there are none.
//! Answers come from memory: a [`Zone`] rebuilt from control's watch, swapped in whole.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use c2c_api::CellView;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

/// The names a cell answers for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// Internal domains, lower case, no trailing dot.
    pub domains: BTreeSet<String>,
    /// Name -> addresses.
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
}

/// The zone for a view of the platform (pure).
pub fn zone(view: &CellView) -> Zone {
    let mut z = Zone {
        domains: view
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        names: BTreeMap::new(),
    };
    for r in &view.routes {
        let fqdn = r.fqdn().to_ascii_lowercase();
        let mut ips = vec![];
        for i in view.instances.iter().filter(|i| i.app_guid == r.app_guid) {
            ips.push(i.ip);
            z.names
                .entry(format!("{}.{fqdn}", i.index))
                .or_default()
                .push(i.ip);
        }
        z.names.entry(fqdn).or_default().extend(ips);
    }
    for ips in z.names.values_mut() {
        ips.sort();
        ips.dedup();
    }
    z
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Answer with these addresses (none: the name exists, but has no record of that type).
    Records(Vec<Ipv4Addr>),
    /// The name is in an internal domain and does not exist.
    NxDomain,
    /// Not ours: forward it (or refuse when there is no upstream).
    NotOurs,
}

/// Answers `name` (any case, with or without the trailing dot) for `qtype` (pure).
pub fn answer(z: &Zone, name: &str, qtype: RecordType) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ours = z
        .domains
        .iter()
        .any(|d| name == *d || name.ends_with(&format!(".{d}")));
    if !ours {
        return Answer::NotOurs;
    }
    match z.names.get(&name) {
        None if z.domains.contains(&name) => Answer::Records(vec![]),
        None => Answer::NxDomain,
        Some(_) if !matches!(qtype, RecordType::A | RecordType::ANY) => Answer::Records(vec![]),
        Some(ips) => Answer::Records(ips.clone()),
    }
}

/// Shuffles in place (Fisher-Yates) with a per-process random seed: crude load balancing
/// across instances, as CF does.
fn shuffle(ips: &mut [Ipv4Addr], salt: u64) {
    let mut x = std::collections::hash_map::RandomState::new().build_hasher();
    x.write_u64(salt);
    let mut s = x.finish() | 1;
    for i in (1..ips.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ips.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// Builds the reply to a query packet, or `None` if it must go upstream (pure apart from the
/// shuffle). Malformed packets get FORMERR when their id can be read, else nothing.
pub fn reply(z: &Zone, packet: &[u8], have_upstream: bool, salt: u64) -> Option<Vec<u8>> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) if packet.len() >= 2 => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
        Err(_) => return None,
    };
    let id = req.metadata.id;
    let Some(q) = req.queries.first().cloned() else {
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            .to_vec()
            .ok();
    };
    let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(q.clone());
    match answer(z, &q.name().to_ascii(), q.query_type()) {
        Answer::NotOurs if have_upstream => return None,
        Answer::NotOurs => resp.metadata.response_code = ResponseCode::Refused,
        Answer::NxDomain => {
            resp.metadata.authoritative = true;
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        Answer::Records(mut ips) => {
            resp.metadata.authoritative = true;
            shuffle(&mut ips, salt);
            for ip in ips {
                // TTL 0, as CF: clients ask again and see instances come and go at once.
                resp.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(ip))));
            }
        }
    }
    resp.to_vec().ok()
}

/// Serves DNS on `socket` from the zone in `zone` until the task is dropped. Queries for other
/// names are relayed to the first answering of `upstreams`.
pub async fn serve(
    socket: UdpSocket,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    let mut salt: u64 = 0;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(error) => {
                warn!(%error, "dns receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        salt = salt.wrapping_add(1);
        let z = zone.borrow().clone();
        match reply(&z, &buf[..n], !upstreams.is_empty(), salt) {
            Some(out) => {
                let _ = socket.send_to(&out, peer).await;
            }
            None => {
                let (sock, query, ups) = (socket.clone(), buf[..n].to_vec(), upstreams.clone());
                tokio::spawn(async move {
                    match forward(&query, &ups).await {
                        Some(out) => {
                            let _ = sock.send_to(&out, peer).await;
                        }
                        None => debug!(%peer, "no upstream answered"),
                    }
                });
            }
        }
    }
}

async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind).await else {
            continue;
        };
        if s.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// A query packet for `name` (for tests and health checks).
pub fn query_packet(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    if let Ok(n) = Name::from_ascii(name) {
        m.add_query(hickory_proto::op::Query::query(n, qtype));
    }
    m.to_vec().unwrap_or_default()
}

/// The addresses and response code of a reply packet (for tests and clients).
pub fn parse_reply(packet: &[u8]) -> Option<(ResponseCode, Vec<Ipv4Addr>, Vec<u32>)> {
    let m = Message::from_vec(packet).ok()?;
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    let ttls = m.answers.iter().map(|r| r.ttl).collect();
    Some((m.metadata.response_code, ips, ttls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::{Instance, Route};

    fn view() -> CellView {
        let inst = |g: &str, app: &str, index: u32, ip: &str| Instance {
            guid: g.into(),
            app_guid: app.into(),
            index,
            cell: "c".into(),
            ip: ip.parse().unwrap(),
        };
        CellView {
            revision: 1,
            leases: vec![],
            apps: vec![],
            policies: vec![],
            instances: vec![
                inst("b0", "B", 0, "10.255.1.2"),
                inst("b1", "B", 1, "10.255.2.2"),
                inst("c0", "C", 0, "10.255.1.3"),
            ],
            routes: vec![Route {
                host: "appb".into(),
                domain: "apps.internal".into(),
                app_guid: "B".into(),
            }],
            domains: vec!["apps.internal".into()],
        }
    }

    #[test]
    fn names_of_routes_and_instances() {
        let z = zone(&view());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            answer(&z, "AppB.apps.internal.", RecordType::A),
            Answer::Records(vec![ip("10.255.1.2"), ip("10.255.2.2")])
        );
        assert_eq!(
            answer(&z, "1.appb.apps.internal", RecordType::A),
            Answer::Records(vec![ip("10.255.2.2")])
        );
        assert_eq!(
            answer(&z, "appc.apps.internal", RecordType::A),
            Answer::NxDomain,
            "appC has no route"
        );
        assert_eq!(
            answer(&z, "appb.apps.internal", RecordType::AAAA),
            Answer::Records(vec![])
        );
        assert_eq!(answer(&z, "example.com", RecordType::A), Answer::NotOurs);
        assert_eq!(
            answer(&z, "apps.internal", RecordType::A),
            Answer::Records(vec![])
        );
    }

    #[test]
    fn packets_round_trip_with_ttl_zero_and_refusal_without_upstream() {
        let z = zone(&view());
        let out = reply(
            &z,
            &query_packet(7, "appb.apps.internal.", RecordType::A),
            false,
            1,
        )
        .unwrap();
        let (code, mut ips, ttls) = parse_reply(&out).unwrap();
        ips.sort();
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(ips.len(), 2);
        assert!(ttls.iter().all(|t| *t == 0));
        let (code, ips, _) = parse_reply(
            &reply(
                &z,
                &query_packet(8, "nope.apps.internal.", RecordType::A),
                false,
                1,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!((code, ips.len()), (ResponseCode::NXDomain, 0));
        let (code, _, _) = parse_reply(
            &reply(
                &z,
                &query_packet(9, "example.com.", RecordType::A),
                false,
                1,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(code, ResponseCode::Refused);
        assert!(
            reply(&z, &query_packet(9, "example.com.", RecordType::A), true, 1).is_none(),
            "forwarded when an upstream exists"
        );
        let (code, _, _) = parse_reply(&reply(&z, &[0, 5, 1, 2, 3], false, 1).unwrap()).unwrap();
        assert_eq!(code, ResponseCode::FormErr);
    }

    #[test]
    fn shuffle_spreads_the_first_answer() {
        let z = zone(&view());
        let firsts: BTreeSet<Ipv4Addr> = (0..64)
            .map(|salt| {
                parse_reply(
                    &reply(
                        &z,
                        &query_packet(1, "appb.apps.internal.", RecordType::A),
                        false,
                        salt,
                    )
                    .unwrap(),
                )
                .unwrap()
                .1[0]
            })
            .collect();
        assert_eq!(firsts.len(), 2, "both instances come first sometimes");
    }
}
