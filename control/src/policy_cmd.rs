//! The user commands that talk to the control API: apps, network policies, raw `curl`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::wire::parse_port_range;

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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn app_guid(c: &Client, name: &str) -> Result<String> {
    let app = c
        .call(
            Method::GET,
            &format!("/v1/apps/{}", c2c_api::path_segment(name)),
            None,
        )
        .await?;
    Ok(app["guid"].as_str().unwrap_or_default().to_string())
}

async fn policy_body(c: &Client, a: &PolicyArgs) -> Result<Value> {
    if a.protocol != "tcp" && a.protocol != "udp" {
        bail!("--protocol {}: use tcp or udp", a.protocol);
    }
    let (start, end) = parse_port_range(&a.port).map_err(anyhow::Error::msg)?;
    let (src, dst) = (
        app_guid(c, &a.source).await?,
        app_guid(c, &a.destination).await?,
    );
    Ok(
        json!({"policies": [{"source": {"id": src}, "destination": {"id": dst, "protocol": a.protocol, "ports": {"start": start, "end": end}}}]}),
    )
}

/// `c2c add-network-policy`; returns the line to print.
pub fn add_policy(dir: &Path, a: PolicyArgs) -> Result<String> {
    change_policy(dir, a, false)
}

/// `c2c remove-network-policy`; returns the line to print.
pub fn remove_policy(dir: &Path, a: PolicyArgs) -> Result<String> {
    change_policy(dir, a, true)
}

fn change_policy(dir: &Path, a: PolicyArgs, remove: bool) -> Result<String> {
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let body = policy_body(&c, &a).await?;
        let path = if remove {
            "/networking/v1/external/policies/delete"
        } else {
            "/networking/v1/external/policies"
        };
        c.call(Method::POST, path, Some(&body)).await?;
        let verb = if remove { "Removing" } else { "Adding" };
        Ok(format!(
            "{verb} network policy to app {} from app {}... OK",
            a.destination, a.source
        ))
    })
}

/// `c2c network-policies [--app NAME]`: a table.
pub fn list_policies(dir: &Path, app: Option<String>) -> Result<()> {
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let apps = c.call(Method::GET, "/v1/apps", None).await?;
        let names: std::collections::HashMap<&str, &str> = apps["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["guid"].as_str()?, a["name"].as_str()?)))
            .collect();
        let path = match &app {
            Some(n) => format!(
                "/networking/v1/external/policies?id={}",
                app_guid(&c, n).await?
            ),
            None => "/networking/v1/external/policies".into(),
        };
        let list = c.call(Method::GET, &path, None).await?;
        let mut rows = vec![[
            "source".to_string(),
            "destination".into(),
            "protocol".into(),
            "ports".into(),
        ]];
        for p in list["policies"].as_array().into_iter().flatten() {
            let name = |id: &Value| {
                names
                    .get(id.as_str().unwrap_or_default())
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| id.to_string())
            };
            let (s, e) = (
                p["destination"]["ports"]["start"].as_i64().unwrap_or(0),
                p["destination"]["ports"]["end"].as_i64().unwrap_or(0),
            );
            let ports = if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            };
            rows.push([
                name(&p["source"]["id"]),
                name(&p["destination"]["id"]),
                p["destination"]["protocol"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                ports,
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
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let app = c
            .call(Method::POST, "/v1/apps", Some(&json!({ "name": name })))
            .await?;
        println!(
            "Created app {} (guid {}, tag {})",
            name,
            app["guid"].as_str().unwrap_or_default(),
            app["tag"]
        );
        Ok(())
    })
}

/// `c2c apps`.
pub fn list_apps(dir: &Path) -> Result<()> {
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let apps = c.call(Method::GET, "/v1/apps", None).await?;
        let insts = c.call(Method::GET, "/v1/instances", None).await?;
        let mut rows = vec![[
            "name".to_string(),
            "guid".into(),
            "tag".into(),
            "instances".into(),
        ]];
        for a in apps["apps"].as_array().into_iter().flatten() {
            let guid = a["guid"].as_str().unwrap_or_default();
            let ips: Vec<String> = insts["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["app_guid"] == guid)
                .map(|i| {
                    format!(
                        "#{} {} on {}",
                        i["index"],
                        i["ip"].as_str().unwrap_or_default(),
                        i["cell"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            rows.push([
                a["name"].as_str().unwrap_or_default().into(),
                guid.into(),
                a["tag"].to_string(),
                ips.join(", "),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}

/// `c2c curl PATH [-X METHOD] [-d BODY]`: prints the JSON answer; non-2xx exits 1.
pub fn curl(dir: &Path, a: CurlArgs) -> Result<()> {
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
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

/// `c2c map-route` (`unmap = false`) or `c2c unmap-route`; returns the line to print.
pub fn route(dir: &Path, a: RouteArgs, unmap: bool) -> Result<String> {
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let body = json!({ "app": a.app, "domain": a.domain, "hostname": a.hostname });
        let path = if unmap {
            "/v1/routes/delete"
        } else {
            "/v1/routes"
        };
        c.call(Method::POST, path, Some(&body)).await?;
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
    runtime()?.block_on(async {
        let c = crate::client::from_state_dir(dir)?;
        let apps = c.call(Method::GET, "/v1/apps", None).await?;
        let routes = c.call(Method::GET, "/v1/routes", None).await?;
        let name = |guid: &Value| {
            apps["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["guid"] == *guid)
                .and_then(|a| a["name"].as_str())
                .unwrap_or("?")
                .to_string()
        };
        let mut rows = vec![["host".to_string(), "domain".into(), "app".into()]];
        for r in routes["routes"].as_array().into_iter().flatten() {
            rows.push([
                r["host"].as_str().unwrap_or_default().into(),
                r["domain"].as_str().unwrap_or_default().into(),
                name(&r["app_guid"]),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}
