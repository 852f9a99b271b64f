//! The PROXY protocol version 2 header (HAProxy's published spec, binary form) the sidecar sends
//! an app that asked for it (`c2c update-app APP --proxy-protocol v2`) before each connection's
//! bytes: the caller's address and port as source, the sidecar's as destination, and, when the
//! caller presented a known instance identity, a `PP2_TYPE_SSL` TLV with the certificate's CN
//! and a TLV of type [`PP2_TYPE_SPIFFE_ID`] with its SPIFFE ID.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature that starts every version 2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// `PP2_TYPE_SSL`: the connection came over TLS, with sub-TLVs.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_VERSION`: the TLS version, as text (`TLSv1.3`).
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// `PP2_SUBTYPE_SSL_CN`: the client certificate's subject CN (the caller's instance GUID).
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// The caller's SPIFFE ID, in the range the spec leaves to applications (0xE0-0xEF).
pub const PP2_TYPE_SPIFFE_ID: u8 = 0xE0;
/// `PP2_CLIENT_SSL`, `PP2_CLIENT_CERT_CONN`, `PP2_CLIENT_CERT_SESS`.
const CLIENT_SSL_CERT_CONN_SESS: u8 = 0x01 | 0x02 | 0x04;

/// The spec's TLV carrying the application protocol agreed in ALPN.
pub const PP2_TYPE_ALPN: u8 = 0x01;

/// A verified caller's names for the TLVs.
#[derive(Debug, Clone, Copy)]
pub struct CallerNames<'a> {
    /// The certificate's CN.
    pub common_name: &'a str,
    /// Its SPIFFE ID.
    pub spiffe_id: &'a str,
    /// The TLS version, as text (`TLSv1.3`).
    pub tls_version: &'a str,
}

/// The header for a connection from `source` to `destination`, naming `caller` if it is known.
pub fn header(
    source: SocketAddr,
    destination: SocketAddr,
    caller: Option<CallerNames<'_>>,
    alpn: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11 // AF_INET, STREAM
        }
        (s, d) => {
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
            0x21 // AF_INET6, STREAM
        }
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    // The protocol the client and the sidecar agreed on in ALPN (`h2`), as the spec's TLV.
    if let Some(p) = alpn {
        tlv(&mut body, PP2_TYPE_ALPN, p);
    }
    if let Some(c) = caller {
        let mut ssl = vec![CLIENT_SSL_CERT_CONN_SESS];
        // verify: 0 = the client certificate was verified.
        ssl.extend_from_slice(&0u32.to_be_bytes());
        tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, c.tls_version.as_bytes());
        tlv(&mut ssl, PP2_SUBTYPE_SSL_CN, c.common_name.as_bytes());
        tlv(&mut body, PP2_TYPE_SSL, &ssl);
        tlv(&mut body, PP2_TYPE_SPIFFE_ID, c.spiffe_id.as_bytes());
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(value.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&value[..value.len().min(u16::MAX as usize)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed by `ppp`, a PROXY protocol implementation from crates.io that nobody here wrote.
    #[test]
    fn a_third_party_parser_reads_addresses_and_tlvs() {
        let src: SocketAddr = "10.255.1.2:40000".parse().unwrap();
        let dst: SocketAddr = "10.255.2.3:61443".parse().unwrap();
        let bytes = header(
            src,
            dst,
            Some(CallerNames {
                common_name: "6e3c0ea3-inst",
                spiffe_id: "spiffe://c2c.internal/app/0b1e",
                tls_version: "TLSv1.3",
            }),
            Some(b"h2"),
        );
        let h = ppp::v2::Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(h.command, ppp::v2::Command::Proxy);
        match h.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(
                    a.source_address,
                    "10.255.1.2".parse::<std::net::Ipv4Addr>().unwrap()
                );
                assert_eq!(a.source_port, 40000);
                assert_eq!(a.destination_port, 61443);
            }
            other => panic!("{other:?}"),
        }
        let tlvs: Vec<_> = h.tlvs().collect::<Result<_, _>>().unwrap();
        let ssl = tlvs
            .iter()
            .find_map(|t| match t {
                ppp::v2::TypeLengthValue { kind, value } if *kind == PP2_TYPE_SSL => {
                    Some(value.to_vec())
                }
                _ => None,
            })
            .expect("an SSL TLV");
        assert!(ssl.windows(13).any(|w| w == b"6e3c0ea3-inst"));
        assert!(tlvs.iter().any(
            |t| t.kind == PP2_TYPE_SPIFFE_ID && &*t.value == b"spiffe://c2c.internal/app/0b1e"
        ));
        assert!(tlvs
            .iter()
            .any(|t| t.kind == PP2_TYPE_ALPN && &*t.value == b"h2"));

        // No caller: addresses only.
        let bare = header(src, dst, None, None);
        let h = ppp::v2::Header::try_from(bare.as_slice()).unwrap();
        assert_eq!(h.tlvs().count(), 0);
    }
}
