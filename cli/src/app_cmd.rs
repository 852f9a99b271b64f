//! The app verbs that talk to control: create-app, apps, app (with each instance's state,
//! routes and host ports), update-app.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use c2c_api::client::{ClientError, StatusCode};
use c2c_platform::lifecycle::State;

use crate::common::{print_json, print_table, with_client};

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
