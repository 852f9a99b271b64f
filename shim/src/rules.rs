//! Policy enforcement on a cell, as Cloud Foundry's VXLAN policy agent does it, as one
//! `iptables-restore` input per apply (atomic per table: no instant with half a ruleset).
//!
//! - mangle `c2c-mark` (from PREROUTING): a packet from a local container gets its app's tag as
//!   the low 16 bits of its mark; the VTEP carries that mark to other cells in the GBP header.
//! - filter `c2c-ingress` (from FORWARD): packets of established connections pass; a packet to a
//!   local container jumps to that container's chain `c2c-d-<ip hex>` (dispatch by destination,
//!   so a new connection's cost does not grow with policies for other containers), which accepts
//!   what a policy allows by (protocol, port range, source tag); everything else to the cell's
//!   subnet is rejected (TCP reset, so the client sees "connection refused").
//!
//! [`ruleset`] is pure; [`apply`] runs the iptables binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ipam::Subnet;

/// Mark chain in the mangle table.
pub const MARK_CHAIN: &str = "c2c-mark";
/// Ingress chain in the filter table.
pub const INGRESS_CHAIN: &str = "c2c-ingress";
/// Prefix of the per-destination chains.
pub const DEST_PREFIX: &str = "c2c-d-";

/// A container on this cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Local {
    /// Its overlay address.
    pub ip: Ipv4Addr,
    /// Its app.
    pub app_guid: String,
}

/// An allow rule: `source` app may reach `destination` app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    /// Source app GUID.
    pub source: String,
    /// Destination app GUID.
    pub destination: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

/// The chain of one local destination.
pub fn dest_chain(ip: Ipv4Addr) -> String {
    format!("{DEST_PREFIX}{:08x}", u32::from(ip))
}

/// The `iptables-restore --noflush` input for the cell: tags by app GUID, the local containers,
/// and the policies. Apps without a tag are skipped (their packets carry no mark and match no
/// allow rule: deny by default). Deterministic: the same inputs give the same text.
pub fn ruleset(
    subnet: Subnet,
    locals: &[Local],
    tags: &BTreeMap<String, u16>,
    allows: &[Allow],
) -> String {
    let locals: BTreeSet<&Local> = locals.iter().collect();
    let mut out = String::new();
    out.push_str("*mangle\n");
    let _ = writeln!(out, ":{MARK_CHAIN} - [0:0]");
    for l in &locals {
        if let Some(tag) = tags.get(&l.app_guid) {
            let _ = writeln!(
                out,
                "-A {MARK_CHAIN} -s {}/32 -j MARK --set-xmark {tag:#x}/0xffff",
                l.ip
            );
        }
    }
    out.push_str("COMMIT\n*filter\n");
    let _ = writeln!(out, ":{INGRESS_CHAIN} - [0:0]");
    for l in &locals {
        let _ = writeln!(out, ":{} - [0:0]", dest_chain(l.ip));
    }
    let _ = writeln!(
        out,
        "-A {INGRESS_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    for l in &locals {
        let _ = writeln!(
            out,
            "-A {INGRESS_CHAIN} -d {}/32 -j {}",
            l.ip,
            dest_chain(l.ip)
        );
    }
    let net = format!("{}/{}", subnet.network(), subnet.prefix());
    let _ = writeln!(
        out,
        "-A {INGRESS_CHAIN} -d {net} -p tcp -j REJECT --reject-with tcp-reset"
    );
    let _ = writeln!(
        out,
        "-A {INGRESS_CHAIN} -d {net} -j REJECT --reject-with icmp-port-unreachable"
    );
    let allows: BTreeSet<&Allow> = allows.iter().collect();
    for l in &locals {
        let chain = dest_chain(l.ip);
        for a in allows.iter().filter(|a| a.destination == l.app_guid) {
            let Some(tag) = tags.get(&a.source) else {
                continue;
            };
            if a.protocol != "tcp" && a.protocol != "udp" {
                continue;
            }
            let _ = writeln!(
                out,
                "-A {chain} -p {p} -m {p} --dport {s}:{e} -m mark --mark {tag:#x}/0xffff -j ACCEPT",
                p = a.protocol,
                s = a.start,
                e = a.end
            );
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Applying rules failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// An iptables binary could not be run.
    #[error("running {cmd}: {source} (is iptables installed? apt-get install -y iptables)")]
    Spawn {
        /// The command.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// An iptables binary refused.
    #[error("{cmd} failed: {stderr}")]
    Failed {
        /// The command.
        cmd: String,
        /// What it said.
        stderr: String,
    },
}

fn iptables(args: &[&str], stdin: Option<&str>) -> Result<std::process::Output, RulesError> {
    let (bin, rest) = args.split_first().expect("a command");
    let cmd = args.join(" ");
    let mut child = Command::new(bin)
        .args(rest)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RulesError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| RulesError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
    }
    child
        .wait_with_output()
        .map_err(|source| RulesError::Spawn { cmd, source })
}

fn check(args: &[&str], stdin: Option<&str>) -> Result<String, RulesError> {
    let out = iptables(args, stdin)?;
    if !out.status.success() {
        return Err(RulesError::Failed {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a [`ruleset`] in the calling process's network namespace: one atomic restore per
/// table, then the jumps from PREROUTING and FORWARD (added once, first), then the chains of
/// containers that are gone are removed. Blocking: call it off async threads.
pub fn apply(text: &str) -> Result<(), RulesError> {
    // Chains of containers that left: flushed and deleted in the same restore, once unreferenced.
    let existing = check(&["iptables-save", "-t", "filter"], None)?;
    let mut stale = String::new();
    for line in existing.lines() {
        if let Some(chain) = line
            .strip_prefix(':')
            .and_then(|l| l.split_whitespace().next())
        {
            if chain.starts_with(DEST_PREFIX) && !text.contains(&format!(":{chain} ")) {
                let _ = writeln!(stale, "-F {chain}\n-X {chain}");
            }
        }
    }
    let text = text.to_string().replace_last_commit(&stale);
    check(&["iptables-restore", "-w", "--noflush"], Some(&text))?;
    for (table, builtin, chain) in [
        ("mangle", "PREROUTING", MARK_CHAIN),
        ("filter", "FORWARD", INGRESS_CHAIN),
    ] {
        if !iptables(
            &["iptables", "-w", "-t", table, "-C", builtin, "-j", chain],
            None,
        )?
        .status
        .success()
        {
            check(
                &[
                    "iptables", "-w", "-t", table, "-I", builtin, "1", "-j", chain,
                ],
                None,
            )?;
        }
    }
    Ok(())
}

trait ReplaceLastCommit {
    fn replace_last_commit(&self, before: &str) -> String;
}

impl ReplaceLastCommit for String {
    /// Inserts `before` ahead of the last `COMMIT` line (the filter table's).
    fn replace_last_commit(&self, before: &str) -> String {
        match self.rfind("COMMIT\n") {
            Some(i) => format!("{}{before}{}", &self[..i], &self[i..]),
            None => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> (Subnet, Vec<Local>, BTreeMap<String, u16>) {
        let locals = vec![
            Local {
                ip: "10.255.1.2".parse().unwrap(),
                app_guid: "b".into(),
            },
            Local {
                ip: "10.255.1.1".parse().unwrap(),
                app_guid: "a".into(),
            },
        ];
        let tags = BTreeMap::from([
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("c".to_string(), 0x1234),
        ]);
        ("10.255.1.0/24".parse().unwrap(), locals, tags)
    }

    fn allow(s: &str, d: &str, p: &str, start: u16, end: u16) -> Allow {
        Allow {
            source: s.into(),
            destination: d.into(),
            protocol: p.into(),
            start,
            end,
        }
    }

    #[test]
    fn marks_dispatch_and_default_reject() {
        let (subnet, locals, tags) = inputs();
        let text = ruleset(
            subnet,
            &locals,
            &tags,
            &[
                allow("a", "b", "tcp", 8080, 8080),
                allow("c", "b", "udp", 53, 60),
                allow("b", "remote-app", "tcp", 1, 2),
            ],
        );
        assert!(text.contains("-A c2c-mark -s 10.255.1.1/32 -j MARK --set-xmark 0x1/0xffff\n"));
        assert!(text.contains("-A c2c-mark -s 10.255.1.2/32 -j MARK --set-xmark 0x2/0xffff\n"));
        assert!(text.contains("-A c2c-ingress -d 10.255.1.2/32 -j c2c-d-0aff0102\n"));
        assert!(text.contains("-A c2c-d-0aff0102 -p tcp -m tcp --dport 8080:8080 -m mark --mark 0x1/0xffff -j ACCEPT\n"));
        assert!(text.contains("-A c2c-d-0aff0102 -p udp -m udp --dport 53:60 -m mark --mark 0x1234/0xffff -j ACCEPT\n"));
        assert!(
            !text.contains("remote-app"),
            "policies to apps not on this cell add nothing"
        );
        // Established first, rejects last.
        let est = text.find("ESTABLISHED").unwrap();
        let jump = text.find("-j c2c-d-").unwrap();
        let reject = text
            .find("-p tcp -j REJECT --reject-with tcp-reset")
            .unwrap();
        assert!(est < jump && jump < reject);
        assert_eq!(text.matches("COMMIT").count(), 2);
    }

    #[test]
    fn deterministic_and_untagged_sources_get_nothing() {
        let (subnet, mut locals, tags) = inputs();
        let a = ruleset(
            subnet,
            &locals,
            &tags,
            &[allow("a", "b", "tcp", 1, 2), allow("zz", "b", "tcp", 3, 4)],
        );
        locals.reverse();
        let b = ruleset(
            subnet,
            &locals,
            &tags,
            &[allow("zz", "b", "tcp", 3, 4), allow("a", "b", "tcp", 1, 2)],
        );
        assert_eq!(a, b);
        assert!(
            !a.contains("--dport 3:4"),
            "an app without a tag cannot be allowed"
        );
    }

    #[test]
    fn stale_chain_deletes_go_before_the_filter_commit() {
        let s = "*mangle\nCOMMIT\n*filter\n:x - [0:0]\nCOMMIT\n".to_string();
        assert_eq!(
            s.replace_last_commit("-X old\n"),
            "*mangle\nCOMMIT\n*filter\n:x - [0:0]\n-X old\nCOMMIT\n"
        );
    }
}
