//! The user commands that talk to the control API: apps, network policies, routes, raw `curl`.
//! Every call goes through the typed client of `c2c-api`; this module only reads arguments and
//! prints what a user sees.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use c2c_api::client::{Client, ClientError, Method, StatusCode};
use c2c_api::types::RouteRequest;
use c2c_api::Policy;
use c2c_platform::lifecycle::State;
use clap::Args;

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

/// A usage error found after the arguments were read (flags that go together): exit 2, as the
/// argument parser's own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `curl` arguments (the cf CLI's).
#[derive(Debug, Args)]
#[command(
    after_help = "By default 'c2c curl' performs a GET to PATH. With -d it performs a POST \
and sets Content-Type to application/json. -H overrides headers, -X the method.

Examples:
  c2c curl /networking/v1/external/policies
  c2c curl /v1/apps -d '{\"name\": \"appc\"}'
  c2c curl /networking/v1/external/policies/delete -d @policies.json"
)]
pub struct CurlArgs {
    /// API path, e.g. /networking/v1/external/policies.
    pub path: String,
    /// HTTP method (GET, POST, PUT, DELETE, etc.).
    #[arg(short = 'X')]
    pub method: Option<String>,
    /// Custom headers to include in the request; repeatable.
    #[arg(short = 'H')]
    pub headers: Vec<String>,
    /// HTTP data to include in the request body, or '@' followed by a file name to read it from.
    #[arg(short = 'd')]
    pub data: Option<String>,
    /// Server errors return exit code 22.
    #[arg(short = 'f', long = "fail")]
    pub fail: bool,
    /// Include response headers in the output.
    #[arg(short = 'i')]
    pub include: bool,
    /// Write the body to FILE instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
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
pub(crate) fn with_client<T>(dir: &Path, f: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
    let c = c2c_platform::client(dir)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f(&c))
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

/// The user the client's token speaks for.
async fn user(c: &Client) -> Result<String> {
    Ok(c.whoami().await?.who.subject)
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

/// App names by GUID.
async fn app_names(c: &Client) -> Result<HashMap<c2c_api::AppGuid, String>> {
    Ok(c.apps()
        .await?
        .into_iter()
        .map(|a| (a.guid, a.name))
        .collect())
}

/// `c2c network-policies [--source APP]`: cf's table (without its space and org columns:
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

/// Prints `v` as pretty JSON and a newline: what every `--json` prints.
pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) {
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
pub fn create_app(dir: &Path, name: &str, space: Option<(&str, &str)>) -> Result<()> {
    with_client(dir, async |c| {
        let app = match c.create_app_in(name, space).await {
            Ok(app) => app,
            // As `cf create-app`: an app of that name this token sees is there already, which
            // is what was asked for. One it does not see (another space's) stays a refusal.
            Err(e @ ClientError::Status { status, .. }) if status == StatusCode::CONFLICT => {
                match c.app(name).await {
                    Ok(_) => {
                        println!("App '{name}' already exists.\nOK");
                        return Ok(());
                    }
                    Err(_) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        println!(
            "Created app {} (guid {}, tag {})",
            app.name, app.guid, app.tag
        );
        Ok(())
    })
}

/// `c2c apps`: each app with its instances (placed ones not yet running say so).
pub fn list_apps(dir: &Path, json: bool) -> Result<()> {
    with_client(dir, async |c| {
        let apps = c.apps().await?;
        let insts = c.instances().await?;
        // Pushed from here: whether each app process still runs.
        let local = c2c_platform::instance::local_states(dir);
        let state = |i: &c2c_api::types::Placement| instance_state(i, &local);
        if json {
            let spaces: HashMap<String, String> = c
                .spaces(None)
                .await?
                .into_iter()
                .map(|s| (s.guid.clone(), format!("{}/{}", s.org, s.name)))
                .collect();
            let out: Vec<serde_json::Value> = apps
                .iter()
                .map(|a| {
                    let instances: Vec<serde_json::Value> = insts
                        .iter()
                        .filter(|i| i.app_guid == a.guid)
                        .map(|i| {
                            serde_json::json!({
                                "index": i.index,
                                "guid": i.guid,
                                "cell": i.cell,
                                "ip": i.ip,
                                "state": state(i).name(),
                                "exit": state(i).exit_json(),
                                "runtime": i.runtime,
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "name": a.name,
                        "guid": a.guid,
                        "tag": a.tag,
                        "space": spaces.get(&a.space).cloned().unwrap_or_else(|| a.space.clone()),
                        "client_identity": a.client_identity.to_string(),
                        "proxy_protocol": a.proxy_protocol.to_string(),
                        "app_protocol": a.app_protocol.to_string(),
                        "instances": instances,
                    })
                })
                .collect();
            return print_json(&serde_json::json!({ "apps": out }));
        }
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
                .map(|i| {
                    let by = i
                        .runtime
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    let mark = match state(i) {
                        State::Crashed(_) => " CRASHED",
                        State::Stopped => " STOPPED",
                        _ => "",
                    };
                    match i.ip {
                        Some(ip) => format!("#{} {ip} on {}{by}{mark}", i.index, i.cell),
                        None => format!("#{} (starting) on {}{by}", i.index, i.cell),
                    }
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

/// `c2c update-app APP [--client-identity required|off] [--proxy-protocol v2|off]`.
pub fn update_app(dir: &Path, name: &str, settings: c2c_api::types::AppSettings) -> Result<()> {
    if settings == Default::default() {
        anyhow::bail!(
            "nothing to change: give --client-identity required|off, --proxy-protocol v2|off and/or --app-protocol http1|http2|http1,http2"
        );
    }
    with_client(dir, async |c| {
        let app = c.update_app(name, &settings).await?;
        println!(
            "Updated app {}: client identity {}, proxy protocol {}, app protocol {}\nOK",
            app.name, app.client_identity, app.proxy_protocol, app.app_protocol
        );
        Ok(())
    })
}

/// An instance's state: a placement without an address is starting; one this machine pushed is
/// as its processes are; one another runtime started (podman on a cell host) is running as far
/// as its cell confirmed it.
fn instance_state(i: &c2c_api::types::Placement, local: &HashMap<String, State>) -> State {
    match (i.ip, local.get(&i.guid)) {
        (None, _) => State::Starting,
        (Some(_), Some(s)) => s.clone(),
        (Some(_), None) => State::Running,
    }
}

/// `c2c app APP`: the app (GUID, tag, space, routes, settings) and each instance: its cell,
/// overlay address, state and, for instances this platform pushed, the host ports that reach
/// it from the underlay.
pub fn show_app(dir: &Path, name: &str, json: bool) -> Result<()> {
    with_client(dir, async |c| {
        let app = c.app(name).await?;
        let mut routes: Vec<String> = c
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.app_guid == app.guid)
            .map(|r| r.fqdn())
            .collect();
        routes.sort();
        let space = c
            .spaces(None)
            .await?
            .into_iter()
            .find(|s| s.guid == app.space)
            .map(|s| format!("{}/{}", s.org, s.name))
            .unwrap_or_else(|| app.space.clone());
        if !json {
            println!(
                "name:    {}\nguid:    {}\ntag:     {}\nspace:   {space}\nroutes:  {}\nclient identity: {}\nproxy protocol:  {}\napp protocol:    {}\n",
                app.name,
                app.guid,
                app.tag,
                if routes.is_empty() { "(none)".to_string() } else { routes.join(", ") },
                app.client_identity,
                app.proxy_protocol,
                app.app_protocol
            );
        }
        let cells: HashMap<String, std::net::Ipv4Addr> = c
            .cells()
            .await?
            .into_iter()
            .filter_map(|cell| Some((cell.name.to_string(), cell.lease?.underlay_ip)))
            .collect();
        // Host ports are the local platform's (its push mapped them); other runtimes' are not
        // known here.
        let local = c2c_platform::instance::instances(dir, Some(&app.name)).unwrap_or_default();
        let mut rows = vec![[
            "#".to_string(),
            "cell".into(),
            "ip".into(),
            "state".into(),
            "http (-> 8080)".into(),
            "https (-> 61443, sidecar)".into(),
            "runtime".into(),
        ]];
        let mut placed: Vec<_> = c
            .instances()
            .await?
            .into_iter()
            .filter(|i| i.app_guid == app.guid)
            .collect();
        placed.sort_by_key(|i| i.index);
        let states = c2c_platform::instance::local_states(dir);
        if json {
            let instances: Vec<serde_json::Value> = placed
                .iter()
                .map(|i| {
                    let ports = local
                        .iter()
                        .find(|l| l.guid == i.guid)
                        .and_then(|l| l.host_ports);
                    serde_json::json!({
                        "index": i.index,
                        "guid": i.guid,
                        "cell": i.cell,
                        "ip": i.ip,
                        "state": instance_state(i, &states).name(),
                        "exit": instance_state(i, &states).exit_json(),
                        "runtime": i.runtime,
                        "host_ports": ports.map(|h| serde_json::json!({
                            "underlay_ip": cells.get(i.cell.as_str()),
                            "http": h.app,
                            "https": h.tls,
                        })),
                    })
                })
                .collect();
            return print_json(&serde_json::json!({
                "name": app.name,
                "guid": app.guid,
                "tag": app.tag,
                "space": space,
                "routes": routes,
                "client_identity": app.client_identity.to_string(),
                "proxy_protocol": app.proxy_protocol.to_string(),
                "app_protocol": app.app_protocol.to_string(),
                "instances": instances,
            }));
        }
        for i in placed {
            let ports = local
                .iter()
                .find(|l| l.guid == i.guid)
                .and_then(|l| l.host_ports);
            let at = |p: u16, scheme: &str| match cells.get(i.cell.as_str()) {
                Some(u) => format!("{scheme}://{u}:{p}"),
                None => p.to_string(),
            };
            rows.push([
                i.index.to_string(),
                i.cell.to_string(),
                i.ip.map(|ip| ip.to_string())
                    .unwrap_or_else(|| "(starting)".into()),
                instance_state(&i, &states).describe(),
                ports.map(|h| at(h.app, "http")).unwrap_or_default(),
                ports.map(|h| at(h.tls, "https")).unwrap_or_default(),
                i.runtime.clone().unwrap_or_default(),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}

/// What `c2c curl` ends with: exit code 22 for an HTTP error under `--fail`, as cf's.
#[derive(Debug)]
pub struct CurlFailed(pub u16);

impl std::fmt::Display for CurlFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "The requested URL returned error: {}", self.0)
    }
}

impl std::error::Error for CurlFailed {}

/// `c2c curl PATH [-X METHOD] [-H HEADER]... [-d DATA] [-i] [--fail] [--output FILE]`, as
/// `cf curl`: the body as the API sent it; an HTTP error is not a failure unless `--fail`.
pub fn curl(dir: &Path, a: CurlArgs) -> Result<()> {
    let body = match a.data.as_deref() {
        Some(d) => {
            // cf trims quotes around the data and around an @file name.
            let trimmed = d.trim_matches(['"', '\'']);
            match trimmed.strip_prefix('@') {
                Some(file) => {
                    let file = file.trim_matches(['"', '\'']);
                    std::fs::read(file).with_context(|| format!("-d @{file}: reading {file}"))?
                }
                None => d.as_bytes().to_vec(),
            }
        }
        None => vec![],
    };
    let method = match (&a.method, &a.data) {
        (Some(m), _) => m.to_ascii_uppercase(),
        (None, Some(_)) => "POST".into(),
        (None, None) => "GET".into(),
    };
    let method = Method::from_bytes(method.as_bytes()).with_context(|| format!("-X {method}"))?;
    let mut headers = vec![];
    if a.data.is_some() {
        headers.push(("content-type".to_string(), "application/json".to_string()));
    }
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("-H {h:?}: expected 'Name: value'"))?;
        headers.retain(|(old, _)| !old.eq_ignore_ascii_case(k.trim()));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let path = format!("/{}", a.path.trim_start_matches('/'));
    with_client(dir, async |c| {
        let (status, resp_headers, raw) = c
            .raw(method, &path, &headers, c2c_api::client::Bytes::from(body))
            .await?;
        if a.fail && (status.is_client_error() || status.is_server_error()) {
            return Err(CurlFailed(status.as_u16()).into());
        }
        let mut out = vec![];
        if a.include {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .as_bytes(),
            );
            for (k, v) in &resp_headers {
                out.extend_from_slice(format!("{k}: ").as_bytes());
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&raw);
        match &a.output {
            Some(f) => {
                std::fs::write(f, &out).with_context(|| format!("--output {}", f.display()))?;
                println!("OK");
            }
            None => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out)?;
                if !out.ends_with(b"\n") {
                    stdout.write_all(b"\n")?;
                }
            }
        }
        Ok(())
    })
}

/// `c2c map-route` (`unmap = false`) or `c2c unmap-route`, with cf's texts.
pub fn route(dir: &Path, a: RouteArgs, unmap: bool) -> Result<()> {
    with_client(dir, async |c| {
        let r = RouteRequest {
            app: a.app.clone(),
            domain: a.domain.clone(),
            hostname: a.hostname.clone(),
        };
        let fqdn = format!(
            "{}.{}",
            a.hostname.to_ascii_lowercase(),
            a.domain.to_ascii_lowercase()
        );
        let who = user(c).await?;
        if unmap {
            println!("Removing route {fqdn} from app {} as {who}...", a.app);
        } else {
            println!("Mapping route {fqdn} to app {} as {who}...", a.app);
        }
        let changed = c.route(&r, unmap).await?;
        match (changed, unmap) {
            (false, false) => println!(
                "App '{}' is already mapped to route '{fqdn}'. Nothing has been updated.",
                a.app
            ),
            (false, true) => {
                println!("Route to be unmapped is not currently mapped to the application.")
            }
            _ => {}
        }
        println!("OK");
        Ok(())
    })
}

/// `c2c routes`: a table.
pub fn list_routes(dir: &Path, json: bool) -> Result<()> {
    with_client(dir, async |c| {
        let names = app_names(c).await?;
        if json {
            let out: Vec<serde_json::Value> = c
                .routes()
                .await?
                .into_iter()
                .map(|r| {
                    serde_json::json!({
                        "host": r.host,
                        "domain": r.domain,
                        "url": r.fqdn(),
                        "app": {"name": names.get(&r.app_guid), "guid": r.app_guid},
                    })
                })
                .collect();
            return print_json(&serde_json::json!({ "routes": out }));
        }
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
