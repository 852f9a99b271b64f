//! The DNS check: the probe's resolver asked over UDP, its answers read by hand (rcode,
//! addresses, TTLs), so the check depends on nothing but the wire format.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use super::Probes;
use std::path::Path;
use std::time::Duration;

use super::traffic::name;
use crate::in_netns;
use crate::instance::INTERNAL_DOMAIN;

/// The cells' DNS, as the probe's resolver sees it: the route has every instance, `0.<route>`
/// the first, an unknown name is NXDOMAIN, and nothing is cached (TTL 0).
pub(super) fn dns(p: &Probes) -> Result<String> {
    let server = resolver(&p.a.netns)?;
    let route = format!("{}.{INTERNAL_DOMAIN}", p.route);
    let want: BTreeSet<Ipv4Addr> = p.b.iter().map(|i| i.ip).collect();
    let (rcode, got, ttls) = query(&p.a.netns, server, &route)?;
    if rcode != 0 || got != want {
        bail!(
            "{route} from {}: rcode {rcode}, {got:?}; want {want:?}",
            name(&p.a)
        );
    }
    if ttls.iter().any(|t| *t != 0) {
        bail!("{route}: TTL {ttls:?}, want 0 (instances come and go)");
    }
    let first = format!("0.{route}");
    let (rcode, got, _) = query(&p.a.netns, server, &first)?;
    if rcode != 0 || got != BTreeSet::from([p.b[0].ip]) {
        bail!("{first}: rcode {rcode}, {got:?}; want {}", p.b[0].ip);
    }
    let nothing = format!("nosuch-{}.{INTERNAL_DOMAIN}", p.route);
    let (rcode, got, _) = query(&p.a.netns, server, &nothing)?;
    if rcode != 3 {
        bail!("{nothing}: rcode {rcode} ({got:?}); want NXDOMAIN (3)");
    }
    Ok(format!(
        "{route} -> {want:?}, {first} -> {}, {nothing} NXDOMAIN, TTL 0 (resolver {server})",
        p.b[0].ip
    ))
}

/// The nameserver an instance's resolv.conf names.
fn resolver(netns: &str) -> Result<Ipv4Addr> {
    let conf = Path::new("/etc/netns").join(netns).join("resolv.conf");
    std::fs::read_to_string(&conf)
        .with_context(|| format!("reading {}", conf.display()))?
        .lines()
        .find_map(|l| l.strip_prefix("nameserver ")?.trim().parse().ok())
        .with_context(|| format!("no nameserver in {}", conf.display()))
}

/// One A query from inside `netns`: (rcode, addresses, TTLs).
fn query(netns: &str, server: Ipv4Addr, qname: &str) -> Result<(u8, BTreeSet<Ipv4Addr>, Vec<u32>)> {
    let mut q = vec![0x43, 0x21, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in qname.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let answer = in_netns(netns, move || -> std::io::Result<Vec<u8>> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&q, (server, 53))?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    })?
    .with_context(|| format!("asking {server} for {qname}"))?;
    parse_answer(&answer).with_context(|| format!("the answer for {qname}"))
}

/// (rcode, A addresses, their TTLs) of a DNS answer to one question.
fn parse_answer(m: &[u8]) -> Result<(u8, BTreeSet<Ipv4Addr>, Vec<u32>)> {
    anyhow::ensure!(m.len() >= 12 && m[0..2] == [0x43, 0x21], "not our answer");
    let rcode = m[3] & 0x0f;
    let an = u16::from_be_bytes([m[6], m[7]]);
    // Skips a name (labels or a compression pointer) at `i`.
    let skip = |mut i: usize| -> Result<usize> {
        loop {
            let len = *m.get(i).context("truncated name")?;
            if len & 0xc0 == 0xc0 {
                return Ok(i + 2);
            }
            if len == 0 {
                return Ok(i + 1);
            }
            i += 1 + len as usize;
        }
    };
    let mut i = skip(12)? + 4;
    let (mut ips, mut ttls) = (BTreeSet::new(), vec![]);
    for _ in 0..an {
        i = skip(i)?;
        let h = m.get(i..i + 10).context("truncated record")?;
        let (kind, ttl, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            u16::from_be_bytes([h[8], h[9]]) as usize,
        );
        let data = m.get(i + 10..i + 10 + len).context("truncated data")?;
        if kind == 1 && len == 4 {
            ips.insert(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            ttls.push(ttl);
        }
        i += 10 + len;
    }
    Ok((rcode, ips, ttls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_answer_is_read_with_its_ttls_and_rcode() {
        // Question appb.apps.internal A, two answers by compression pointer, TTL 0 and 5.
        let mut m = vec![0x43, 0x21, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        for l in ["appb", "apps", "internal"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        for (ip, ttl) in [([10, 255, 0, 1], 0u32), ([10, 255, 1, 1], 5)] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(&ip);
        }
        let (rcode, ips, ttls) = parse_answer(&m).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(
            ips,
            BTreeSet::from([Ipv4Addr::new(10, 255, 0, 1), Ipv4Addr::new(10, 255, 1, 1)])
        );
        assert_eq!(ttls, [0, 5]);
        // NXDOMAIN, no answers.
        m[3] = 0x83;
        m[7] = 0;
        assert_eq!(parse_answer(&m[..12 + 19 + 4]).unwrap().0, 3);
        // Someone else's id.
        m[0] = 0;
        assert!(parse_answer(&m).is_err());
    }
}
