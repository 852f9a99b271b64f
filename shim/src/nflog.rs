//! Traffic logs from the kernel: nftables `log group N` rules hand packets to nfnetlink_log,
//! and this reads them over a netlink socket (`NETLINK_NETFILTER`, the NFLOG subsystem) rather
//! than scraping the kernel log. [`parse`] is pure; [`Reader`] owns the socket.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

/// The NFLOG group our rules log to (per network namespace, so per cell).
pub const GROUP: u16 = 4789;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_PF_BIND: u8 = 3;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_MARK: u16 = 2;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const AF_INET: u8 = 2;
/// Bytes of each packet copied to us: the IPv4 and transport headers are all we read.
const COPY_RANGE: u32 = 64;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The rule's prefix (what it logged: `c2c-accept`, `c2c-deny`, ...), trimmed.
    pub prefix: String,
    /// When the kernel saw it (or when it was read, if the kernel gave no time).
    pub time: SystemTime,
    /// Its mark (the source app's tag on c2c traffic).
    pub mark: u32,
    /// Source address.
    pub source: Ipv4Addr,
    /// Destination address.
    pub destination: Ipv4Addr,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port (TCP and UDP).
    pub source_port: Option<u16>,
    /// Destination port (TCP and UDP); for ICMP, type and code as `type << 8 | code`.
    pub destination_port: Option<u16>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// A config message for `group` (0 with PF_BIND), with its attributes.
fn config(seq: u32, family: u8, group: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&group.to_be_bytes());
    for (k, v) in attrs {
        attr(&mut body, *k, v);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// The netlink messages in `buf`: (type, payload after the 16-byte header).
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = vec![];
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        out.push((kind, &buf[at + 16..at + len]));
        at += align4(len);
    }
    out
}

/// The packets logged in a buffer read from the socket (pure). Anything malformed is skipped.
pub fn parse(buf: &[u8]) -> Vec<Logged> {
    let mut out = vec![];
    for (kind, body) in messages(buf) {
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET || body.len() < 4 {
            continue;
        }
        let (mut prefix, mut mark, mut time, mut payload) = (String::new(), 0, None, None);
        let mut at = 4;
        while at + 4 <= body.len() {
            let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
            let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
            if len < 4 || at + len > body.len() {
                break;
            }
            let v = &body[at + 4..at + len];
            match kind {
                NFULA_PREFIX => {
                    prefix = String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .trim()
                        .to_string()
                }
                NFULA_MARK if v.len() == 4 => mark = u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                NFULA_TIMESTAMP if v.len() == 16 => {
                    let secs = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                    let usecs = u64::from_be_bytes(v[8..].try_into().unwrap_or_default());
                    time =
                        Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(usecs));
                }
                NFULA_PAYLOAD => payload = Some(v),
                _ => {}
            }
            at += align4(len);
        }
        let Some(ip) = payload else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let protocol = ip[9];
        let l4 = ip.get(ihl..).unwrap_or_default();
        let (source_port, destination_port) = match protocol {
            6 | 17 if l4.len() >= 4 => (
                Some(u16::from_be_bytes([l4[0], l4[1]])),
                Some(u16::from_be_bytes([l4[2], l4[3]])),
            ),
            1 if l4.len() >= 2 => (None, Some(u16::from_be_bytes([l4[0], l4[1]]))),
            _ => (None, None),
        };
        out.push(Logged {
            prefix,
            time: time.unwrap_or_else(SystemTime::now),
            mark,
            source: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            destination: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            protocol,
            source_port,
            destination_port,
        });
    }
    out
}

/// A socket bound to one NFLOG group of the calling thread's network namespace.
pub struct Reader {
    sock: Socket,
}

impl Reader {
    /// Binds `group`, asking for the first bytes of each packet.
    pub fn bind(group: u16) -> std::io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // Logs come in bursts; a full buffer drops them (ENOBUFS), never blocks the kernel.
        let _ = sock.set_rx_buf_sz(1 << 20);
        let r = Reader { sock };
        r.request(
            1,
            AF_INET,
            0,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_PF_BIND])],
        )?;
        r.request(
            2,
            AF_INET,
            group,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])],
        )?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        r.request(3, AF_INET, group, &[(NFULA_CFG_MODE, mode)])?;
        Ok(r)
    }

    /// Sends a config request and reads its acknowledgement.
    fn request(
        &self,
        seq: u32,
        family: u8,
        group: u16,
        attrs: &[(u16, Vec<u8>)],
    ) -> std::io::Result<()> {
        self.sock.send(&config(seq, family, group, attrs), 0)?;
        let (buf, _) = self.sock.recv_from_full()?;
        for (kind, body) in messages(&buf) {
            if kind == NLMSG_ERROR && body.len() >= 4 {
                let code = i32::from_ne_bytes(body[..4].try_into().unwrap_or_default());
                if code != 0 {
                    return Err(std::io::Error::from_raw_os_error(-code));
                }
            }
        }
        Ok(())
    }

    /// Blocks until the kernel hands over logged packets, and returns them.
    pub fn next(&self) -> std::io::Result<Vec<Logged>> {
        let (buf, _) = self.sock.recv_from_full()?;
        Ok(parse(&buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message as the kernel sends it: prefix, mark, timestamp, then the payload.
    fn packet(prefix: &str, mark: u32, ip: &[u8]) -> Vec<u8> {
        let mut body = vec![AF_INET, 0, 0x12, 0xb5];
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        attr(&mut body, NFULA_PREFIX, &p);
        attr(&mut body, NFULA_MARK, &mark.to_be_bytes());
        let mut ts = 1_700_000_000u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250_000u64.to_be_bytes());
        attr(&mut body, NFULA_TIMESTAMP, &ts);
        attr(&mut body, NFULA_PAYLOAD, ip);
        let mut msg = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&body);
        msg
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(l4);
        ip
    }

    #[test]
    fn parses_packets_with_addresses_ports_and_prefix() {
        let mut buf = packet(
            "c2c-deny ",
            0x2,
            &ipv4(
                6,
                [10, 255, 1, 2],
                [10, 255, 2, 3],
                &[0x9c, 0x40, 0x1f, 0x90],
            ),
        );
        buf.extend(packet(
            "egress-deny",
            0,
            &ipv4(1, [10, 255, 1, 2], [192, 0, 2, 200], &[8, 0]),
        ));
        // Truncated and foreign messages are skipped.
        buf.extend_from_slice(&[0xff; 7]);
        let got = parse(&buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].prefix, "c2c-deny");
        assert_eq!(got[0].mark, 2);
        assert_eq!(got[0].source, Ipv4Addr::new(10, 255, 1, 2));
        assert_eq!(got[0].destination, Ipv4Addr::new(10, 255, 2, 3));
        assert_eq!(
            (got[0].protocol, got[0].source_port, got[0].destination_port),
            (6, Some(40000), Some(8080))
        );
        assert_eq!(
            got[0].time,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(
            (got[1].protocol, got[1].destination_port),
            (1, Some(0x0800))
        );
        assert!(parse(&[1, 2, 3]).is_empty());
    }
}
