//! `c2c cell register|remove` and `c2c cells`: the registry of cells control accepts on its
//! cell API.

use std::path::Path;

use anyhow::Result;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Registers cell `name`, writing its identity into `out` (see
/// [`c2c_platform::cells::register`]).
pub fn register(state_dir: &Path, name: &str, out: &Path) -> Result<()> {
    c2c_platform::cells::register(state_dir, name, out)
}

/// Revokes cell `name`: control refuses its certificate, frees its lease and removes its
/// instances; the other cells drop their routes to it.
pub fn remove(state_dir: &Path, name: &str) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    runtime()?.block_on(client.remove_cell(name))?;
    Ok(())
}

/// Lists registered cells with their leases.
pub fn list(state_dir: &Path, json: bool) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    let cells = runtime()?.block_on(client.cells())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut rows = vec![[
        "name",
        "subnet",
        "underlay",
        "last renewal",
        "instances",
        "state",
    ]
    .map(String::from)];
    if json {
        let out: Vec<serde_json::Value> = cells
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "subnet": c.lease.as_ref().map(|l| l.subnet.to_string()),
                    "underlay_ip": c.lease.as_ref().map(|l| l.underlay_ip),
                    "renewed_secs_ago": c.lease.as_ref().map(|l| (now - l.renewed_at).max(0)),
                    "instances": c.instances,
                    "state": match (&c.lease, c.healthy) {
                        (Some(_), true) => "healthy",
                        (Some(_), false) => "not renewing",
                        (None, _) => "no lease",
                    },
                })
            })
            .collect();
        return crate::common::print_json(&serde_json::json!({ "cells": out }));
    }
    for c in cells {
        let (subnet, underlay, renewed) = match &c.lease {
            Some(l) => (
                l.subnet.to_string(),
                l.underlay_ip.to_string(),
                format!("{}s ago", (now - l.renewed_at).max(0)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let state = match (&c.lease, c.healthy) {
            (Some(_), true) => "healthy",
            (Some(_), false) => "not renewing",
            (None, _) => "no lease",
        };
        rows.push([
            c.name.to_string(),
            subnet,
            underlay,
            renewed,
            c.instances.to_string(),
            state.to_string(),
        ]);
    }
    // Columns as wide as their widest cell, as the other lists.
    crate::common::print_table(&rows);
    Ok(())
}

/// `c2c cell token create`: prints a join token.
pub fn create_join_token(
    state_dir: &Path,
    ttl: std::time::Duration,
    cell: Option<&str>,
) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    let made = runtime()?.block_on(client.create_join_token(ttl, cell))?;
    let pin = c2c_platform::cells::control_pin(state_dir)?;
    // Every replica by the name its certificate holds (`control serve --san`); without one,
    // the URL this CLI used, which may be this host's own loopback.
    let control = if made.control.is_empty() {
        format!(
            "{} (start control with --san NAME so other hosts are told a name they can reach)",
            client.url()
        )
    } else {
        made.control.join(",")
    };
    eprintln!(
        "Join token for one cell, valid for {} (on the new host: c2c cell join --control {control} --token <token> --name NAME --underlay-ip IP):",
        humantime::format_duration(ttl),
    );
    println!("{}.{}.{pin}", c2c_platform::cells::JOIN_PREFIX, made.secret);
    Ok(())
}

/// `c2c cell token list`.
pub fn list_join_tokens(state_dir: &Path) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    let tokens = runtime()?.block_on(client.join_tokens())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    println!("{:<14}{:<16}{:<26}state", "id", "cell", "expires");
    for t in tokens {
        let state = match (&t.used_by, t.expires_at <= now) {
            (Some(c), _) => format!("used by {c}"),
            (None, true) => "expired".into(),
            (None, false) => "unused".into(),
        };
        let expires = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.expires_at.max(0) as u64),
        );
        println!(
            "{:<14}{:<16}{:<26}{state}",
            t.id,
            t.cell.as_deref().unwrap_or("(new name)"),
            expires.to_string()
        );
    }
    Ok(())
}

/// `c2c cell token revoke ID`.
pub fn revoke_join_token(state_dir: &Path, id: &str) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    if runtime()?.block_on(client.revoke_join_token(id))? {
        println!("Revoked join token {id}: no cell can join with it");
    } else {
        println!("No unused join token {id} (used tokens are spent; see c2c cell token list)");
    }
    Ok(())
}

/// `c2c cell join` arguments.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The token from `c2c cell token create`.
    #[arg(long, env = "C2C_JOIN_TOKEN")]
    pub token: String,
    /// This cell's name: 1-63 lower-case letters, digits or '-'.
    #[arg(long)]
    pub name: String,
    /// This host's underlay address (the VTEP's local address; some interface must hold it).
    #[arg(long)]
    pub underlay_ip: std::net::Ipv4Addr,
    /// Where to write the cell's identity (cert.pem, key.pem, control-ca.pem) and agent.env.
    #[arg(long, default_value = "/var/lib/c2c/cell/tls")]
    pub out: std::path::PathBuf,
}

/// `c2c cell join`.
/// `control` is the global `--control`: every replica's URL, which the join hint names.
pub fn join(a: &JoinArgs, control: Option<&str>) -> Result<()> {
    use anyhow::Context;
    let control = control.ok_or_else(|| {
        anyhow::anyhow!("give --control URL[,URL...]: every control replica's URL, as the join hint of `c2c cell token create` names them")
    })?;
    let name: c2c_api::CellName = a.name.parse().map_err(anyhow::Error::msg)?;
    let (secret, pin) = c2c_platform::cells::parse_join_token(&a.token)?;
    let client = c2c_api::client::Client::pinned(control, &pin)?;
    runtime()?.block_on(c2c_platform::cells::join_with(
        &client, &secret, &pin, &name, &a.out,
    ))?;
    let ca = a.out.join(c2c_platform::cells::CONTROL_CA_FILE);
    let env = format!(
        "# c2c-agent settings written by `c2c cell join` (a systemd EnvironmentFile)\nC2C_CELL={name}\nC2C_UNDERLAY_IP={}\nC2C_CONTROL_URL={}\nC2C_CONTROL_CA={}\nC2C_CERT_DIR={}\n",
        a.underlay_ip,
        control,
        ca.display(),
        a.out.display()
    );
    let env_file = a.out.join("agent.env");
    c2c_certs::pair::write_file_atomic(&env_file, env.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", env_file.display()))?;
    let root = a.out.join(c2c_platform::cells::PLATFORM_CA_FILE);
    println!(
        "Joined as cell {name}: identity in {}, agent settings in {}, the platform root (what apps' certificates verify against) in {}",
        a.out.display(),
        env_file.display(),
        root.display()
    );
    Ok(())
}
