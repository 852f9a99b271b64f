//! Orgs, spaces and security groups, with the cf CLI's verbs, arguments and texts
//! (`create-security-group NAME FILE`, `bind-security-group NAME ORG [--space SPACE]
//! [--lifecycle running|staging]`, ...). The admin's commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use c2c_api::asg::{Lifecycle, SecurityGroup};
use c2c_api::client::Client;
use c2c_api::types::BindingRequest;
use clap::{Args, Subcommand};

use crate::common::{print_json, print_table, with_client};

/// What a binding or an update ends with (cf says a restart may be needed; here none is).
const TIP: &str = "TIP: Changes are enforced on running apps at once; no restart is needed.";

/// A binding request.
fn binding(lifecycle: Lifecycle, org: Option<&str>, space: Option<&str>) -> BindingRequest {
    BindingRequest {
        lifecycle,
        org: org.map(str::to_string),
        space: space.map(str::to_string),
    }
}

/// The verbs, each a top-level `c2c` command.
#[derive(Debug, Subcommand)]
pub enum AsgCommand {
    /// Create an org.
    CreateOrg {
        /// Org name.
        name: String,
    },
    /// List orgs.
    Orgs,
    /// Create a space in an org.
    CreateSpace {
        /// Space name.
        name: String,
        /// Org of the space.
        #[arg(short = 'o', long = "org")]
        org: String,
    },
    /// List spaces (of one org with -o).
    Spaces {
        /// Only this org's spaces.
        #[arg(short = 'o', long = "org")]
        org: Option<String>,
    },
    /// Set a space's quota: how many apps it may hold and how many instances its apps may
    /// have placed in all (CF's space quotas). Binds users' tokens, not the admin. Spaces
    /// without a quota of their own have control's defaults (`control serve
    /// --space-max-apps 300 --space-max-instances 2000`).
    SetSpaceQuota {
        /// Space name.
        space: String,
        /// Org of the space.
        #[arg(short = 'o', long = "org")]
        org: String,
        /// Apps the space may hold (unchanged if not given).
        #[arg(long)]
        apps: Option<u32>,
        /// Instances its apps may have placed in all (CF's `-a APP_INSTANCES`; unchanged if
        /// not given).
        #[arg(short = 'a', long = "instances")]
        instances: Option<u32>,
        /// Routes its apps may have mapped in all (CF's `-r`; unchanged if not given).
        #[arg(short = 'r', long = "routes")]
        routes: Option<u32>,
    },
    /// List every space's quota and use.
    SpaceQuotas,
    /// Create a security group from a JSON file of rules (Cloud Foundry's format: protocol,
    /// destination, ports, type, code, log, description).
    CreateSecurityGroup(GroupFile),
    /// Replace a security group's rules with those of a JSON file; enforced at once on every
    /// running app it is bound to.
    UpdateSecurityGroup(GroupFile),
    /// Delete a security group and its bindings.
    DeleteSecurityGroup {
        /// Security group name.
        name: String,
        /// Force deletion without confirmation (there is no prompt here; accepted for cf's
        /// scripts).
        #[arg(short = 'f')]
        force: bool,
    },
    /// Bind a security group to a space, or to every space of an org (without --space).
    BindSecurityGroup(BindArgs),
    /// Unbind a security group from a space.
    UnbindSecurityGroup(UnbindArgs),
    /// Bind a security group to every space, for running apps.
    BindRunningSecurityGroup {
        /// Security group name.
        name: String,
    },
    /// Bind a security group to every space, for staging.
    BindStagingSecurityGroup {
        /// Security group name.
        name: String,
    },
    /// Unbind a security group from the running defaults.
    UnbindRunningSecurityGroup {
        /// Security group name.
        name: String,
    },
    /// Unbind a security group from the staging defaults.
    UnbindStagingSecurityGroup {
        /// Security group name.
        name: String,
    },
    /// List security groups with where they are bound.
    SecurityGroups {
        /// Print JSON (a stable shape: each group's rules and bindings, org and space by name)
        /// instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one security group: its rules and where it is bound.
    SecurityGroup {
        /// Security group name.
        name: String,
        /// Print JSON (the shape of one group in `security-groups --json`).
        #[arg(long)]
        json: bool,
    },
    /// List the security groups bound to every space for running apps.
    RunningSecurityGroups,
    /// List the security groups bound to every space for staging.
    StagingSecurityGroups,
}

/// `create-security-group` / `update-security-group` arguments.
#[derive(Debug, Args)]
pub struct GroupFile {
    /// Security group name.
    pub name: String,
    /// Path to a JSON file of rules, e.g. [{"protocol":"tcp","destination":"10.0.0.0/24","ports":"443"}].
    pub path: PathBuf,
}

/// `bind-security-group` arguments.
#[derive(Debug, Args)]
pub struct BindArgs {
    /// Security group name.
    pub name: String,
    /// Org name.
    pub org: String,
    /// Space name (default: every space of the org).
    #[arg(long)]
    pub space: Option<String>,
    /// Lifecycle phase the group applies to: running or staging.
    #[arg(long, default_value = "running")]
    pub lifecycle: Lifecycle,
}

/// `unbind-security-group` arguments.
#[derive(Debug, Args)]
pub struct UnbindArgs {
    /// Security group name.
    pub name: String,
    /// Org name.
    pub org: String,
    /// Space name.
    pub space: String,
    /// Lifecycle phase the group applies to: running or staging.
    #[arg(long, default_value = "running")]
    pub lifecycle: Lifecycle,
}

fn read_rules(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "Incorrect Usage: Invalid JSON in {}; expected an array of rules",
            path.display()
        )
    })
}

/// cf's idempotent create: what exists already is said, and the verb still succeeds (scripts
/// that create what they need run again unchanged). Other errors stay errors.
fn existing_is_ok<T>(r: Result<T, c2c_api::client::ClientError>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(c2c_api::client::ClientError::Status { status, message })
            if status == c2c_api::client::StatusCode::CONFLICT =>
        {
            println!("{message}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs one verb.
pub fn run(dir: &Path, cmd: AsgCommand) -> Result<()> {
    let user = "admin";
    with_client(dir, async |c| {
        match cmd {
            AsgCommand::CreateOrg { name } => {
                println!("Creating org {name} as {user}...");
                existing_is_ok(c.create_org(&name).await)?;
                println!("OK");
            }
            AsgCommand::Orgs => {
                println!("Getting orgs as {user}...\n");
                println!("name");
                for o in c.orgs().await? {
                    println!("{}", o.name);
                }
            }
            AsgCommand::CreateSpace { name, org } => {
                println!("Creating space {name} in org {org} as {user}...");
                existing_is_ok(c.create_space(&org, &name).await)?;
                println!("OK");
            }
            AsgCommand::Spaces { org } => {
                println!("Getting spaces as {user}...\n");
                let mut rows = vec![["org".to_string(), "name".into()]];
                for s in c.spaces(org.as_deref()).await? {
                    rows.push([s.org, s.name]);
                }
                print_table(&rows);
            }
            AsgCommand::SetSpaceQuota {
                space,
                org,
                apps,
                instances,
                routes,
            } => {
                println!("Setting the quota of space {space} in org {org} as {user}...");
                let q = c
                    .set_space_quota(&c2c_api::types::SetSpaceQuota {
                        org,
                        space,
                        max_apps: apps,
                        max_instances: instances,
                        max_routes: routes,
                    })
                    .await?;
                println!(
                    "OK: {} apps, {} instances, {} routes (holds {}, {} and {})",
                    q.max_apps, q.max_instances, q.max_routes, q.apps, q.instances, q.routes
                );
            }
            AsgCommand::SpaceQuotas => space_quotas(c, user).await?,
            AsgCommand::CreateSecurityGroup(a) => {
                let rules = read_rules(&a.path)?;
                println!("Creating security group {} as {user}...", a.name);
                existing_is_ok(c.create_security_group(&a.name, rules).await)?;
                println!("OK");
            }
            AsgCommand::UpdateSecurityGroup(a) => {
                let rules = read_rules(&a.path)?;
                println!("Updating security group {} as {user}...", a.name);
                c.update_security_group(&a.name, rules).await?;
                println!("OK\n\n{TIP}");
            }
            AsgCommand::DeleteSecurityGroup { name, force: _ } => {
                println!("Deleting security group {name} as {user}...");
                if !c.delete_security_group(&name).await? {
                    println!("OK\n\nSecurity group '{name}' does not exist.");
                    return Ok(());
                }
                println!("OK");
            }
            AsgCommand::BindSecurityGroup(a) => bind(c, user, a).await?,
            AsgCommand::UnbindSecurityGroup(a) => unbind(c, user, a).await?,
            AsgCommand::BindRunningSecurityGroup { name } => {
                global(c, &name, Lifecycle::Running, true).await?
            }
            AsgCommand::BindStagingSecurityGroup { name } => {
                global(c, &name, Lifecycle::Staging, true).await?
            }
            AsgCommand::UnbindRunningSecurityGroup { name } => {
                global(c, &name, Lifecycle::Running, false).await?
            }
            AsgCommand::UnbindStagingSecurityGroup { name } => {
                global(c, &name, Lifecycle::Staging, false).await?
            }
            AsgCommand::SecurityGroups { json: true } => {
                let groups: Vec<serde_json::Value> =
                    c.security_groups().await?.iter().map(group_json).collect();
                print_json(&serde_json::json!({ "security_groups": groups }))?;
            }
            AsgCommand::SecurityGroup { name, json: true } => {
                print_json(&group_json(&c.security_group(&name).await?))?;
            }
            AsgCommand::SecurityGroups { json: false } => {
                println!("Getting security groups as {user}...\n");
                let mut rows = vec![binding_header()];
                for g in c.security_groups().await? {
                    rows.extend(bindings(&g));
                }
                print_table(&rows);
            }
            AsgCommand::SecurityGroup { name, json: false } => show(c, user, &name).await?,
            AsgCommand::RunningSecurityGroups | AsgCommand::StagingSecurityGroups => {
                let running = matches!(cmd, AsgCommand::RunningSecurityGroups);
                let which = if running { "running" } else { "staging" };
                println!("Getting global {which} security groups as {user}...\n");
                println!("name");
                for g in c.security_groups().await? {
                    if (running && g.running_default) || (!running && g.staging_default) {
                        println!("{}", g.name);
                    }
                }
            }
        }
        Ok(())
    })
}

/// `c2c space-quotas`: each space's use against its quota.
async fn space_quotas(c: &Client, user: &str) -> Result<()> {
    println!("Getting space quotas as {user}...\n");
    let mut rows = vec![[
        "org".to_string(),
        "space".into(),
        "apps".into(),
        "instances".into(),
        "routes".into(),
        "quota".into(),
    ]];
    for q in c.space_quotas().await? {
        rows.push([
            q.org,
            q.space,
            format!("{}/{}", q.apps, q.max_apps),
            format!("{}/{}", q.instances, q.max_instances),
            format!("{}/{}", q.routes, q.max_routes),
            if q.default { "default" } else { "own" }.into(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `c2c bind-security-group`, with cf's texts.
async fn bind(c: &Client, user: &str, a: BindArgs) -> Result<()> {
    let lc = a.lifecycle.as_str();
    match &a.space {
        Some(s) => println!(
            "Assigning {lc} security group {} to space {s} in org {} as {user}...",
            a.name, a.org
        ),
        None => println!(
            "Assigning {lc} security group {} to all spaces in org {} as {user}...",
            a.name, a.org
        ),
    }
    let r = c
        .bind_security_group(
            &a.name,
            &binding(a.lifecycle, Some(&a.org), a.space.as_deref()),
            true,
        )
        .await?;
    if r.named.is_empty() {
        println!("No spaces in org {}.", a.org);
    }
    println!("OK\n\n{TIP}");
    Ok(())
}

/// `c2c unbind-security-group`, with cf's texts.
async fn unbind(c: &Client, user: &str, a: UnbindArgs) -> Result<()> {
    let lc = a.lifecycle.as_str();
    println!(
        "Removing {lc} security group {} from org {} / space {} as {user}...",
        a.name, a.org, a.space
    );
    let r = c
        .bind_security_group(
            &a.name,
            &binding(a.lifecycle, Some(&a.org), Some(&a.space)),
            false,
        )
        .await?;
    if r.changed.is_empty() {
        println!(
            "Security group {} not bound to space {} for lifecycle phase '{lc}'.",
            a.name, a.space
        );
    }
    println!("OK\n\n{TIP}");
    Ok(())
}

/// `c2c security-group NAME`: its rules and the spaces it is bound to.
async fn show(c: &Client, user: &str, name: &str) -> Result<()> {
    println!("Getting info for security group {name} as {user}...\n");
    let g = c.security_group(name).await?;
    println!("name:    {}", g.name);
    println!("rules:");
    println!("{}", serde_json::to_string_pretty(&g.rules)?);
    println!();
    let mut rows = vec![binding_header()];
    rows.extend(bindings(&g));
    if rows.len() == 1 {
        println!("No spaces assigned");
    } else {
        print_table(&rows);
    }
    Ok(())
}

/// `bind-running-security-group` and its three siblings: the defaults for every space.
async fn global(
    c: &c2c_api::client::Client,
    name: &str,
    lifecycle: Lifecycle,
    bind: bool,
) -> Result<()> {
    let lc = lifecycle.as_str();
    if bind {
        println!("Binding security group {name} to {lc} as admin...");
    } else {
        println!("Unbinding security group {name} from defaults for {lc} as admin...");
    }
    let r = c
        .bind_security_group(name, &binding(lifecycle, None, None), bind)
        .await?;
    if !bind && r.changed.is_empty() {
        println!("Security group {name} not bound as a {lc} default.");
    }
    println!("OK\n\n{TIP}");
    Ok(())
}

/// A group as `--json` shows it.
fn group_json(g: &SecurityGroup) -> serde_json::Value {
    let spaces: Vec<serde_json::Value> = g
        .spaces
        .iter()
        .map(|b| {
            let (org, space) = b.space.split_once('/').unwrap_or(("", &b.space));
            serde_json::json!({
                "org": org, "space": space, "space_guid": b.space_guid,
                "lifecycle": b.lifecycle.as_str(),
            })
        })
        .collect();
    serde_json::json!({
        "name": g.name,
        "guid": g.guid,
        "rules": g.rules,
        "running_default": g.running_default,
        "staging_default": g.staging_default,
        "spaces": spaces,
    })
}

/// The header of the binding tables (cf's columns).
fn binding_header() -> [String; 4] {
    ["name", "organization", "space", "lifecycle"].map(String::from)
}

/// A group's binding rows: `<all>` for the defaults, else one per space.
fn bindings(g: &SecurityGroup) -> Vec<[String; 4]> {
    let mut rows = vec![];
    for (on, lc) in [
        (g.running_default, "running"),
        (g.staging_default, "staging"),
    ] {
        if on {
            rows.push([g.name.clone(), "<all>".into(), "<all>".into(), lc.into()]);
        }
    }
    for b in &g.spaces {
        let (org, space) = b.space.split_once('/').unwrap_or(("", &b.space));
        rows.push([
            g.name.clone(),
            org.into(),
            space.into(),
            b.lifecycle.as_str().into(),
        ]);
    }
    if rows.is_empty() {
        rows.push([g.name.clone(), String::new(), String::new(), String::new()]);
    }
    rows
}
