//! Network policies: add-network-policy, remove-network-policy and network-policies, with
//! the cf CLI's arguments, defaults and texts.

use std::path::Path;

use anyhow::Result;
use c2c_api::client::Client;
use c2c_api::Policy;
use clap::Args;

use crate::common::{app_names, print_json, print_table, user, with_client, UsageError};

/// `add-network-policy` arguments (the cf CLI's: `--protocol` and `--port` go together; with
/// neither, tcp 8080).
#[derive(Debug, Args)]
pub struct AddPolicyArgs {
    /// Source app name.
    pub source: String,
    /// Destination app name.
    pub destination: String,
    /// Protocol to connect apps with: tcp or udp (Default: tcp).
    #[arg(long, value_parser = protocol_arg)]
    pub protocol: Option<String>,
    /// Port or range of ports for connection to destination app, e.g. 8080 or 8080-8090
    /// (Default: 8080).
    #[arg(long, value_parser = port_arg)]
    pub port: Option<String>,
}

/// `remove-network-policy` arguments (the cf CLI's: both flags required).
#[derive(Debug, Args)]
pub struct RemovePolicyArgs {
    /// Source app name.
    pub source: String,
    /// Destination app name.
    pub destination: String,
    /// Protocol that apps are connected with: tcp or udp.
    #[arg(long, value_parser = protocol_arg)]
    pub protocol: String,
    /// Port or range of ports that destination app is connected with.
    #[arg(long, value_parser = port_arg)]
    pub port: String,
}

/// `--protocol`, checked as the arguments are read (a usage error, exit 2, before anything is
/// asked of control or printed): tcp or udp, in any case (the cf CLI lower-cases it).
fn protocol_arg(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    lower
        .parse::<c2c_api::net::Protocol>()
        .map(|_| lower)
        .map_err(|_| "use tcp or udp".to_string())
}

/// `--port`, checked as the arguments are read: a port or a range within 1-65535.
fn port_arg(s: &str) -> Result<String, String> {
    s.parse::<c2c_api::net::PortRange>().map(|_| s.to_string())
}

/// The cf CLI's usage error for one of `--protocol` / `--port` without the other.
pub const PROTOCOL_AND_PORT: &str =
    "Incorrect Usage: --protocol and --port flags must be specified together";

async fn policy(c: &Client, src: &str, dst: &str, protocol: &str, port: &str) -> Result<Policy> {
    // The cf CLI lower-cases the protocol (`UDP` is udp); control takes only the lower case.
    let protocol: c2c_api::net::Protocol = protocol
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| anyhow::anyhow!("--protocol {protocol}: use tcp or udp"))?;
    let ports: c2c_api::net::PortRange = port.parse().map_err(anyhow::Error::msg)?;
    Ok(Policy {
        source: c.app(src).await?.guid,
        destination: c.app(dst).await?.guid,
        protocol,
        ports,
    })
}

/// `c2c add-network-policy`: prints what cf prints.
pub fn add_policy(dir: &Path, a: AddPolicyArgs) -> Result<()> {
    let (protocol, port) = match (a.protocol.as_deref(), a.port.as_deref()) {
        (None, None) => ("tcp", "8080"),
        (Some(proto), Some(port)) => (proto, port),
        _ => return Err(UsageError(PROTOCOL_AND_PORT.into()).into()),
    };
    with_client(dir, async |c| {
        println!(
            "Adding network policy from app {} to app {} as {}...",
            a.source,
            a.destination,
            user(c).await?
        );
        let p = policy(c, &a.source, &a.destination, protocol, port).await?;
        c.add_policies(&[p]).await?;
        println!("OK");
        Ok(())
    })
}

/// `c2c remove-network-policy`: as cf, a policy that does not exist is said, not an error.
pub fn remove_policy(dir: &Path, a: RemovePolicyArgs) -> Result<()> {
    with_client(dir, async |c| {
        println!(
            "Removing network policy from app {} to app {} as {}...",
            a.source,
            a.destination,
            user(c).await?
        );
        let p = policy(c, &a.source, &a.destination, &a.protocol, &a.port).await?;
        let existing = c.policies(Some(std::slice::from_ref(&p.source))).await?;
        if existing.contains(&p) {
            c.remove_policies(&[p]).await?;
        } else {
            println!("Policy does not exist.");
        }
        println!("OK");
        Ok(())
    })
}

/// there are none here).
pub fn list_policies(dir: &Path, source: Option<String>, json: bool) -> Result<()> {
    with_client(dir, async |c| {
        let who = if json { String::new() } else { user(c).await? };
        let names = app_names(c).await?;
        let list: Vec<Policy> = match &source {
            Some(n) => {
                if !json {
                    println!("Listing network policies of app {n} as {who}...");
                }
                // As cf: the policies naming the app, then those it is the source of.
                let guid = c.app(n).await?.guid;
                c.policies(Some(std::slice::from_ref(&guid)))
                    .await?
                    .into_iter()
                    .filter(|p| p.source == guid)
                    .collect()
            }
            None => {
                if !json {
                    println!("Listing network policies as {who}...");
                }
                c.policies(None).await?
            }
        };
        let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        if json {
            let out: Vec<serde_json::Value> = list
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "source": {"name": name(&p.source), "guid": p.source},
                        "destination": {"name": name(&p.destination), "guid": p.destination},
                        "protocol": p.protocol.to_string(),
                        "ports": {"start": p.ports.start(), "end": p.ports.end()},
                    })
                })
                .collect();
            return print_json(&serde_json::json!({ "policies": out }));
        }
        println!();
        let mut rows = vec![[
            "source".to_string(),
            "destination".into(),
            "protocol".into(),
            "ports".into(),
        ]];
        for p in list {
            rows.push([
                name(&p.source),
                name(&p.destination),
                p.protocol.to_string(),
                p.ports.to_string(),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}
