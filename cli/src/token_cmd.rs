//! `c2c token create|revoke` and `c2c tokens`: users' tokens with Cloud Foundry's scopes.

use std::path::Path;

use anyhow::Result;
use c2c_api::types::{Scope, TokenRequest};
use clap::Subcommand;

use crate::common::{print_json, print_table, with_client};

/// `c2c token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for USER and print it (it is shown this once: control keeps its hash).
    Create {
        /// The user the token speaks for.
        user: String,
        /// network.write (the policies of the --app apps, within the policy quota) or
        /// network.admin (everything).
        #[arg(long, default_value = "network.write")]
        scope: Scope,
        /// An app the user may manage (name or GUID); repeatable. Grants add up across tokens.
        #[arg(long = "app")]
        apps: Vec<String>,
        /// A space, as ORG/SPACE, whose apps the user may manage, those pushed later too (CF's
        /// SpaceDeveloper with network.write); repeatable.
        #[arg(long = "space")]
        spaces: Vec<c2c_api::types::SpaceRef>,
        /// A cell the user may place instances on; repeatable. A runtime's token (c2c-hook's)
        /// is bound to its own cell, so a leaked one places nothing elsewhere. Without it:
        /// any cell.
        #[arg(long = "cell")]
        cells: Vec<String>,
    },
    /// Revoke every token of USER and its app grants.
    Revoke {
        /// The user.
        user: String,
    },
}

/// Runs `c2c token ...`.
pub fn run(dir: &Path, cmd: TokenCommand) -> Result<()> {
    with_client(dir, async |c| match cmd {
        TokenCommand::Create {
            user,
            scope,
            apps,
            spaces,
            cells,
        } => {
            if scope == Scope::Write && apps.is_empty() && spaces.is_empty() {
                eprintln!(
                    "note: no --app or --space given: {user} may manage no app until granted one"
                );
            }
            let t = c
                .create_token(&TokenRequest {
                    user,
                    scope,
                    apps,
                    spaces,
                    cells,
                })
                .await?;
            eprintln!(
                "Created a {} token for {} ({} app(s), space(s): {}); use it with C2C_TOKEN=<token> c2c ...:",
                t.scope,
                t.user,
                t.apps.len(),
                if t.spaces.is_empty() { "none".to_string() } else { t.spaces.join(", ") }
            );
            println!("{}", t.token);
            Ok(())
        }
        TokenCommand::Revoke { user } => {
            c.revoke_tokens(&user).await?;
            println!("Revoked every token of {user}");
            Ok(())
        }
    })
}

/// `c2c tokens`: a table, or JSON.
pub fn list(dir: &Path, json: bool) -> Result<()> {
    with_client(dir, async |c| {
        let names: std::collections::HashMap<_, _> = c
            .apps()
            .await?
            .into_iter()
            .map(|a| (a.guid, a.name))
            .collect();
        let users = c.users().await?;
        let app_names = |u: &c2c_api::types::UserRecord| -> Vec<String> {
            let mut apps: Vec<String> = u
                .apps
                .iter()
                .map(|g| names.get(g).cloned().unwrap_or_else(|| g.to_string()))
                .collect();
            apps.sort();
            apps
        };
        if json {
            let out: Vec<serde_json::Value> = users
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "user": u.user,
                        "scope": u.scope.to_string(),
                        "tokens": u.tokens,
                        "apps": app_names(u),
                        "app_guids": u.apps,
                        "spaces": u.spaces,
                        "cells": u.cells,
                    })
                })
                .collect();
            return print_json(&serde_json::json!({ "users": out }));
        }
        let mut rows = vec![["user", "scope", "tokens", "apps / spaces / cells"].map(String::from)];
        for u in &users {
            let mut grants = app_names(u);
            grants.extend(u.spaces.iter().map(|s| format!("space {s}")));
            grants.extend(u.cells.iter().map(|c| format!("cell {c}")));
            rows.push([
                u.user.clone(),
                u.scope.to_string(),
                u.tokens.to_string(),
                grants.join(", "),
            ]);
        }
        print_table(&rows);
        Ok(())
    })
}
