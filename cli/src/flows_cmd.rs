//! `c2c flows`: the flows every cell reported, from every control replica (each holds what the
//! cells reported to it), merged by time, as `hubble observe` prints them.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use c2c_api::client::Client;
use c2c_api::types::{Flow, FlowEnd, FlowQuery};
use clap::Args;

use crate::common::{print_json, with_client};

/// `c2c flows` arguments.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Only flows from this app.
    #[arg(long)]
    pub from: Option<String>,
    /// Only flows to this app.
    #[arg(long)]
    pub to: Option<String>,
    /// Only `accept` or only `deny` (also `allowed`, `denied`, `dropped`).
    #[arg(long, value_parser = verdict_arg)]
    pub verdict: Option<String>,
    /// Only flows of the last DURATION (e.g. 30s, 5m, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Keep printing flows as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object: `{"flows": [...], "dropped": N}` (with --follow, a JSON line per
    /// flow).
    #[arg(long)]
    pub json: bool,
}

/// `c2c flows [--from APP] [--to APP] [--verdict V] [--since D] [--follow] [--json]`.
pub fn run(dir: &Path, a: FlowArgs) -> Result<()> {
    with_client(dir, async |c| {
        let replicas = c.each_replica();
        let mut after = vec![None; replicas.len()];
        let mut seen = BTreeSet::new();
        let mut q = FlowQuery {
            from: a.from.clone(),
            to: a.to.clone(),
            verdict: a.verdict.clone(),
            since_ms: a.since.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            ..Default::default()
        };
        let (flows, dropped) = gather(&replicas, &mut q, &mut after, &mut seen).await?;
        if !a.follow {
            if a.json {
                return print_json(&serde_json::json!({ "flows": flows, "dropped": dropped }));
            }
            for f in &flows {
                println!("{}", line(f));
            }
            if flows.is_empty() {
                eprintln!("no flows{}: the cells record logged traffic only (c2c up --log-c2c; security groups with \"log\": true)", narrowed(&a));
            }
            return Ok(());
        }
        // --follow: what came since, every second, until interrupted.
        q.since_ms = None;
        let mut flows = flows;
        loop {
            for f in &flows {
                if a.json {
                    println!("{}", serde_json::to_string(f)?);
                } else {
                    println!("{}", line(f));
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            flows = gather(&replicas, &mut q, &mut after, &mut seen).await?.0;
        }
    })
}

fn narrowed(a: &FlowArgs) -> String {
    let mut parts = vec![];
    if let Some(f) = &a.from {
        parts.push(format!("from {f}"));
    }
    if let Some(t) = &a.to {
        parts.push(format!("to {t}"));
    }
    if let Some(v) = &a.verdict {
        parts.push(format!("with verdict {v}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" {}", parts.join(" "))
    }
}

/// Asks every replica for what came after what it last answered; merged by time, a flow two
/// replicas hold (a report retried on the other) once. Fails only if no replica answered.
async fn gather(
    replicas: &[Client],
    q: &mut FlowQuery,
    after: &mut [Option<u64>],
    seen: &mut BTreeSet<String>,
) -> Result<(Vec<Flow>, u64)> {
    let mut out = vec![];
    let (mut dropped, mut answered, mut last_error) = (0, 0, None);
    for (i, r) in replicas.iter().enumerate() {
        q.after = after[i];
        match r.flows(q).await {
            Ok(list) => {
                answered += 1;
                dropped += list.dropped;
                if let Some(last) = list.flows.iter().map(|f| f.seq).max() {
                    after[i] = Some(last);
                }
                out.extend(list.flows);
            }
            Err(e) => last_error = Some(e),
        }
    }
    if answered == 0 {
        if let Some(e) = last_error {
            return Err(e.into());
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    out.retain(|f| {
        let mut key = f.clone();
        key.seq = 0;
        seen.insert(serde_json::to_string(&key).unwrap_or_default())
    });
    Ok((out, dropped))
}

fn end(e: &FlowEnd) -> String {
    let at = e.address();
    match &e.app {
        Some(app) => format!("{app} ({at})"),
        None => at,
    }
}

/// One line, as hubble's: time, both ends, protocol, verdict, and why (kind, group, cell).
fn line(f: &Flow) -> String {
    let verdict = match f.verdict.as_str() {
        "accept" => "ALLOWED",
        "deny" => "DENIED",
        _ => "UNKNOWN",
    };
    let why = match (&f.kind[..], &f.security_group) {
        ("asg", Some(g)) => format!("security group {g}"),
        ("asg", None) => "security group".into(),
        ("c2c", _) if f.verdict == "deny" => "no policy".into(),
        ("c2c", _) => "policy".into(),
        ("egress", _) => "no security group".into(),
        (k, _) => k.to_string(),
    };
    format!(
        "{}  {} -> {}  {}  {verdict} ({why}; {})",
        f.time,
        end(&f.source),
        end(&f.destination),
        f.protocol,
        f.cell.as_deref().unwrap_or("?")
    )
}

/// `--verdict`: accept or deny, in hubble's words too.
fn verdict_arg(s: &str) -> Result<String, String> {
    match s.to_ascii_lowercase().as_str() {
        "accept" | "accepted" | "allow" | "allowed" | "forwarded" => Ok("accept".into()),
        "deny" | "denied" | "drop" | "dropped" | "refused" => Ok("deny".into()),
        _ => Err(format!("{s:?}: accept or deny")),
    }
}
