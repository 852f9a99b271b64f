//! The platform state in SQLite: apps (with their 16-bit policy tags), instances, policies and
//! cell subnet leases. Every change bumps one revision number in the same transaction, which is
//! what cells watch.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::db::{Db, Engine, OptionalExt, Row};
use crate::params;
pub use c2c_api::net::{PortRange, Protocol, Subnet};
pub use c2c_api::types::Placement;
pub use c2c_api::{App, AppGuid, CellName, Instance, Lease, Policy, Revision, Route};

pub use crate::error::StateError;
pub use crate::schema::DEFAULT_SPACE_GUID;
use crate::schema::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

/// The platform state in one SQLite database (WAL): apps, instances, policies, routes, leases,
/// cell identities and the revision every change bumps. Writes run in immediate transactions.
pub struct State {
    pub(crate) db: Db,
    pub(crate) overlay: (Ipv4Addr, u8),
    pub(crate) lease_ttl_secs: u64,
    /// The size of each cell's subnet (silk's `subnet_prefix_length`).
    pub(crate) cell_prefix: u8,
    /// Budgets on tag groups and per-space quotas.
    pub(crate) limits: crate::budgets::Limits,
}

/// The columns an [`App`] is read from, for [`app_row`].
const APP_COLUMNS: &str =
    "SELECT guid, name, tag, space_guid, client_identity, proxy_protocol, app_protocol FROM apps";

/// An [`App`] from a row of [`APP_COLUMNS`].
fn app_row(r: &Row) -> Result<App, StateError> {
    Ok(App {
        guid: parsed(r, 0)?,
        name: r.get(1)?,
        tag: r.get(2)?,
        space: r.get(3)?,
        client_identity: parsed(r, 4)?,
        proxy_protocol: parsed(r, 5)?,
        app_protocol: parsed(r, 6)?,
    })
}

/// Policies per statement when adding or deleting many.
const POLICY_BATCH: usize = 500;

/// The values of `policies` for a batched statement, five per policy.
fn policy_vals(policies: &[Policy]) -> Vec<crate::db::Val> {
    policies
        .iter()
        .flat_map(|p| {
            params![
                p.source.as_str(),
                p.destination.as_str(),
                p.protocol.as_str(),
                p.ports.start(),
                p.ports.end()
            ]
        })
        .collect()
}

/// Each cell's subnet size by default (silk's `subnet_prefix_length`).
pub const DEFAULT_CELL_PREFIX: u8 = 24;

/// The channel a PostgreSQL write announces a new revision on (`NOTIFY`, sent at commit).
pub const REVISION_CHANNEL: &str = "c2c_revision";

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random version-4 style GUID.
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    // aws-lc's RNG only fails if the system has no entropy source at all.
    aws_lc_rs::rand::fill(&mut b).expect("system random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The lowest tag no app and no other group holds (apps and the groups of CF's internal API
/// share one tag space), read in the write's transaction.
pub(crate) fn free_tag(tx: &crate::db::Db) -> Result<u16, StateError> {
    let used: Vec<u16> = tx
        .prepare("SELECT tag FROM apps UNION SELECT tag FROM tag_groups ORDER BY 1")?
        .query_map((), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    lowest_free_tag(&used).ok_or(StateError::TagsExhausted)
}

/// The lowest tag (1..=65535) not in `used` (sorted ascending).
pub fn lowest_free_tag(used: &[u16]) -> Option<u16> {
    let mut want: u32 = 1;
    for &t in used {
        if u32::from(t) > want {
            break;
        }
        if u32::from(t) == want {
            want += 1;
        }
    }
    u16::try_from(want).ok()
}

impl State {
    /// The database underneath, for tools and tests that inspect rows or age them (a lease
    /// renewed long ago, a token past its expiry) without waiting.
    pub fn store(&self) -> &Db {
        &self.db
    }

    /// Opens (creating and migrating) the SQLite store at `path`.
    pub fn open(
        path: &Path,
        overlay: (Ipv4Addr, u8),
        lease_ttl_secs: u64,
    ) -> Result<Self, StateError> {
        // The state holds token hashes, users and every tenant's policies: control's user's
        // only. SQLite gives its -wal and -shm files the database file's mode.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StateError::Internal(format!("{}: {e}", path.display())))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StateError::Internal(format!("{}: {e}", path.display())))?;
            for side in ["-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(side);
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let db = Db::new(Engine::Sqlite(conn));
        let tx = db.begin_write()?;
        let version: i64 = tx.query_row("PRAGMA user_version", (), |r| r.get(0))?;
        for (i, m) in SQLITE_MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        tx.commit()?;
        Ok(Self::on(db, overlay, lease_ttl_secs))
    }

    /// Opens (creating and migrating) the store in the PostgreSQL database at `url`
    /// (`postgres://USER@HOST:PORT/DB`). Replicas starting together migrate one at a time (the
    /// migration holds the writers' lock).
    pub fn open_postgres(
        url: &str,
        overlay: (Ipv4Addr, u8),
        lease_ttl_secs: u64,
    ) -> Result<Self, StateError> {
        let db = Db::new(Engine::Postgres(Box::new(crate::db::PgConn::connect(url)?)));
        let tx = db.begin_write()?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS c2c_schema (version BIGINT NOT NULL)")?;
        let version: i64 = match tx
            .query_row("SELECT version FROM c2c_schema", (), |r| r.get(0))
            .optional()?
        {
            Some(v) => v,
            None => {
                tx.execute("INSERT INTO c2c_schema VALUES (0)", ())?;
                0
            }
        };
        for (i, m) in POSTGRES_MIGRATIONS
            .iter()
            .enumerate()
            .skip(version as usize)
        {
            if !m.is_empty() {
                tx.execute_batch(m)?;
            }
            tx.execute("UPDATE c2c_schema SET version = ?", [i as i64 + 1])?;
        }
        tx.commit()?;
        Ok(Self::on(db, overlay, lease_ttl_secs))
    }

    /// The state on a migrated database.
    fn on(db: Db, overlay: (Ipv4Addr, u8), lease_ttl_secs: u64) -> Self {
        Self {
            db,
            overlay,
            lease_ttl_secs,
            cell_prefix: DEFAULT_CELL_PREFIX.max(overlay.1 + 1),
            limits: crate::budgets::Limits::default(),
        }
    }

    /// Opens `database`: a `postgres://` (or `postgresql://`) URL, else a SQLite file path.
    pub fn open_any(
        database: &str,
        overlay: (Ipv4Addr, u8),
        lease_ttl_secs: u64,
    ) -> Result<Self, StateError> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Self::open_postgres(database, overlay, lease_ttl_secs)
        } else {
            Self::open(
                Path::new(database.strip_prefix("sqlite:").unwrap_or(database)),
                overlay,
                lease_ttl_secs,
            )
        }
    }

    /// Whether the store is PostgreSQL (shared by replicas).
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// Runs `f` on one consistent snapshot of the state (a read transaction).
    pub fn snapshot<T>(
        &self,
        f: impl FnOnce(&State) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let tx = self.db.begin_read()?;
        let out = f(self);
        drop(tx);
        out
    }

    /// The current revision.
    pub fn revision(&self) -> Result<Revision, StateError> {
        Ok(Revision(
            self.db
                .query_row("SELECT rev FROM revision", (), |r| r.get::<i64>(0))? as u64,
        ))
    }

    /// How many apps, instances, policies, routes and cells the state holds (for metrics).
    pub fn object_counts(&self) -> Result<Vec<(&'static str, i64)>, StateError> {
        let kinds = ["apps", "instances", "policies", "routes", "cells"];
        let counts = self.db.query_row(
            "SELECT (SELECT count(*) FROM apps), (SELECT count(*) FROM instances), \
             (SELECT count(*) FROM policies), (SELECT count(*) FROM routes), \
             (SELECT count(*) FROM cells)",
            (),
            |r| {
                (0..kinds.len())
                    .map(|i| r.get::<i64>(i))
                    .collect::<Result<Vec<_>, _>>()
            },
        )?;
        Ok(kinds.into_iter().zip(counts).collect())
    }

    /// Runs `f` in a write transaction and bumps the revision if `f` reports a change.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&crate::db::Tx) -> Result<(T, bool), StateError>,
    ) -> Result<T, StateError> {
        let tx = self.db.begin_write()?;
        let (out, changed) = f(&tx)?;
        if changed {
            prune_policy_journal(&tx)?;
            tx.execute("UPDATE revision SET rev = rev + 1", ())?;
            if tx.is_postgres() {
                // Delivered at commit to every replica listening: their watches wake.
                // The payload is the commit's time (Unix ms): followers measure their lag.
                tx.execute_batch(&format!("NOTIFY {REVISION_CHANNEL}, '{}'", now_ms()))?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Creates an app with the lowest free tag, in the default space.
    pub fn create_app(&mut self, name: &str) -> Result<App, StateError> {
        self.create_app_in(name, DEFAULT_SPACE_GUID)
    }

    /// Creates an app with the lowest free tag in the space with GUID `space` (the admin's
    /// call: no space quota).
    pub fn create_app_in(&mut self, name: &str, space: &str) -> Result<App, StateError> {
        self.create_app_as(name, space, false)
    }

    /// [`State::create_app_in`] within the space's quota when `quota` (a tenant's call; see
    /// [`crate::budgets`]).
    pub fn create_app_as(
        &mut self,
        name: &str,
        space: &str,
        quota: bool,
    ) -> Result<App, StateError> {
        validate_app_name(name)?;
        let limits = self.limits;
        self.write(|tx| {
            if tx
                .query_row("SELECT 1 FROM spaces WHERE guid = ?", [space], |_| Ok(()))
                .optional()?
                .is_none()
            {
                return Err(StateError::NotFound(format!("no such space: {space}")));
            }
            if tx
                .query_row("SELECT 1 FROM apps WHERE name = ?", [name], |_| Ok(()))
                .optional()?
                .is_some()
            {
                return Err(StateError::AppExists(name.into()));
            }
            if quota {
                crate::budgets::check_space_apps(tx, limits, space)?;
            }
            // Apps and other groups (`PUT /internal/tags`) share one tag space.
            let tag = free_tag(tx)?;
            let app = App {
                guid: new_guid().into(),
                name: name.into(),
                tag,
                space: space.to_string(),
                client_identity: Default::default(),
                proxy_protocol: Default::default(),
                app_protocol: Default::default(),
            };
            tx.execute(
                "INSERT INTO apps (guid, name, tag, space_guid) VALUES (?, ?, ?, ?)",
                params![app.guid.as_str(), &app.name, app.tag, &app.space],
            )?;
            Ok((app, true))
        })
    }

    /// Deletes an app with its instances and policies; its tag becomes free.
    pub fn delete_app(&mut self, guid: &str) -> Result<(), StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM apps WHERE guid = ?", [guid])?;
            if n == 0 {
                return Err(StateError::UnknownApp(guid.into()));
            }
            Ok(((), true))
        })
    }

    /// All apps, by name.
    pub fn apps(&self) -> Result<Vec<App>, StateError> {
        let sql = format!("{APP_COLUMNS} ORDER BY name");
        let mut st = self.db.prepare(&sql)?;
        let rows = st.query_map((), app_row)?;
        rows.collect::<Result<_, _>>()
    }

    /// The app named `name` or with GUID `name`.
    pub fn app(&self, name_or_guid: &str) -> Result<App, StateError> {
        self.db
            .query_row(
                &format!("{APP_COLUMNS} WHERE name = ?1 OR guid = ?1"),
                [name_or_guid],
                app_row,
            )
            .optional()?
            .ok_or_else(|| StateError::UnknownApp(name_or_guid.into()))
    }

    /// The GUIDs of the space and org of the app with GUID `guid`.
    pub fn app_space_and_org(&self, guid: &str) -> Result<(String, String), StateError> {
        self.db
            .query_row(
                "SELECT s.guid, s.org_guid FROM apps a JOIN spaces s ON s.guid = a.space_guid
                 WHERE a.guid = ?",
                [guid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| StateError::UnknownApp(guid.into()))
    }

    /// Changes what the app's sidecar does (absent settings stay); returns the app as it is now.
    pub fn update_app_settings(
        &mut self,
        guid: &str,
        settings: &c2c_api::types::AppSettings,
    ) -> Result<App, StateError> {
        let settings = settings.clone();
        let guid = guid.to_string();
        self.write(move |tx| {
            let mut changed = false;
            if let Some(c) = settings.client_identity {
                changed |= tx.execute(
                    "UPDATE apps SET client_identity = ?1 WHERE guid = ?2 AND client_identity <> ?1",
                    params![c.to_string(), &guid],
                )? > 0;
            }
            if let Some(p) = settings.proxy_protocol {
                changed |= tx.execute(
                    "UPDATE apps SET proxy_protocol = ?1 WHERE guid = ?2 AND proxy_protocol <> ?1",
                    params![p.to_string(), &guid],
                )? > 0;
            }
            if let Some(p) = settings.app_protocol {
                changed |= tx.execute(
                    "UPDATE apps SET app_protocol = ?1 WHERE guid = ?2 AND app_protocol <> ?1",
                    params![p.to_string(), &guid],
                )? > 0;
            }
            let app = tx
                .query_row(&format!("{APP_COLUMNS} WHERE guid = ?"), [&guid], app_row)
                .optional()?
                .ok_or_else(|| StateError::UnknownApp(guid.clone()))?;
            Ok((app, changed))
        })
    }

    /// Adds policies; existing ones are left as they are. Returns how many were new.
    pub fn add_policies(&mut self, policies: &[Policy]) -> Result<usize, StateError> {
        self.write(|tx| {
            // Each app named is looked up once, and the rows go in batches: 10,000 policies are
            // a few statements, not 30,000 round trips (which PostgreSQL makes expensive).
            let named: std::collections::BTreeSet<&str> = policies
                .iter()
                .flat_map(|p| [p.source.as_str(), p.destination.as_str()])
                .collect();
            for guid in named {
                if tx
                    .query_row("SELECT 1 FROM apps WHERE guid = ?", [guid], |_| Ok(()))
                    .optional()?
                    .is_none()
                {
                    return Err(StateError::UnknownApp(guid.to_string()));
                }
            }
            let mut added = 0;
            for chunk in policies.chunks(POLICY_BATCH) {
                let rows = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                added += tx.execute(
                    &format!("INSERT INTO policies (source, destination, protocol, start_port, end_port) VALUES {rows} ON CONFLICT DO NOTHING"),
                    policy_vals(chunk),
                )?;
            }
            Ok((added, added > 0))
        })
    }

    /// Deletes policies; ones that do not exist are ignored. Returns how many were removed.
    pub fn delete_policies(&mut self, policies: &[Policy]) -> Result<usize, StateError> {
        self.write(|tx| {
            let mut removed = 0;
            for chunk in policies.chunks(POLICY_BATCH) {
                let rows =
                    vec!["(?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))"; chunk.len()].join(", ");
                removed += tx.execute(
                    &format!("DELETE FROM policies WHERE (source, destination, protocol, start_port, end_port) IN (VALUES {rows})"),
                    policy_vals(chunk),
                )?;
            }
            Ok((removed, removed > 0))
        })
    }

    /// Policies, all or those whose source or destination is one of `ids`.
    pub fn policies(&self, ids: Option<&[String]>) -> Result<Vec<Policy>, StateError> {
        let mut st = self.db.prepare(
            "SELECT source, destination, protocol, start_port, end_port FROM policies ORDER BY source, destination, protocol, start_port",
        )?;
        let all: Vec<Policy> = st
            .query_map((), |r| policy_row(r, 0))?
            .collect::<Result<_, _>>()?;
        Ok(match ids {
            None => all,
            Some(ids) => all
                .into_iter()
                .filter(|p| {
                    ids.iter()
                        .any(|i| p.source == i.as_str() || p.destination == i.as_str())
                })
                .collect(),
        })
    }
}

/// How many entries the policy journal keeps; a reader further behind reads every policy
/// instead.
pub const JOURNAL_KEEP: i64 = 200_000;

/// Keeps the policy journal (`crate::journal`) to its last [`JOURNAL_KEEP`] entries (in a
/// write transaction).
pub(crate) fn prune_policy_journal(tx: &crate::db::Tx) -> Result<(), StateError> {
    let head: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM policy_journal", (), |r| {
        r.get(0)
    })?;
    let through = head - JOURNAL_KEEP;
    if through > 0 && tx.execute("DELETE FROM policy_journal WHERE id <= ?", [through])? > 0 {
        tx.execute(
            "UPDATE policy_journal_info SET pruned_through = ? WHERE pruned_through < ?",
            [through, through],
        )?;
    }
    Ok(())
}

/// App names: see [`c2c_api::names::validate_app_name`].
pub fn validate_app_name(name: &str) -> Result<(), StateError> {
    c2c_api::names::validate_app_name(name).map_err(StateError::Invalid)
}

/// `cell` as a [`CellName`], or why it is none.
pub(crate) fn cell_name(cell: &str) -> Result<CellName, StateError> {
    CellName::new(cell).map_err(StateError::Invalid)
}

/// Cell names: see [`c2c_api::names::validate_cell_name`].
pub fn validate_cell_name(name: &str) -> Result<(), StateError> {
    c2c_api::names::validate_cell_name(name).map_err(StateError::Invalid)
}

/// A cell's underlay address must be one a host can have: not loopback, unspecified,
/// multicast, broadcast or link-local, and not inside the overlay.
pub(crate) fn validate_underlay_ip(
    ip: Ipv4Addr,
    (net, prefix): (Ipv4Addr, u8),
) -> Result<(), StateError> {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let in_overlay = u32::from(ip) & mask == u32::from(net) & mask;
    if ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_link_local()
        || in_overlay
    {
        return Err(StateError::Invalid(format!(
            "{ip} cannot be a cell's underlay address (loopback, unspecified, multicast, broadcast, link-local or inside the overlay {net}/{prefix})"
        )));
    }
    Ok(())
}

/// Whether `ip` is a container address of `subnet` (`A.B.C.D/N`): inside it, and neither its
/// network address (the cell's VTEP) nor its broadcast address.
pub(crate) fn host_of(subnet: &Subnet, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Column `i` of `r`, stored as text, parsed into `T` (a subnet, a protocol, an address).
pub(crate) fn parsed<T>(r: &Row, i: usize) -> Result<T, StateError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = r.get(i)?;
    text.parse()
        .map_err(|e: T::Err| StateError::Internal(format!("column {i}: {text:?}: {e}")))
}

/// A [`Policy`] from a row's columns `at..at + 5`: source, destination, protocol, start and
/// end port.
pub(crate) fn policy_row(r: &Row, at: usize) -> Result<Policy, StateError> {
    Ok(Policy {
        source: parsed(r, at)?,
        destination: parsed(r, at + 1)?,
        protocol: parsed(r, at + 2)?,
        ports: PortRange::new(r.get(at + 3)?, r.get(at + 4)?)
            .map_err(|e| StateError::Internal(format!("stored ports: {e}")))?,
    })
}

/// Compares two secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
