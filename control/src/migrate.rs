//! `c2c control migrate --from sqlite:PATH --to postgres://...`: moves a platform's state from
//! one store to another (normally the embedded SQLite file to the PostgreSQL database replicas
//! will share), table by table in one write transaction on the destination, and says what it
//! moved. The destination must hold no platform yet.

use crate::state::{State, StateError};

/// Tables in an order that satisfies their references, with the columns copied (`policies.id`
/// is the destination's own).
const TABLES: &[(&str, &[&str])] = &[
    ("domains", &["name"]),
    ("orgs", &["guid", "name"]),
    ("spaces", &["guid", "name", "org_guid"]),
    (
        "space_quotas",
        &["space_guid", "max_apps", "max_instances", "max_routes"],
    ),
    ("space_grants", &["username", "space_guid"]),
    ("cell_grants", &["username", "cell"]),
    (
        "apps",
        &[
            "guid",
            "name",
            "tag",
            "space_guid",
            "client_identity",
            "proxy_protocol",
            "app_protocol",
        ],
    ),
    (
        "instances",
        &[
            "guid",
            "app_guid",
            "idx",
            "cell",
            "ip",
            "runtime",
            "waiting_since",
        ],
    ),
    (
        "policies",
        &[
            "source",
            "destination",
            "protocol",
            "start_port",
            "end_port",
        ],
    ),
    ("cells", &["name", "underlay_ip", "subnet", "renewed_at"]),
    ("routes", &["host", "domain", "app_guid"]),
    ("cell_identities", &["name", "fingerprint", "registered_at"]),
    ("tokens", &["hash", "username", "scope", "created_at"]),
    (
        "join_tokens",
        &["hash", "expires_at", "cell", "used_by", "used_at"],
    ),
    ("grants", &["username", "app_guid"]),
    ("tag_groups", &["guid", "type", "tag", "owner"]),
    ("security_groups", &["guid", "name", "rules"]),
    ("platform", &["id", "ca_sha256", "token_sha256"]),
    ("security_group_defaults", &["sg_guid", "lifecycle"]),
    (
        "security_group_spaces",
        &["sg_guid", "space_guid", "lifecycle"],
    ),
];

/// What was moved: rows per table.
pub type Moved = Vec<(&'static str, usize)>;

/// Copies every table of `from` into `to`, which must be empty (no apps, cells or tokens); the
/// destination's revision ends above the source's, and its `policies_last_updated` is the
/// source's, so cells and CF agents that follow either see a change, never a step back.
pub fn migrate(from: &State, to: &mut State) -> Result<Moved, StateError> {
    let mut moved = Moved::new();
    let rev = from.revision()?;
    let last_updated = from.policies_last_updated()?;
    to.write(|tx| {
        for t in ["apps", "cells", "cell_identities", "tokens", "instances", "policies"] {
            let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {t}"), (), |r| r.get(0))?;
            if n > 0 {
                return Err(StateError::Conflict(format!(
                    "the destination already holds a platform ({n} rows in {t}); migrate into an empty database"
                )));
            }
        }
        // The default domain, org and space the destination's migrations made.
        tx.execute("DELETE FROM domains", ())?;
        tx.execute("DELETE FROM spaces", ())?;
        tx.execute("DELETE FROM orgs", ())?;
        for (table, cols) in TABLES {
            let list = cols.join(", ");
            let rows = from.db.rows(&format!("SELECT {list} FROM {table}"), ())?;
            let marks = vec!["?"; cols.len()].join(", ");
            let insert = format!("INSERT INTO {table} ({list}) VALUES ({marks})");
            for r in &rows {
                tx.execute(&insert, r.vals().to_vec())?;
            }
            moved.push((*table, rows.len()));
        }
        tx.execute("UPDATE revision SET rev = ?", [rev.0 as i64])?;
        // Set after the policies' inserts (whose trigger moved it).
        tx.execute("UPDATE policies_info SET last_updated = ?", [last_updated])?;
        // `write` bumps the revision once more on top of the source's.
        Ok(((), true))
    })?;
    Ok(moved)
}
