//! A ruleset change as set elements only. Between two [`super::ruleset`] scripts whose chains
//! and set declarations are the same (most policy changes: only the `allow` set's elements
//! move, and `gen`), the kernel needs only the elements deleted and added, in one `nft -f`
//! transaction, instead of the whole table built again: with 10,000 policies on a cell, a
//! change is a few lines for nft to parse, not thousands.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::TABLE;

/// A script's shape (everything but set elements) and each set's or map's elements.
struct Parsed<'a> {
    skeleton: String,
    sets: Vec<Set<'a>>,
}

/// A set or map of the table, and its elements.
struct Set<'a> {
    name: &'a str,
    map: bool,
    elements: BTreeSet<&'a str>,
}

/// The script, taken apart; None if it is not in the shape [`super::ruleset`] writes.
fn parse(script: &str) -> Option<Parsed<'_>> {
    let mut skeleton = String::with_capacity(script.len() / 4);
    let mut sets: Vec<Set> = vec![];
    let (mut inside, mut listing) = (false, false);
    for line in script.lines() {
        if listing {
            listing = element(line.trim_start(), &mut sets.last_mut()?.elements)?;
            continue;
        }
        if inside {
            if let Some(rest) = line.strip_prefix("    elements = { ") {
                listing = element(rest, &mut sets.last_mut()?.elements)?;
                continue;
            }
            inside = line != "  }";
        } else if let Some((kind, rest)) = line
            .strip_prefix("  set ")
            .map(|r| (false, r))
            .or_else(|| line.strip_prefix("  map ").map(|r| (true, r)))
        {
            let name = rest.strip_suffix(" {")?;
            sets.push(Set {
                name,
                map: kind,
                elements: BTreeSet::new(),
            });
            inside = true;
        }
        skeleton.push_str(line);
        skeleton.push('\n');
    }
    (!listing).then_some(Parsed { skeleton, sets })
}

/// Takes one element of an `elements = { a,\n b }` list; Some(true) while more follow.
fn element<'a>(text: &'a str, into: &mut BTreeSet<&'a str>) -> Option<bool> {
    let (el, more) = match text.strip_suffix(',') {
        Some(el) => (el, true),
        None => (text.strip_suffix(" }")?, false),
    };
    if el.is_empty() || el.contains(['{', '}', ',']) {
        return None;
    }
    into.insert(el);
    Some(more)
}

/// The commands that turn the ruleset `prev` (in the kernel) into `next`: set elements
/// deleted, then added. None when more than elements differ (apply `next` whole). Empty when
/// nothing does.
pub fn delta(prev: &str, next: &str) -> Option<String> {
    let (a, b) = (parse(prev)?, parse(next)?);
    if a.skeleton != b.skeleton || a.sets.len() != b.sets.len() {
        return None;
    }
    let mut out = String::new();
    for (old, new) in a.sets.iter().zip(&b.sets) {
        // A map's element is deleted by its key.
        let gone: Vec<&str> = old
            .elements
            .difference(&new.elements)
            .map(|e| match old.map {
                true => e.split(" : ").next().unwrap_or(e),
                false => e,
            })
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                out,
                "delete element ip {TABLE} {} {{ {} }}",
                old.name,
                gone.join(", ")
            );
        }
    }
    for (old, new) in a.sets.iter().zip(&b.sets) {
        let added: Vec<&str> = new.elements.difference(&old.elements).copied().collect();
        if !added.is_empty() {
            let _ = writeln!(
                out,
                "add element ip {TABLE} {} {{ {} }}",
                new.name,
                added.join(", ")
            );
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "table ip c2c\ndelete table ip c2c\ntable ip c2c {\n  set gen {\n    type mark\n    elements = { 0x1 }\n  }\n  map marks {\n    type ipv4_addr : mark\n    elements = { 10.255.1.2 : 0x1,\n      10.255.1.3 : 0x2 }\n  }\n  set allow {\n    type ipv4_addr . inet_proto . inet_service . mark\n  }\n  chain forward {\n    ip daddr . meta l4proto . th dport . meta mark @allow accept\n  }\n}\n";

    #[test]
    fn only_the_elements_that_moved_are_deleted_then_added() {
        let b = A
            .replace("{ 0x1 }", "{ 0x2 }")
            .replace("10.255.1.3 : 0x2", "10.255.1.3 : 0x5")
            .replace(
                "mark\n  }\n  chain",
                "mark\n    elements = { 10.255.1.2 . tcp . 8080 . 0x2 }\n  }\n  chain",
            );
        assert_eq!(
            delta(A, &b).unwrap(),
            "delete element ip c2c gen { 0x1 }\n\
             delete element ip c2c marks { 10.255.1.3 }\n\
             add element ip c2c gen { 0x2 }\n\
             add element ip c2c marks { 10.255.1.3 : 0x5 }\n\
             add element ip c2c allow { 10.255.1.2 . tcp . 8080 . 0x2 }\n"
        );
        // And back: the set emptied.
        assert!(delta(&b, A)
            .unwrap()
            .contains("delete element ip c2c allow { 10.255.1.2 . tcp . 8080 . 0x2 }\n"));
        assert_eq!(delta(A, A).unwrap(), "");
    }

    #[test]
    fn a_change_beyond_elements_is_applied_whole() {
        // A chain changed, a set added, a set's type changed: no delta.
        let chain = A.replace("@allow accept", "@allow drop");
        let set = A.replace(
            "  chain forward",
            "  set peers {\n    type ipv4_addr\n  }\n  chain forward",
        );
        let typ = A.replace("type ipv4_addr : mark", "type ipv4_addr : verdict");
        for b in [chain, set, typ] {
            assert!(delta(A, &b).is_none(), "{b}");
        }
        // Not in the shape ruleset writes (an element list never closed).
        assert!(delta(A, "table ip c2c {\n  set gen {\n    elements = { 0x1,\n").is_none());
    }

    #[test]
    fn the_whole_rulesets_of_a_cell_differ_by_elements_only() {
        use super::super::{ruleset, Allow, Local};
        use c2c_api::net::PortRange;
        let locals = vec![
            Local {
                ip: "10.255.1.2".parse().unwrap(),
                app_guid: "b".into(),
            },
            Local {
                ip: "10.255.1.3".parse().unwrap(),
                app_guid: "a".into(),
            },
        ];
        let mut cell = super::super::tests::cell("10.255.1.0/24".parse().unwrap(), &locals);
        cell.log_c2c = true;
        let tags = std::collections::BTreeMap::from([("a".into(), 1), ("b".into(), 2)]);
        let allow = |port: u16, end: u16| Allow {
            source: "a".into(),
            destination: "b".into(),
            protocol: "tcp".parse().unwrap(),
            ports: PortRange::new(port, end).unwrap(),
        };
        let a = ruleset(&cell, &locals, &tags, &[allow(8080, 8080)]);
        let b = ruleset(
            &cell,
            &locals,
            &tags,
            &[allow(8080, 8080), allow(9000, 9100)],
        );
        let d = delta(&a, &b).expect("a policy change is elements only");
        assert_eq!(d.lines().count(), 3, "{d}");
        assert!(
            d.contains("add element ip c2c allow_ranges { 10.255.1.2 . tcp . 9000-9100 . 0x1 }"),
            "{d}"
        );
        // Applying a delta to `a` leaves what `b` whole would: the root test applies both.
        assert_eq!(delta(&b, &b).unwrap(), "");
    }
}
