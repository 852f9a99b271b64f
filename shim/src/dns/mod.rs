//! The cell's DNS for internal domains, as Cloud Foundry's bosh-dns adapter answers them:
//! `<host>.<domain>` -> A records of every instance of the apps mapped to that route (shuffled),
//! `<index>.<host>.<domain>` -> that instance, an unknown name in an internal domain ->
//! NXDOMAIN, TTL 0. Other names go to the upstream resolvers, or are refused if there are none.
//! Answers come from memory: a [`Zone`] rebuilt from control's watch, swapped in whole.
//!
//! Over UDP a reply fits the client's limit (512 bytes, or its EDNS payload size up to 1232);
//! one that does not is truncated with TC set, and the client asks again over TCP, which is
//! served on the same address (an app with more than ~28 instances needs it).
//!
//! `server` serves it (UDP with batched syscalls, TCP, the query counts for metrics);
//! `upstream` relays other names within a budget.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;

use c2c_api::CellView;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

mod server;
mod upstream;
pub use server::*;
pub use upstream::*;

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
    match lookup(z, &name, matches!(qtype, RecordType::A | RecordType::ANY)) {
        Found::Records(ips) => Answer::Records(ips.to_vec()),
        Found::NxDomain => Answer::NxDomain,
        Found::NotOurs => Answer::NotOurs,
    }
}

/// [`answer`] without allocating: `name` is lower case without the trailing dot; `a` says
/// whether the question asks for A records (A or ANY).
enum Found<'a> {
    Records(&'a [Ipv4Addr]),
    NxDomain,
    NotOurs,
}

fn lookup<'a>(z: &'a Zone, name: &str, a: bool) -> Found<'a> {
    let ours = z.domains.iter().any(|d| {
        name == d
            || (name.len() > d.len()
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.')
    });
    if !ours {
        return Found::NotOurs;
    }
    match z.names.get(name) {
        None if z.domains.contains(name) => Found::Records(&[]),
        None => Found::NxDomain,
        Some(_) if !a => Found::Records(&[]),
        Some(ips) => Found::Records(ips),
    }
}

/// What [`reply_fast`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// The answer is in the output buffer.
    Answered,
    /// Not an internal name: relay it upstream.
    Upstream,
    /// Not the common case: give it to [`reply`].
    Slow,
}

/// Most queries are one question for an A record, with or without a plain EDNS OPT record:
/// such a packet is answered here straight from its bytes into `out` (reused across queries),
/// without parsing it into messages or allocating, byte for byte what [`reply`] answers (a
/// unit test holds the two to that). Anything else, or an answer that would need truncating,
/// is [`Fast::Slow`].
pub fn reply_fast(
    z: &Zone,
    packet: &[u8],
    have_upstream: bool,
    salt: u64,
    out: &mut Vec<u8>,
) -> Fast {
    let p = packet;
    let be16 = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    // A query (QR=0) with opcode QUERY, one question, no answers or authority, at most an OPT.
    if p.len() < 17 || p[2] & 0xf8 != 0 || be16(4) != 1 || be16(6) != 0 || be16(8) != 0 {
        return Fast::Slow;
    }
    let additional = be16(10);
    if additional > 1 {
        return Fast::Slow;
    }
    // The name: plain labels of letters, digits, '-' and '_' (no compression in a question),
    // lower-cased into `name` with dots between labels.
    let mut name = [0u8; 255];
    let (mut len, mut i) = (0usize, 12usize);
    loop {
        let Some(&l) = p.get(i) else {
            return Fast::Slow;
        };
        let l = usize::from(l);
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 || i + l > p.len() || len + l + 1 > name.len() {
            return Fast::Slow;
        }
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &c in &p[i..i + l] {
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                return Fast::Slow;
            }
            name[len] = c.to_ascii_lowercase();
            len += 1;
        }
        i += l;
    }
    let question_end = i + 4;
    if question_end > p.len() || be16(i + 2) != 1 {
        return Fast::Slow;
    }
    let qtype = be16(i);
    // The client's UDP limit: 512, or its EDNS payload size (at least 512), at most ours.
    let (edns, limit) = if additional == 1 {
        // OPT: root name, type 41, class = payload size, extended rcode 0, version 0, no data.
        let o = question_end;
        if p.len() != o + 11 || p[o] != 0 || be16(o + 1) != 41 || p[o + 5] != 0 || p[o + 6] != 0 {
            return Fast::Slow;
        }
        if be16(o + 9) != 0 {
            return Fast::Slow;
        }
        (true, be16(o + 3).clamp(512, EDNS_PAYLOAD))
    } else if p.len() != question_end {
        return Fast::Slow;
    } else {
        (false, 512)
    };
    let Ok(name) = std::str::from_utf8(&name[..len]) else {
        return Fast::Slow;
    };
    // 1 = A, 255 = ANY.
    let found = lookup(z, name, qtype == 1 || qtype == 255);
    let (rcode, aa, ips): (u8, bool, &[Ipv4Addr]) = match found {
        Found::NotOurs if have_upstream => return Fast::Upstream,
        Found::NotOurs => (5, false, &[]),
        Found::NxDomain => (3, true, &[]),
        Found::Records(ips) => (0, true, ips),
    };
    let size = question_end + 16 * ips.len() + if edns { 11 } else { 0 };
    if size > usize::from(limit) || ips.len() > 64 {
        return Fast::Slow;
    }
    let mut shuffled = [Ipv4Addr::UNSPECIFIED; 64];
    let shuffled = &mut shuffled[..ips.len()];
    shuffled.copy_from_slice(ips);
    shuffle(shuffled, salt);
    out.clear();
    out.extend_from_slice(&p[..2]);
    // QR, opcode QUERY, AA, RD as asked; RA when this server recurses; the rcode.
    out.push(0x80 | if aa { 0x04 } else { 0 } | (p[2] & 0x01));
    out.push(if have_upstream { 0x80 } else { 0 } | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(&p[12..question_end]);
    for ip in shuffled.iter() {
        // The question's name (a pointer to offset 12), A, IN, TTL 0, 4 bytes.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    if edns {
        let [hi, lo] = EDNS_PAYLOAD.to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0, 0, 0, 0, 0]);
    }
    Fast::Answered
}

/// Shuffles in place (Fisher-Yates) with a per-process random seed: crude load balancing
/// across instances, as CF does.
fn shuffle(ips: &mut [Ipv4Addr], salt: u64) {
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut x = SEED.get_or_init(Default::default).build_hasher();
    x.write_u64(salt);
    let mut s = x.finish() | 1;
    for i in (1..ips.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ips.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// The transport a query came over, which bounds the reply's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the client's EDNS payload size up to [`EDNS_PAYLOAD`].
    Udp,
    /// TCP: up to 65,535 bytes.
    Tcp,
}

/// The EDNS payload size we offer and honour at most over UDP (DNS flag day 2020: no fragments).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a packet that came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this answer back.
    Answer(Vec<u8>),
    /// Not an internal name: relay it to an upstream resolver.
    Upstream,
    /// Send nothing: a response (QR=1) is never answered, so two resolvers cannot be made to
    /// bounce packets at each other, and a packet too short to hold an id gets nothing.
    Ignore,
}

impl Reply {
    /// The answer, if there is one to send.
    pub fn answer(self) -> Option<Vec<u8>> {
        match self {
            Reply::Answer(a) => Some(a),
            _ => None,
        }
    }
}

fn error_reply(id: u16, op: OpCode, code: ResponseCode) -> Reply {
    Message::error_msg(id, op, code)
        .to_vec()
        .map_or(Reply::Ignore, Reply::Answer)
}

/// Decides what a packet gets (pure apart from the shuffle). Malformed queries get FORMERR when
/// their id can be read; opcodes other than QUERY get NOTIMP; responses get nothing.
pub fn reply(
    z: &Zone,
    packet: &[u8],
    have_upstream: bool,
    salt: u64,
    transport: Transport,
) -> Reply {
    if packet.len() < 3 || packet[2] & 0x80 != 0 {
        return Reply::Ignore;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            return error_reply(id, OpCode::Query, ResponseCode::FormErr);
        }
    };
    let id = req.metadata.id;
    if req.metadata.message_type != MessageType::Query {
        return Reply::Ignore;
    }
    if req.metadata.op_code != OpCode::Query {
        return error_reply(id, req.metadata.op_code, ResponseCode::NotImp);
    }
    let Some(q) = req.queries.first().cloned() else {
        return error_reply(id, OpCode::Query, ResponseCode::FormErr);
    };
    let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    // With an upstream, this server recurses for names outside the internal domains.
    resp.metadata.recursion_available = have_upstream;
    resp.add_query(q.clone());
    match answer(z, &q.name().to_ascii(), q.query_type()) {
        Answer::NotOurs if have_upstream => return Reply::Upstream,
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
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    let limit = match transport {
        Transport::Udp => usize::from(req.max_payload().min(EDNS_PAYLOAD)),
        Transport::Tcp => usize::from(u16::MAX),
    };
    fit(resp, limit).map_or(Reply::Ignore, Reply::Answer)
}

/// Encodes `resp` in at most `limit` bytes: whole if it fits, else with TC set and as many
/// answers as fit (the client retries over TCP for all of them). Record sizes vary with name
/// compression, so the count is found by bisection.
fn fit(mut resp: Message, limit: usize) -> Option<Vec<u8>> {
    let out = resp.to_vec().ok()?;
    if out.len() <= limit {
        return Some(out);
    }
    resp.metadata.truncation = true;
    let answers = std::mem::take(&mut resp.answers);
    let encoded = |resp: &mut Message, n: usize| {
        resp.answers = answers[..n].to_vec();
        resp.to_vec().ok()
    };
    // Invariant: `lo` answers fit, `hi` do not.
    let (mut lo, mut hi) = (0, answers.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if encoded(&mut resp, mid)?.len() <= limit {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    encoded(&mut resp, lo)
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
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream, UdpSocket};
    use tokio::sync::watch;

    fn reply_udp(z: &Zone, packet: &[u8], have_upstream: bool, salt: u64) -> Option<Vec<u8>> {
        reply(z, packet, have_upstream, salt, Transport::Udp).answer()
    }

    /// A view with one route to an app of `n` instances.
    fn big_view(n: u32) -> CellView {
        let mut v = view();
        v.instances = (0..n)
            .map(|i| Instance {
                guid: format!("b{i}"),
                app_guid: "B".into(),
                index: i,
                cell: "c".parse().unwrap(),
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 255, 0, 1)) + i),
            })
            .collect();
        v
    }

    #[test]
    fn big_answers_truncate_over_udp_and_come_whole_over_tcp() {
        let z = zone(&big_view(200));
        let plain = query_packet(3, "appb.apps.internal.", RecordType::A);
        let mut with_edns = Message::from_vec(&plain).unwrap();
        let mut e = Edns::new();
        e.set_max_payload(4096);
        with_edns.set_edns(e);
        let with_edns = with_edns.to_vec().unwrap();
        for (packet, transport, limit, whole) in [
            (&plain, Transport::Udp, 512, false),
            (&with_edns, Transport::Udp, usize::from(EDNS_PAYLOAD), false),
            (&plain, Transport::Tcp, 65535, true),
        ] {
            let out = reply(&z, packet, false, 1, transport).answer().unwrap();
            assert!(out.len() <= limit, "{transport:?}: {} bytes", out.len());
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.truncation, !whole, "{transport:?}");
            assert_eq!(m.metadata.id, 3);
            let n = m.answers.len();
            if whole {
                assert_eq!(n, 200);
            } else {
                // As many as fit: one more would not.
                assert!(
                    n > 0 && out.len() + 16 > limit,
                    "{n} answers in {}",
                    out.len()
                );
            }
            assert_eq!(
                m.edns.is_some(),
                packet == &with_edns,
                "OPT echoed iff asked"
            );
        }
        // Small answers are untouched.
        let small = zone(&big_view(20));
        let out = reply(&small, &plain, false, 1, Transport::Udp)
            .answer()
            .unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 20);
    }

    /// The real listeners on loopback: a UDP client is told to retry, and TCP gives all.
    #[tokio::test]
    async fn tcp_listener_serves_what_udp_truncates() {
        let (_tx, rx) = watch::channel(Arc::new(zone(&big_view(100))));
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (uaddr, taddr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let servers = [
            tokio::spawn(serve(
                udp,
                rx.clone(),
                Upstreams::new(vec![], &Budget::default()),
            )),
            tokio::spawn(serve_tcp(
                tcp,
                rx,
                Upstreams::new(vec![], &Budget::default()),
                Budget::default(),
            )),
        ];
        let q = query_packet(11, "appb.apps.internal.", RecordType::A);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&q, uaddr).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let n = client.recv(&mut buf).await.unwrap();
        assert!(Message::from_vec(&buf[..n]).unwrap().metadata.truncation);
        let mut s = TcpStream::connect(taddr).await.unwrap();
        // Two queries on one connection.
        for id in [12, 13] {
            let q = query_packet(id, "appb.apps.internal.", RecordType::A);
            write_framed(&mut s, &q).await.unwrap();
            let out = read_framed(&mut s).await.unwrap().unwrap();
            let m = Message::from_vec(&out).unwrap();
            assert_eq!((m.metadata.id, m.metadata.truncation), (id, false));
            assert_eq!(parse_reply(&out).unwrap().1.len(), 100);
        }
        for t in servers {
            t.abort();
        }
    }

    fn view() -> CellView {
        let inst = |g: &str, app: &str, index: u32, ip: &str| Instance {
            guid: g.into(),
            app_guid: app.into(),
            index,
            cell: "c".parse().unwrap(),
            ip: ip.parse().unwrap(),
        };
        CellView {
            revision: c2c_api::Revision(1),
            egress: Default::default(),
            probes: vec![],
            unchanged: vec![],
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

    /// The fast path answers what the full parser answers, byte for byte, for every query it
    /// takes, and takes the common ones: names of every kind in any case, A, AAAA, ANY and TXT,
    /// with and without EDNS at various payload sizes, with and without an upstream.
    #[test]
    fn the_fast_path_answers_exactly_what_the_parser_answers() {
        let mut v = big_view(40);
        v.routes.push(Route {
            host: "appb".into(),
            domain: "apps.internal".into(),
            app_guid: "B".into(),
        });
        v.instances.extend(view().instances);
        let z = zone(&v);
        let names = [
            "appb.apps.internal",
            "APPB.Apps.Internal.",
            "1.appb.apps.internal",
            "big.apps.internal",
            "7.big.apps.internal",
            "apps.internal",
            "nope.apps.internal",
            "x.y.nope.apps.internal",
            "example.com",
            "internal",
            "under_score.apps.internal",
        ];
        let qtypes = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::ANY,
            RecordType::TXT,
        ];
        let (mut fast, mut total) = (0, 0);
        let mut out = vec![];
        for (k, name) in names.iter().enumerate() {
            for qtype in qtypes {
                for edns in [None, Some(100u16), Some(512), Some(1232), Some(4096)] {
                    for upstream in [false, true] {
                        let mut m =
                            Message::new(k as u16 * 7 + 1, MessageType::Query, OpCode::Query);
                        m.metadata.recursion_desired = k % 2 == 0;
                        m.add_query(hickory_proto::op::Query::query(
                            Name::from_ascii(name).unwrap(),
                            qtype,
                        ));
                        if let Some(size) = edns {
                            let mut e = Edns::new();
                            e.set_max_payload(size);
                            m.set_edns(e);
                        }
                        let q = m.to_vec().unwrap();
                        let salt = total as u64;
                        total += 1;
                        let slow = reply(&z, &q, upstream, salt, Transport::Udp);
                        match reply_fast(&z, &q, upstream, salt, &mut out) {
                            Fast::Answered => {
                                fast += 1;
                                assert_eq!(
                                    Reply::Answer(out.clone()),
                                    slow,
                                    "{name} {qtype} edns {edns:?} upstream {upstream}"
                                );
                            }
                            Fast::Upstream => assert_eq!(slow, Reply::Upstream, "{name}"),
                            Fast::Slow => {}
                        }
                    }
                }
            }
        }
        // Only the answers that need truncating (big's 40 records over a small limit) are slow.
        assert!(fast * 10 >= total * 8, "{fast} of {total} on the fast path");
        // Malformed, responses, other opcodes, two questions: never the fast path.
        let q = query_packet(9, "appb.apps.internal", RecordType::A);
        for bad in [
            q[..q.len() - 1].to_vec(),
            [&q[..], &[0]].concat(),
            {
                let mut r = q.clone();
                r[2] |= 0x80;
                r
            },
            {
                let mut r = q.clone();
                r[2] |= 0x10;
                r
            },
            {
                let mut r = q.clone();
                r[5] = 2;
                r
            },
        ] {
            assert_eq!(reply_fast(&z, &bad, false, 0, &mut out), Fast::Slow);
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
        let out = reply_udp(
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
            &reply_udp(
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
            &reply_udp(
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
            reply_udp(&z, &query_packet(9, "example.com.", RecordType::A), true, 1).is_none(),
            "forwarded when an upstream exists"
        );
        let (code, _, _) =
            parse_reply(&reply_udp(&z, &[0, 5, 1, 2, 3], false, 1).unwrap()).unwrap();
        assert_eq!(code, ResponseCode::FormErr);
    }

    #[test]
    fn shuffle_spreads_the_first_answer() {
        let z = zone(&view());
        let firsts: BTreeSet<Ipv4Addr> = (0..64)
            .map(|salt| {
                parse_reply(
                    &reply_udp(
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

    #[test]
    fn responses_are_ignored_and_other_opcodes_get_notimp() {
        let z = zone(&view());
        let q = query_packet(21, "appb.apps.internal.", RecordType::A);
        // Positive control: the query itself is answered.
        assert!(matches!(
            reply(&z, &q, true, 1, Transport::Udp),
            Reply::Answer(_)
        ));
        // The same packet with QR=1 (a response, e.g. reflected from another resolver).
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(reply(&z, &resp, true, 1, Transport::Udp), Reply::Ignore);
        // A NOTIFY (opcode 4) and an UPDATE (5): NOTIMP, not an answer for the name.
        for op in [4u8, 5] {
            let mut p = q.clone();
            p[2] = (p[2] & 0x87) | (op << 3);
            let out = reply(&z, &p, true, 1, Transport::Udp).answer().unwrap();
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NotImp,
                "opcode {op}"
            );
            assert!(m.answers.is_empty());
        }
        assert_eq!(reply(&z, &[0, 1], true, 1, Transport::Udp), Reply::Ignore);
    }

    fn answer_for(query: &[u8], ip: [u8; 4], id: Option<u16>) -> Vec<u8> {
        let mut m = Message::from_vec(query).unwrap();
        m.metadata.message_type = MessageType::Response;
        if let Some(id) = id {
            m.metadata.id = id;
        }
        let name = m.queries[0].name().clone();
        m.add_answer(Record::from_rdata(name, 60, RData::A(A(ip.into()))));
        m.to_vec().unwrap()
    }

    /// The relay histogram's count and sum, as a scrape reads them.
    fn relay_timed() -> (u64, f64) {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("relay_seconds", "", RELAY_SECONDS.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let value = |suffix: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("relay_seconds_{suffix} ")))
                .unwrap()
                .parse()
                .unwrap()
        };
        (value("count") as u64, value("sum"))
    }

    #[tokio::test]
    async fn upstream_answers_count_only_from_the_upstream_with_the_query_id() {
        let upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let spoofer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, client) = upstream.recv_from(&mut buf).unwrap();
            let q = buf[..n].to_vec();
            // Off-path: the right id from the wrong address; on-path but the wrong id.
            spoofer
                .send_to(&answer_for(&q, [6, 6, 6, 6], None), client)
                .unwrap();
            let wrong_id = u16::from_be_bytes([q[0], q[1]]).wrapping_add(1);
            upstream
                .send_to(&answer_for(&q, [7, 7, 7, 7], Some(wrong_id)), client)
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            upstream
                .send_to(&answer_for(&q, [1, 2, 3, 4], None), client)
                .unwrap();
        });
        let ups = Upstreams::new(vec![up_addr], &Budget::default());
        let q = query_packet(31, "example.org.", RecordType::A);
        let before = relay_timed();
        let out = ups.relay(&q, false).await.unwrap();
        fake.join().unwrap();
        // Timed: the upstream answered after 50 ms (other tests may relay meanwhile: at least).
        let after = relay_timed();
        assert!(after.0 > before.0, "{before:?} {after:?}");
        assert!(after.1 >= before.1 + 0.05, "{before:?} {after:?}");
        let (code, ips, _) = parse_reply(&out).unwrap();
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            ips,
            [Ipv4Addr::new(1, 2, 3, 4)],
            "only the matching reply counts"
        );
    }

    #[tokio::test]
    async fn relaying_is_bounded_and_a_silent_upstream_costs_one_timeout() {
        // An upstream that never answers holds the only slot: the next query gets SERVFAIL at
        // once instead of piling up tasks and sockets.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let budget = Budget {
            upstream_in_flight: 1,
            upstream_timeout: Duration::from_millis(500),
            ..Budget::default()
        };
        let ups = Upstreams::new(vec![silent.local_addr().unwrap()], &budget);
        let first = tokio::spawn({
            let ups = ups.clone();
            async move {
                ups.relay(&query_packet(1, "a.example.", RecordType::A), false)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = ups
            .relay(&query_packet(2, "b.example.", RecordType::A), false)
            .await
            .unwrap();
        assert!(
            !first.is_finished(),
            "the first is still waiting on its upstream"
        );
        assert_eq!(parse_reply(&second).unwrap().0, ResponseCode::ServFail);
        let first = first.await.unwrap().unwrap();
        assert_eq!(parse_reply(&first).unwrap().0, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn one_client_address_cannot_hold_every_tcp_slot() {
        // Issue #23: one container holding 520 idle TCP connections denied TCP DNS to its
        // whole cell. A client address holds its share; another is served beside it.
        let (_tx, rx) = watch::channel(Arc::new(zone(&big_view(3))));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let budget = Budget {
            tcp_connections: 8,
            tcp_per_source: 3,
            ..Budget::default()
        };
        let server = tokio::spawn(serve_tcp(tcp, rx, Upstreams::new(vec![], &budget), budget));
        let from = |ip: &str| {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
            sock.connect(addr)
        };
        let ask = |mut s: TcpStream, id: u16| async move {
            let q = query_packet(id, "appb.apps.internal.", RecordType::A);
            write_framed(&mut s, &q).await.ok()?;
            let out = read_framed(&mut s).await.ok()??;
            Some((s, out))
        };
        let mut held = vec![];
        for id in 0..3 {
            let (s, out) = ask(from("127.0.0.2").await.unwrap(), id).await.unwrap();
            assert_eq!(parse_reply(&out).unwrap().1.len(), 3);
            held.push(s);
        }
        // The fourth from that address is closed unanswered.
        assert!(ask(from("127.0.0.2").await.unwrap(), 9).await.is_none());
        // Positive control: another address is served while the first holds its share.
        let (_s, out) = ask(from("127.0.0.3").await.unwrap(), 10).await.unwrap();
        assert_eq!(parse_reply(&out).unwrap().1.len(), 3);
        // A connection given back is that address's again.
        drop(held.pop());
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(x) = ask(from("127.0.0.2").await.unwrap(), 11).await {
                    return x;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the freed share never came back");
        assert_eq!(parse_reply(&again.1).unwrap().1.len(), 3);
        server.abort();
    }

    #[tokio::test]
    async fn a_tcp_client_that_never_reads_does_not_keep_its_slot() {
        let (_tx, rx) = watch::channel(Arc::new(zone(&big_view(100))));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let budget = Budget {
            tcp_connections: 1,
            tcp_write: Duration::from_millis(300),
            ..Budget::default()
        };
        let server = tokio::spawn(serve_tcp(tcp, rx, Upstreams::new(vec![], &budget), budget));
        // The attacker: a tiny receive window, thousands of queries for a big answer, and
        // never a read, so the server's writes block.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let attacker = sock.connect(addr).await.unwrap();
        let (_r, mut w) = attacker.into_split();
        let flood = tokio::spawn(async move {
            let q = query_packet(5, "appb.apps.internal.", RecordType::A);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            for _ in 0..5000 {
                if w.write_all(&framed).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        // Positive control: another client is served once the write timeout freed the slot.
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let q = query_packet(6, "appb.apps.internal.", RecordType::A);
                write_framed(&mut s, &q).await.unwrap();
                if let Ok(Some(out)) = read_framed(&mut s).await {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the slot stayed with a client that never reads");
        assert_eq!(parse_reply(&served).unwrap().1.len(), 100);
        flood.abort();
        server.abort();
    }
}
