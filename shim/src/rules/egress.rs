//! Security groups as set elements: each rule's (source, destination range, protocol, port
//! range) box, made disjoint (nftables refuses overlapping elements in an interval set of
//! concatenations) and written as elements of the three egress sets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::EgressRule;

/// A box of inclusive ranges, one per dimension.
type Box_ = Vec<(u32, u32)>;

/// The union of `boxes` as boxes that do not overlap (nftables refuses overlapping elements
/// in an interval set of concatenations): split along the first dimension at every boundary,
/// make the rest disjoint for each piece, and join neighbouring pieces that ended up alike.
fn disjoint(boxes: Vec<Box_>) -> Vec<Box_> {
    let Some(dims) = boxes.first().map(Vec::len) else {
        return vec![];
    };
    if dims == 1 {
        let mut iv: Vec<(u32, u32)> = boxes.into_iter().map(|b| b[0]).collect();
        iv.sort_unstable();
        let mut out: Vec<(u32, u32)> = vec![];
        for (a, b) in iv {
            match out.last_mut() {
                Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        return out.into_iter().map(|r| vec![r]).collect();
    }
    let mut cuts: Vec<u64> = boxes
        .iter()
        .flat_map(|b| [u64::from(b[0].0), u64::from(b[0].1) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces: Vec<((u32, u32), Vec<Box_>)> = vec![];
    for w in cuts.windows(2) {
        let (a, b) = (w[0] as u32, (w[1] - 1) as u32);
        let rest: Vec<Box_> = boxes
            .iter()
            .filter(|x| x[0].0 <= a && b <= x[0].1)
            .map(|x| x[1..].to_vec())
            .collect();
        if rest.is_empty() {
            continue;
        }
        let rest = disjoint(rest);
        match pieces.last_mut() {
            Some((r, last)) if u64::from(r.1) + 1 == u64::from(a) && *last == rest => r.1 = b,
            _ => pieces.push(((a, b), rest)),
        }
    }
    pieces
        .into_iter()
        .flat_map(|(r, rest)| {
            rest.into_iter().map(move |mut x| {
                x.insert(0, r);
                x
            })
        })
        .collect()
}

/// The egress set elements, disjoint: (`source . destination-range . proto . port-range`),
/// (`source . destination-range`) for `all`, (`source . destination-range . type . code`).
pub(super) fn egress_elements(rules: &[EgressRule]) -> [Vec<String>; 3] {
    use c2c_api::asg::Allowed;
    // Per source and kind: the boxes.
    let mut ports: BTreeMap<(Ipv4Addr, &'static str), Vec<Box_>> = BTreeMap::new();
    let mut all: BTreeMap<Ipv4Addr, Vec<Box_>> = BTreeMap::new();
    let mut icmp: BTreeMap<Ipv4Addr, Vec<Box_>> = BTreeMap::new();
    for r in rules {
        for &(first, last) in &r.destinations {
            let d = (u32::from(first), u32::from(last));
            for a in &r.allowed {
                match *a {
                    Allowed::All => all.entry(r.source).or_default().push(vec![d]),
                    Allowed::Tcp(p, q) => ports
                        .entry((r.source, "tcp"))
                        .or_default()
                        .push(vec![d, (p.into(), q.into())]),
                    Allowed::Udp(p, q) => ports
                        .entry((r.source, "udp"))
                        .or_default()
                        .push(vec![d, (p.into(), q.into())]),
                    Allowed::Icmp((t0, t1), (c0, c1)) => icmp
                        .entry(r.source)
                        .or_default()
                        .push(vec![d, (t0.into(), t1.into()), (c0.into(), c1.into())]),
                }
            }
        }
    }
    let ip = |v: u32| Ipv4Addr::from(v);
    let range = |(a, b): (u32, u32)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    let iprange = |(a, b): (u32, u32)| {
        if a == b {
            ip(a).to_string()
        } else {
            format!("{}-{}", ip(a), ip(b))
        }
    };
    let mut out: [Vec<String>; 3] = Default::default();
    for ((src, proto), boxes) in ports {
        for b in disjoint(boxes) {
            out[0].push(format!(
                "{src} . {} . {proto} . {}",
                iprange(b[0]),
                range(b[1])
            ));
        }
    }
    for (src, boxes) in all {
        for b in disjoint(boxes) {
            out[1].push(format!("{src} . {}", iprange(b[0])));
        }
    }
    for (src, boxes) in icmp {
        for b in disjoint(boxes) {
            out[2].push(format!(
                "{src} . {} . {} . {}",
                iprange(b[0]),
                range(b[1]),
                range(b[2])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_boxes_cover_exactly_the_union() {
        // Small grids, every point checked against the input boxes.
        let mut seed = 7u64;
        let mut rnd = |n: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % u64::from(n)) as u32
        };
        for _ in 0..200 {
            let dims = 1 + rnd(3) as usize;
            let boxes: Vec<Box_> = (0..1 + rnd(6))
                .map(|_| {
                    (0..dims)
                        .map(|_| {
                            let a = rnd(8);
                            (a, a + rnd(4))
                        })
                        .collect()
                })
                .collect();
            let out = disjoint(boxes.clone());
            let inside = |b: &Box_, p: &[u32]| b.iter().zip(p).all(|(r, v)| r.0 <= *v && *v <= r.1);
            let mut p = vec![0u32; dims];
            loop {
                let want = boxes.iter().any(|b| inside(b, &p));
                let n = out.iter().filter(|b| inside(b, &p)).count();
                assert_eq!(n, usize::from(want), "{boxes:?} -> {out:?} at {p:?}");
                let mut i = 0;
                while i < dims {
                    p[i] += 1;
                    if p[i] <= 12 {
                        break;
                    }
                    p[i] = 0;
                    i += 1;
                }
                if i == dims {
                    break;
                }
            }
        }
    }
}
