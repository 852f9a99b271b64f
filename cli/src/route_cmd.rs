//! Internal routes: map-route, unmap-route and routes, with cf's texts.

use std::path::Path;

use anyhow::Result;
use c2c_api::types::RouteRequest;
use clap::Args;

use crate::common::{app_names, print_json, print_table, user, with_client};

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
