//! The user commands that talk to the control API: apps, network policies, routes, raw `curl`.
//! Every call goes through the typed client of `c2c-api`; this module only reads arguments and
//! prints what a user sees.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use c2c_api::client::{Client, Method};
use c2c_api::types::RouteRequest;
use c2c_api::Policy;
use clap::Args;
use serde_json::Value;

/// `add-network-policy` / `remove-network-policy` arguments (the cf CLI's).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Source app name.
    pub source: String,
    /// Destination app name.
    pub destination: String,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Port or range on the destination, e.g. 8080 or 8080-8090.
    #[arg(long, default_value = "8080")]
    pub port: String,
}

/// `curl` arguments.
#[derive(Debug, Args)]
pub struct CurlArgs {
    /// API path, e.g. /networking/v1/external/policies.
    pub path: String,
    /// HTTP method.
    #[arg(short = 'X', long = "method", default_value = "GET")]
    pub method: String,
    /// Request body (JSON), or @FILE to read it from a file (as `cf curl -d @file`)
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
}

/// `map-route` / `unmap-route` arguments (the cf CLI's).
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// App name.
    pub app: String,
    /// Internal domain, e.g. apps.internal.
    pub domain: String,
    /// Host name: the route is HOST.DOMAIN.
    #[arg(long, short = 'n')]
    pub hostname: String,
}

/// Runs `f` with the state dir's client on a current-thread runtime.
fn with_client<T>(dir: &Path, f: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
    let c = c2c_platform::client(dir)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f(&c))
}

async fn policy(c: &Client, a: &PolicyArgs) -> Result<Policy> {
    let protocol: c2c_api::net::Protocol = a
        .protocol
        .parse()
        .map_err(|_| anyhow::anyhow!("--protocol {}: use tcp or udp", a.protocol))?;
    let ports: c2c_api::net::PortRange = a.port.parse().map_err(anyhow::Error::msg)?;
    Ok(Policy {
        source: c.app(&a.source).await?.guid,
        destination: c.app(&a.destination).await?.guid,
        protocol,
        ports,
    })
}

/// `c2c add-network-policy` (or with `remove`, `remove-network-policy`); returns the line to
/// print.
pub fn change_policy(dir: &Path, a: PolicyArgs, remove: bool) -> Result<String> {
    with_client(dir, async |c| {
        let p = policy(c, &a).await?;
        if remove {
            c.remove_policies(&[p]).await?;
        } else {
            c.add_policies(&[p]).await?;
        }
        let verb = if remove { "Removing" } else { "Adding" };
        Ok(format!(
            "{verb} network policy to app {} from app {}... OK",
            a.destination, a.source
        ))
    })
}

/// App names by GUID.
async fn app_names(c: &Client) -> Result<HashMap<c2c_api::AppGuid, String>> {
    Ok(c.apps()
        .await?
        .into_iter()
        .map(|a| (a.guid, a.name))
        .collect())
}

/// `c2c network-policies [--app NAME]`: a table.
pub fn list_policies(dir: &Path, app: Option<String>) -> Result<()> {
    with_client(dir, async |c| {
        let names = app_names(c).await?;
        let ids = match &app {
            Some(n) => Some(vec![c.app(n).await?.guid]),
            None => None,
        };
        let list = c.policies(ids.as_deref()).await?;
        let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
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

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// `c2c create-app NAME`.
pub fn create_app(dir: &Path, name: &str) -> Result<()> {
    with_client(dir, async |c| {
        let app = c.create_app(name).await?;
        println!(
            "Created app {} (guid {}, tag {})",
            app.name, app.guid, app.tag
        );
        Ok(())
    })
}

/// `c2c apps`: each app with its instances (placed ones not yet running say so).
pub fn list_apps(dir: &Path) -> Result<()> {
    with_client(dir, async |c| {
        let apps = c.apps().await?;
        let insts = c.instances().await?;
        let mut rows = vec![[
            "name".to_string(),
            "guid".into(),
            "tag".into(),
            "instances".into(),
        ]];
        for a in apps {
            let ips: Vec<String> = insts
                .iter()
                .filter(|i| i.app_guid == a.guid)
                .map(|i| match i.ip {
                    Some(ip) => format!("#{} {ip} on {}", i.index, i.cell),
                    None => format!("#{} (starting) on {}", i.index, i.cell),
                })
                .collect();
            rows.push([
                a.name,
                a.guid.to_string(),
                a.tag.to_string(),
                ips.join(", "),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}

/// `c2c curl PATH [-X METHOD] [-d BODY]`: prints the JSON answer; non-2xx exits 1.
pub fn curl(dir: &Path, a: CurlArgs) -> Result<()> {
    with_client(dir, async |c| {
        let method = Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("-X {}", a.method))?;
        let body: Option<Value> = match a.data.as_deref() {
            Some(d) => {
                let (text, from) = match d.strip_prefix('@') {
                    Some(file) => (
                        std::fs::read_to_string(file)
                            .with_context(|| format!("-d @{file}: reading {file}"))?,
                        format!("the contents of {file}"),
                    ),
                    None => (d.to_string(), "-d".to_string()),
                };
                Some(serde_json::from_str(&text).with_context(|| format!("{from} must be JSON"))?)
            }
            None => None,
        };
        let (status, json) = c.request(method, &a.path, body.as_ref()).await?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        if !status.is_success() {
            bail!("{status}");
        }
        Ok(())
    })
}

/// `c2c map-route` (`unmap = false`) or `c2c unmap-route`; returns the line to print.
pub fn route(dir: &Path, a: RouteArgs, unmap: bool) -> Result<String> {
    with_client(dir, async |c| {
        let r = RouteRequest {
            app: a.app.clone(),
            domain: a.domain.clone(),
            hostname: a.hostname.clone(),
        };
        c.route(&r, unmap).await?;
        let fqdn = format!(
            "{}.{}",
            a.hostname.to_ascii_lowercase(),
            a.domain.to_ascii_lowercase()
        );
        Ok(if unmap {
            format!("Removing route {fqdn} from app {}... OK", a.app)
        } else {
            format!("Mapping route {fqdn} to app {}... OK", a.app)
        })
    })
}

/// `c2c routes`: a table.
pub fn list_routes(dir: &Path) -> Result<()> {
    with_client(dir, async |c| {
        let names = app_names(c).await?;
        let mut rows = vec![["host".to_string(), "domain".into(), "app".into()]];
        for r in c.routes().await? {
            let app = names
                .get(&r.app_guid)
                .cloned()
                .unwrap_or_else(|| "?".into());
            rows.push([r.host, r.domain, app]);
        }
        print_table(&rows);
        Ok(())
    })
}
