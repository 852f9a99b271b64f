//! `c2c push`, `c2c exec`, `c2c delete`: app instances as the local runtime runs them (what
//! Garden and its external networker do on a Diego cell): a network namespace, `c2c-cni` ADD run
//! as any CNI runtime runs it, a cert dir, then the sidecar and the app inside the namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{in_netns, ip, preflight, Paths, PlatformInfo};
use c2c_api::layout::Layout;

mod start;

use start::{cni, start_instance};

/// Internal domain of default routes.
pub const INTERNAL_DOMAIN: &str = "apps.internal";

/// Where `c2c push` takes host ports from by default (CF's: above 61000).
pub const DEFAULT_HOST_PORTS: (u16, u16) = (61000, 65534);

/// The app's port in each container.
pub const APP_PORT: u16 = 8080;
/// The sidecar's TLS port in each container.
pub const TLS_PORT: u16 = 61443;

/// Parses `START-END`, the range host ports are taken from.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("invalid host port range {s:?}: use START-END, e.g. 61000-65534"))?;
    let (a, b): (u16, u16) = (
        a.trim()
            .parse()
            .map_err(|_| format!("invalid port {a:?}"))?,
        b.trim()
            .parse()
            .map_err(|_| format!("invalid port {b:?}"))?,
    );
    if a == 0 || a >= b {
        return Err(format!(
            "invalid host port range {s:?}: the first port must be 1 or more and below the last"
        ));
    }
    Ok((a, b))
}

/// The two lowest ports of `range` that no instance in `taken` holds.
fn free_host_ports(range: (u16, u16), taken: &[HostPorts]) -> Option<HostPorts> {
    let used: std::collections::BTreeSet<u16> = taken.iter().flat_map(|h| [h.app, h.tls]).collect();
    let mut free = (range.0..=range.1).filter(|p| !used.contains(p));
    Some(HostPorts {
        app: free.next()?,
        tls: free.next()?,
    })
}

/// `c2c push` options.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// App name.
    pub app: String,
    /// How many instances the app has after the push (as cf's -i: the total, not how many to
    /// add): more are started, the highest indexes stopped. Without it, a new app gets one
    /// and an app pushed before keeps as many as it has.
    #[arg(long, short = 'i')]
    pub instances: Option<u32>,
    /// Do not map the default internal route <app>.apps.internal.
    #[arg(long)]
    pub no_route: bool,
    /// Put every instance on this cell (default: spread over the cells).
    #[arg(long)]
    pub cell: Option<String>,
    /// Run this shell command as the app instead of the built-in demo server; it must listen on
    /// $PORT (8080).
    #[arg(long)]
    pub command: Option<String>,
    /// Org of the app's space, for a new app (with -s; default: the default org).
    #[arg(short = 'o', long = "org", requires = "space")]
    pub org: Option<String>,
    /// The app's space, for a new app (with -o; default: the default space). Its security
    /// groups decide what the app may reach outside the overlay.
    #[arg(short = 's', long = "space", requires = "org")]
    pub space: Option<String>,
    /// Host ports on each instance's cell are taken from this range, two per instance: one to
    /// the app's 8080, one to the sidecar's 61443 (`c2c app APP` lists them).
    #[arg(long, default_value = "61000-65534", value_parser = parse_port_range)]
    pub host_ports: (u16, u16),
    /// Print nothing (a caller that reports on its own: `c2c check`).
    #[arg(skip)]
    pub quiet: bool,
}

/// `println!` unless the push is quiet.
macro_rules! say {
    ($a:expr, $($t:tt)*) => {
        if !$a.quiet {
            println!($($t)*);
        }
    };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub use c2c_api::names::default_hostname;

pub use super::lifecycle::local_states;
use super::records::{check_app, identity_env, PUSHED_FILE};
pub use super::records::{instances, HostPorts, InstanceInfo};

/// `c2c scale APP -i N`: the app's instances become N, as its last push made them (its command,
/// its host-port range), spread over the cells; its routes are left as they are.
pub fn scale(state_dir: &Path, app: &str, n: u32) -> Result<()> {
    check_app(app)?;
    let pushed: serde_json::Value =
        std::fs::read(state_dir.join("instances").join(app).join(PUSHED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .with_context(|| {
                format!("{app} was never pushed to this platform: `c2c push {app} -i {n}`")
            })?;
    let ports = pushed["host_ports"].as_array().and_then(|p| {
        Some((
            u16::try_from(p.first()?.as_u64()?).ok()?,
            u16::try_from(p.get(1)?.as_u64()?).ok()?,
        ))
    });
    let args = PushArgs {
        app: app.to_string(),
        instances: Some(n),
        no_route: true,
        cell: None,
        command: pushed["command"].as_str().map(str::to_string),
        org: None,
        space: None,
        host_ports: ports.unwrap_or(DEFAULT_HOST_PORTS),
        quiet: false,
    };
    push(state_dir, &args).map(drop)
}

/// Creates the app if needed and starts its instances. Returns them.
pub fn push(state_dir: &Path, a: &PushArgs) -> Result<Vec<InstanceInfo>> {
    preflight()?;
    check_app(&a.app)?;
    let paths = Paths::new(state_dir);
    let info = PlatformInfo::load(&paths)?;
    if let Some(n) = a.instances {
        anyhow::ensure!((1..=250).contains(&n), "--instances must be 1-250");
    }
    if let Some(c) = &a.cell {
        info.cell(c)?;
    }
    let hostname = if a.no_route {
        None
    } else {
        Some(default_hostname(&a.app).with_context(|| {
            format!(
                "no internal hostname can be made from the app name {:?}: push with --no-route, then `c2c map-route {} {INTERNAL_DOMAIN} --hostname HOST`",
                a.app, a.app
            )
        })?)
    };
    let client = crate::client(state_dir)?;
    let rt = runtime()?;
    let app_guid = app_with_route(a, hostname, &client, &rt)?;
    // What new instances run, for `c2c scale` to start more of the same.
    std::fs::create_dir_all(state_dir.join("instances").join(&a.app))?;
    std::fs::write(
        state_dir.join("instances").join(&a.app).join(PUSHED_FILE),
        serde_json::to_vec_pretty(&serde_json::json!({
            "command": a.command, "host_ports": [a.host_ports.0, a.host_ports.1],
        }))?,
    )?;
    let mut existing = instances(state_dir, Some(&a.app))?;
    existing.sort_by_key(|i| i.index);
    let want = a.instances.unwrap_or(existing.len().max(1) as u32) as usize;
    // Fewer asked for: the highest indexes go (as cf scales down).
    while existing.len() > want {
        let gone = existing.pop().expect("more than wanted");
        remove_instance(state_dir, &gone)?;
        say!(
            a,
            "  {}/{} stopped ({} of {want} kept)",
            gone.app,
            gone.index,
            existing.len()
        );
    }
    let add = want - existing.len();
    if add == 0 {
        say!(a, "  {}: {want} instance(s), as asked; none started", a.app);
    }
    let first = existing.iter().map(|i| i.index + 1).max().unwrap_or(0);
    let placed = Placed {
        state_dir,
        info: &info,
        client: &client,
        rt: &rt,
    };
    let mut out = vec![];
    for k in 0..add as u32 {
        let index = first + k;
        let cell = match &a.cell {
            Some(c) => info.cell(c)?.clone(),
            None => info.cells[(index as usize) % info.cells.len()].clone(),
        };
        let inst = placed.start(a, &app_guid, &cell, index)?;
        let ports = inst
            .host_ports
            .map(|h| {
                format!(
                    ", http://{u}:{} https://{u}:{}",
                    h.app,
                    h.tls,
                    u = cell.underlay_ip
                )
            })
            .unwrap_or_default();
        say!(
            a,
            "  {}/{} on {}: {} (netns {}{ports})",
            inst.app,
            inst.index,
            inst.cell,
            inst.ip,
            inst.netns
        );
        out.push(inst);
    }
    Ok(out)
}

/// The pushed app in control (made if missing, in the space asked for) with its default
/// route when one is given; returns its GUID.
fn app_with_route(
    a: &PushArgs,
    hostname: Option<String>,
    client: &c2c_api::client::Client,
    rt: &tokio::runtime::Runtime,
) -> Result<c2c_api::AppGuid> {
    let app = rt.block_on(async {
        match client.app(&a.app).await {
            Err(e) if e.is_not_found() => {
                client
                    .create_app_in(&a.app, a.org.as_deref().zip(a.space.as_deref()))
                    .await
            }
            r => r,
        }
    })?;
    if let Some(host) = hostname {
        // CF maps an app's default route at push; here the internal one: <app>.apps.internal.
        let r = c2c_api::types::RouteRequest {
            app: a.app.clone(),
            domain: INTERNAL_DOMAIN.into(),
            hostname: host.clone(),
        };
        rt.block_on(client.route(&r, false))?;
        say!(a, "  route: {host}.{INTERNAL_DOMAIN}");
    }
    Ok(app.guid)
}

/// Where push places and starts instances.
struct Placed<'a> {
    state_dir: &'a Path,
    info: &'a PlatformInfo,
    client: &'a c2c_api::client::Client,
    rt: &'a tokio::runtime::Runtime,
}

impl Placed<'_> {
    /// Instance `index` of the app, placed by control on `cell` and started there; a failure
    /// takes back what was started of it and its placement.
    fn start(
        &self,
        a: &PushArgs,
        app_guid: &c2c_api::AppGuid,
        cell: &super::CellInfo,
        index: u32,
    ) -> Result<InstanceInfo> {
        // Placement is control's: the instance exists because we (with the user's token) asked
        // for it on this cell; control generates its GUID, and the cell may only confirm it.
        let guid = self
            .rt
            .block_on(self.client.place_by(
                &a.app,
                &cell.name.parse().map_err(anyhow::Error::msg)?,
                Some(index),
                Some("c2c push"),
            ))?
            .guid;
        let rec = InstanceInfo {
            app: a.app.clone(),
            app_guid: app_guid.to_string(),
            index,
            guid,
            cell: cell.name.clone(),
            netns: format!("{}-{}-{index}", self.info.prefix, a.app),
            container_id: format!("{}-{index}", a.app),
            ip: Ipv4Addr::UNSPECIFIED,
            host_ports: None,
            probe_at: None,
        };
        start_instance(self.state_dir, cell, rec.clone(), a).map_err(|e| {
            // What was started of it, and its placement, go: a failed push leaves no
            // instance behind in control or on the cell.
            let _ = remove_instance(self.state_dir, &rec);
            let _ = std::fs::remove_dir_all(Paths::new(self.state_dir).instance(&a.app, index));
            e.context(format!(
                "starting {}/{index} (its placement is taken back)",
                a.app
            ))
        })
    }
}

/// Finds `APP` or `APP/INDEX`.
pub fn find(state_dir: &Path, target: &str) -> Result<InstanceInfo> {
    let (app, index) = match target.split_once('/') {
        Some((a, i)) => (
            a,
            i.parse::<u32>()
                .with_context(|| format!("{target}: the index must be a number"))?,
        ),
        None => (target, 0),
    };
    instances(state_dir, Some(app))?
        .into_iter()
        .find(|i| i.index == index)
        .with_context(|| format!("no instance {app}/{index} (see `c2c apps`)"))
}

/// Runs `cmd` inside an instance's namespace with CF's instance variables and the platform CA as
/// the trust store for curl and OpenSSL. Returns its exit code.
pub fn exec(state_dir: &Path, target: &str, cmd: &[String]) -> Result<i32> {
    preflight()?;
    let status = exec_command(state_dir, target, cmd)?
        .status()
        .context("running the command")?;
    Ok(status.code().unwrap_or(1))
}

/// The command [`exec`] runs, ready to spawn (the demo captures its output).
pub fn exec_command(state_dir: &Path, target: &str, cmd: &[String]) -> Result<Command> {
    let inst = find(state_dir, target)?;
    let ca = Layout::new(state_dir).ca_dir().join("ca.pem");
    let (prog, args) = cmd
        .split_first()
        .context("nothing to run: c2c exec APP -- CMD...")?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &inst.netns, prog])
        .args(args)
        .env("CF_INSTANCE_INTERNAL_IP", inst.ip.to_string())
        .env("CF_INSTANCE_INDEX", inst.index.to_string())
        .env("CF_INSTANCE_GUID", &inst.guid)
        .env("SSL_CERT_FILE", &ca)
        .env("CURL_CA_BUNDLE", &ca)
        .envs(identity_env(
            &Paths::new(state_dir)
                .instance(&inst.app, inst.index)
                .join("certs"),
        ));
    Ok(c)
}

/// Stops one instance (processes, CNI DEL, namespace) and forgets it.
pub fn remove_instance(state_dir: &Path, inst: &InstanceInfo) -> Result<()> {
    let paths = Paths::new(state_dir);
    let dir = paths.instance(&inst.app, inst.index);
    super::lifecycle::stop_processes(state_dir, inst);
    let mut problems = vec![];
    let info = PlatformInfo::load(&paths).ok();
    if let Some(cell) = info.as_ref().and_then(|i| i.cell(&inst.cell).ok()) {
        let conf =
            c2c_api::cni_list::read_plugin_config(&paths.cell(&cell.name).join("cni.conflist"))
                .map_err(anyhow::Error::from);
        if let Err(e) =
            conf.and_then(|conf| cni(&cell.netns, "DEL", &inst.container_id, &inst.netns, &conf))
        {
            problems.push(format!("{e:#}"));
        }
    }
    if super::netns_exists(&inst.netns) {
        if let Err(e) = ip(&["netns", "del", &inst.netns]) {
            problems.push(e.to_string());
        }
    }
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&inst.netns));
    let _ = std::fs::remove_dir_all(&dir);
    // The placement goes last: until then control still knows the instance it placed.
    let unplaced = crate::client(state_dir)
        .and_then(|client| Ok(runtime()?.block_on(client.remove_instance(&inst.guid))?));
    if let Err(e) = unplaced {
        problems.push(format!("removing its placement from control: {e:#}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}/{}: {}", inst.app, inst.index, problems.join("; "))
    }
}

/// Stops all of an app's instances and forgets them; goes on past errors, reporting them.
pub fn remove_app_instances(state_dir: &Path, app: &str) -> Result<()> {
    check_app(app)?;
    let problems: Vec<String> = instances(state_dir, Some(app))?
        .iter()
        .filter_map(|i| {
            remove_instance(state_dir, i)
                .err()
                .map(|e| format!("{e:#}"))
        })
        .collect();
    let _ = std::fs::remove_dir_all(Paths::new(state_dir).app(app));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// `c2c delete APP`: instances gone, then the app (and its policies) in control.
/// `c2c delete APP/INDEX`: that instance only; the app and its policies stay.
pub fn delete(state_dir: &Path, target: &str) -> Result<()> {
    preflight()?;
    let app = target.split_once('/').map_or(target, |(a, _)| a);
    check_app(app)?;
    // Control first: a token that may not manage the app touches none of its instances here.
    let client = crate::client(state_dir)?;
    // Only a 404 means the app is not there (or not this token's); an unreachable control or
    // any other failure is said as it is, never as "no such app".
    match runtime()?.block_on(client.app(app)) {
        Ok(_) => {}
        // As `cf delete`: deleting what is not there is done, not a failure (scripts pass -f
        // and run again). An instance of it is another matter: that one was asked for.
        Err(e) if e.is_not_found() && !target.contains('/') => {
            println!("App '{app}' does not exist.\nOK");
            return Ok(());
        }
        Err(e) if e.is_not_found() => anyhow::bail!(
            "App '{app}' does not exist, or this token may not manage it (see `c2c apps`)"
        ),
        Err(e) => return Err(e.into()),
    }
    if target.contains('/') {
        let inst = find(state_dir, target)?;
        remove_instance(state_dir, &inst)?;
        println!("Deleted instance {target} ({})", inst.ip);
        return Ok(());
    }
    remove_app_instances(state_dir, target)?;
    runtime()?.block_on(client.delete_app(target))?;
    println!("Deleted app {target} with its instances and policies");
    Ok(())
}

/// Deletes app `app` (its instances here, then the app with its routes and policies in
/// control) without a word: for callers that report on their own (`c2c check`).
pub fn delete_quietly(state_dir: &Path, app: &str) -> Result<()> {
    remove_app_instances(state_dir, app)?;
    let client = crate::client(state_dir)?;
    match runtime()?.block_on(client.delete_app(app)) {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// A plain HTTP GET from inside namespace `ns` (what `curl` in the container would do), with a
/// short timeout. Returns the body, or the connection error (e.g. connection refused).
pub fn http_get(ns: &str, to: SocketAddr, path: &str) -> Result<std::io::Result<String>> {
    let path = path.to_string();
    in_netns(ns, move || super::demo_app::get(to, &path))
}

/// One UDP datagram from inside namespace `ns` and its answer (the demo app echoes on its port).
pub fn udp_get(ns: &str, to: SocketAddr) -> Result<std::io::Result<String>> {
    in_netns(ns, move || super::demo_app::udp_get(to))
}
