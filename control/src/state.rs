//! The platform state in SQLite: apps (with their 16-bit policy tags), instances, policies and
//! cell subnet leases. Every change bumps one revision number in the same transaction, which is
//! what cells watch.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use c2c_api::{App, Instance, Lease, Policy, Route};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// A state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state store: {0}")]
    Db(#[from] rusqlite::Error),
    /// No app of that name or GUID.
    #[error("app {0} not found")]
    UnknownApp(String),
    /// An app of that name exists.
    #[error("app {0} already exists")]
    AppExists(String),
    /// Every tag is in use.
    #[error("no free app tag: 65535 apps exist")]
    TagsExhausted,
    /// Every subnet of the overlay is leased and none has expired.
    #[error("no free subnet in {0}: every /24 is leased to a live cell")]
    NoSubnet(String),
    /// The caller may not do this (a cell asking about an instance it does not host).
    #[error("{0}")]
    Forbidden(String),
    /// The cell holds no lease.
    #[error("cell {0} holds no lease")]
    NoLease(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// The store.
pub struct State {
    db: Connection,
    overlay: (Ipv4Addr, u8),
    lease_ttl_secs: u64,
}

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), rev INTEGER NOT NULL);
     INSERT INTO revision VALUES (1, 0);
     CREATE TABLE apps (guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, tag INTEGER NOT NULL UNIQUE);
     CREATE TABLE instances (guid TEXT PRIMARY KEY,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        idx INTEGER NOT NULL, cell TEXT NOT NULL, ip TEXT NOT NULL);
     CREATE INDEX instances_by_cell ON instances(cell);
     CREATE TABLE policies (id INTEGER PRIMARY KEY,
        source TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        destination TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        protocol TEXT NOT NULL, start_port INTEGER NOT NULL, end_port INTEGER NOT NULL,
        UNIQUE (source, destination, protocol, start_port, end_port));
     CREATE INDEX policies_by_destination ON policies(destination);
     CREATE TABLE cells (name TEXT PRIMARY KEY, underlay_ip TEXT NOT NULL,
        subnet TEXT NOT NULL UNIQUE, renewed_at INTEGER NOT NULL);",
    // 2: internal domains and routes.
    "CREATE TABLE domains (name TEXT PRIMARY KEY);
     INSERT INTO domains VALUES ('apps.internal');
     CREATE TABLE routes (host TEXT NOT NULL,
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        PRIMARY KEY (host, domain, app_guid));",
];

fn now() -> i64 {
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
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(
        path: &Path,
        overlay: (Ipv4Addr, u8),
        lease_ttl_secs: u64,
    ) -> Result<Self, StateError> {
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(Self {
            db,
            overlay,
            lease_ttl_secs,
        })
    }

    /// The current revision.
    pub fn revision(&self) -> Result<u64, StateError> {
        Ok(self
            .db
            .query_row("SELECT rev FROM revision", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Runs `f` in a write transaction and bumps the revision if `f` reports a change.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction) -> Result<(T, bool), StateError>,
    ) -> Result<T, StateError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (out, changed) = f(&tx)?;
        if changed {
            tx.execute("UPDATE revision SET rev = rev + 1", [])?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Creates an app with the lowest free tag.
    pub fn create_app(&mut self, name: &str) -> Result<App, StateError> {
        validate_app_name(name)?;
        self.write(|tx| {
            if tx
                .query_row("SELECT 1 FROM apps WHERE name = ?", [name], |_| Ok(()))
                .optional()?
                .is_some()
            {
                return Err(StateError::AppExists(name.into()));
            }
            let used: Vec<u16> = tx
                .prepare("SELECT tag FROM apps ORDER BY tag")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let tag = lowest_free_tag(&used).ok_or(StateError::TagsExhausted)?;
            let app = App {
                guid: new_guid(),
                name: name.into(),
                tag,
            };
            tx.execute(
                "INSERT INTO apps (guid, name, tag) VALUES (?, ?, ?)",
                params![app.guid, app.name, app.tag],
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
        let mut st = self
            .db
            .prepare("SELECT guid, name, tag FROM apps ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(App {
                guid: r.get(0)?,
                name: r.get(1)?,
                tag: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The app named `name` or with GUID `name`.
    pub fn app(&self, name_or_guid: &str) -> Result<App, StateError> {
        self.db
            .query_row(
                "SELECT guid, name, tag FROM apps WHERE name = ?1 OR guid = ?1",
                [name_or_guid],
                |r| {
                    Ok(App {
                        guid: r.get(0)?,
                        name: r.get(1)?,
                        tag: r.get(2)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| StateError::UnknownApp(name_or_guid.into()))
    }

    /// Adds policies; existing ones are left as they are. Returns how many were new.
    pub fn add_policies(&mut self, policies: &[Policy]) -> Result<usize, StateError> {
        self.write(|tx| {
            let mut added = 0;
            for p in policies {
                for guid in [&p.source, &p.destination] {
                    if tx.query_row("SELECT 1 FROM apps WHERE guid = ?", [guid], |_| Ok(())).optional()?.is_none() {
                        return Err(StateError::UnknownApp(guid.clone()));
                    }
                }
                added += tx.execute(
                    "INSERT OR IGNORE INTO policies (source, destination, protocol, start_port, end_port) VALUES (?, ?, ?, ?, ?)",
                    params![p.source, p.destination, p.protocol, p.start, p.end],
                )?;
            }
            Ok((added, added > 0))
        })
    }

    /// Deletes policies; ones that do not exist are ignored. Returns how many were removed.
    pub fn delete_policies(&mut self, policies: &[Policy]) -> Result<usize, StateError> {
        self.write(|tx| {
            let mut removed = 0;
            for p in policies {
                removed += tx.execute(
                    "DELETE FROM policies WHERE source = ? AND destination = ? AND protocol = ? AND start_port = ? AND end_port = ?",
                    params![p.source, p.destination, p.protocol, p.start, p.end],
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
            .query_map([], |r| {
                Ok(Policy {
                    source: r.get(0)?,
                    destination: r.get(1)?,
                    protocol: r.get(2)?,
                    start: r.get(3)?,
                    end: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(match ids {
            None => all,
            Some(ids) => all
                .into_iter()
                .filter(|p| ids.contains(&p.source) || ids.contains(&p.destination))
                .collect(),
        })
    }

    /// Registers (or moves) an instance.
    pub fn register_instance(&mut self, inst: &Instance) -> Result<(), StateError> {
        self.write(|tx| {
            if tx
                .query_row(
                    "SELECT 1 FROM apps WHERE guid = ?",
                    [&inst.app_guid],
                    |_| Ok(()),
                )
                .optional()?
                .is_none()
            {
                return Err(StateError::UnknownApp(inst.app_guid.clone()));
            }
            let n = tx.execute(
                "INSERT INTO instances (guid, app_guid, idx, cell, ip) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (guid) DO UPDATE SET app_guid = ?2, idx = ?3, cell = ?4, ip = ?5
                 WHERE app_guid != ?2 OR idx != ?3 OR cell != ?4 OR ip != ?5",
                params![
                    inst.guid,
                    inst.app_guid,
                    inst.index,
                    inst.cell,
                    inst.ip.to_string()
                ],
            )?;
            Ok(((), n > 0))
        })
    }

    /// Removes an instance; true if it existed.
    pub fn deregister_instance(&mut self, guid: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM instances WHERE guid = ?", [guid])?;
            Ok((n > 0, n > 0))
        })
    }

    /// Instances, all or those on `cell`.
    pub fn instances(&self, cell: Option<&str>) -> Result<Vec<Instance>, StateError> {
        let mut st = self.db.prepare("SELECT guid, app_guid, idx, cell, ip FROM instances WHERE ?1 IS NULL OR cell = ?1 ORDER BY app_guid, idx")?;
        let rows = st.query_map([cell], |r| {
            let ip: String = r.get(4)?;
            Ok(Instance {
                guid: r.get(0)?,
                app_guid: r.get(1)?,
                index: r.get(2)?,
                cell: r.get(3)?,
                ip: ip.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        4,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Gives `cell` a subnet: the one it holds (renewed), else the lowest free /24, else the
    /// oldest expired lease of another cell.
    pub fn acquire_lease(
        &mut self,
        cell: &str,
        underlay_ip: Ipv4Addr,
    ) -> Result<Lease, StateError> {
        let (net, prefix) = self.overlay;
        let ttl = self.lease_ttl_secs;
        self.write(|tx| {
            let t = now();
            let held: Option<String> = tx.query_row("SELECT subnet FROM cells WHERE name = ?", [cell], |r| r.get(0)).optional()?;
            if let Some(subnet) = held {
                tx.execute("UPDATE cells SET underlay_ip = ?, renewed_at = ? WHERE name = ?", params![underlay_ip.to_string(), t, cell])?;
                return Ok((Lease { cell: cell.into(), underlay_ip, subnet, renewed_at: t }, true));
            }
            let taken: std::collections::BTreeSet<String> =
                tx.prepare("SELECT subnet FROM cells")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let count = 1u32 << (24 - prefix.min(24));
            let base = u32::from(net);
            let free = (0..count).map(|i| format!("{}/24", Ipv4Addr::from(base + (i << 8)))).find(|s| !taken.contains(s));
            let subnet = match free {
                Some(s) => s,
                None => {
                    let expired: Option<(String, String)> = tx
                        .query_row(
                            "SELECT name, subnet FROM cells WHERE renewed_at < ? ORDER BY renewed_at LIMIT 1",
                            [t.saturating_sub(ttl as i64)],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    let (old, s) = expired.ok_or_else(|| StateError::NoSubnet(format!("{net}/{prefix}")))?;
                    tx.execute("DELETE FROM cells WHERE name = ?", [old])?;
                    s
                }
            };
            tx.execute("INSERT INTO cells (name, underlay_ip, subnet, renewed_at) VALUES (?, ?, ?, ?)", params![cell, underlay_ip.to_string(), subnet, t])?;
            Ok((Lease { cell: cell.into(), underlay_ip, subnet, renewed_at: t }, true))
        })
    }

    /// Renews `cell`'s lease. Renewal alone does not bump the revision (nothing a cell routes on
    /// changed).
    pub fn renew_lease(&mut self, cell: &str) -> Result<Lease, StateError> {
        let tx = self.db.transaction()?;
        let n = tx.execute(
            "UPDATE cells SET renewed_at = ? WHERE name = ?",
            params![now(), cell],
        )?;
        tx.commit()?;
        if n == 0 {
            return Err(StateError::NoLease(cell.into()));
        }
        self.leases()?
            .into_iter()
            .find(|l| l.cell == cell)
            .ok_or_else(|| StateError::NoLease(cell.into()))
    }

    /// Releases `cell`'s lease.
    pub fn release_lease(&mut self, cell: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM cells WHERE name = ?", [cell])?;
            Ok((n > 0, n > 0))
        })
    }

    /// Every lease.
    pub fn leases(&self) -> Result<Vec<Lease>, StateError> {
        let mut st = self
            .db
            .prepare("SELECT name, underlay_ip, subnet, renewed_at FROM cells ORDER BY name")?;
        let rows = st.query_map([], |r| {
            let ip: String = r.get(1)?;
            Ok(Lease {
                cell: r.get(0)?,
                underlay_ip: ip.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
                subnet: r.get(2)?,
                renewed_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl State {
    /// Internal domains.
    pub fn domains(&self) -> Result<Vec<String>, StateError> {
        let mut st = self.db.prepare("SELECT name FROM domains ORDER BY name")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds an internal domain (validated, lower-cased); adding one that exists is a no-op.
    pub fn create_domain(&mut self, name: &str) -> Result<String, StateError> {
        let name = c2c_certs::validate_hostname(name)
            .map_err(|e| StateError::Invalid(format!("invalid domain: {e}")))?;
        self.write(|tx| {
            let n = tx.execute("INSERT OR IGNORE INTO domains (name) VALUES (?)", [&name])?;
            Ok((name.clone(), n > 0))
        })
    }

    /// Maps `<host>.<domain>` to an app; true if it was new.
    pub fn map_route(
        &mut self,
        app_guid: &str,
        domain: &str,
        host: &str,
    ) -> Result<bool, StateError> {
        let fqdn = c2c_certs::validate_hostname(&format!("{host}.{domain}"))
            .map_err(|e| StateError::Invalid(format!("invalid hostname {host:?}: {e}")))?;
        let host = fqdn
            .strip_suffix(&format!(".{}", domain.to_ascii_lowercase()))
            .unwrap_or(&fqdn)
            .to_string();
        let domain = domain.to_ascii_lowercase();
        self.write(|tx| {
            if tx
                .query_row(
                    "SELECT 1 FROM domains WHERE name = ?",
                    [&domain],
                    |_| Ok(()),
                )
                .optional()?
                .is_none()
            {
                return Err(StateError::Invalid(format!(
                    "domain {domain} is not an internal domain (see GET /v1/domains)"
                )));
            }
            if tx
                .query_row("SELECT 1 FROM apps WHERE guid = ?", [app_guid], |_| Ok(()))
                .optional()?
                .is_none()
            {
                return Err(StateError::UnknownApp(app_guid.into()));
            }
            let n = tx.execute(
                "INSERT OR IGNORE INTO routes (host, domain, app_guid) VALUES (?, ?, ?)",
                params![host, domain, app_guid],
            )?;
            Ok((n > 0, n > 0))
        })
    }

    /// Unmaps a route from an app; true if it was mapped.
    pub fn unmap_route(
        &mut self,
        app_guid: &str,
        domain: &str,
        host: &str,
    ) -> Result<bool, StateError> {
        let (host, domain) = (host.to_ascii_lowercase(), domain.to_ascii_lowercase());
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM routes WHERE host = ? AND domain = ? AND app_guid = ?",
                params![host, domain, app_guid],
            )?;
            Ok((n > 0, n > 0))
        })
    }

    /// Every route, by name.
    pub fn routes(&self) -> Result<Vec<Route>, StateError> {
        let mut st = self
            .db
            .prepare("SELECT host, domain, app_guid FROM routes ORDER BY domain, host, app_guid")?;
        let rows = st.query_map([], |r| {
            Ok(Route {
                host: r.get(0)?,
                domain: r.get(1)?,
                app_guid: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn validate_app_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "invalid app name {name:?}: use 1-63 letters, digits, '-' or '_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, State) {
        let d = tempfile::tempdir().unwrap();
        let s = State::open(
            &d.path().join("state.db"),
            ("10.255.0.0".parse().unwrap(), 16),
            60,
        )
        .unwrap();
        (d, s)
    }

    #[test]
    fn routes_are_validated_and_follow_apps() {
        let (_d, mut s) = open();
        let b = s.create_app("appb").unwrap();
        let c = s.create_app("appc").unwrap();
        let r0 = s.revision().unwrap();
        assert!(s.map_route(&b.guid, "apps.internal", "AppB").unwrap());
        assert!(
            !s.map_route(&b.guid, "apps.internal", "appb").unwrap(),
            "mapping twice is a no-op"
        );
        assert!(
            s.map_route(&c.guid, "apps.internal", "appb").unwrap(),
            "several apps per route"
        );
        assert_eq!(s.revision().unwrap(), r0 + 2);
        assert!(matches!(
            s.map_route(&b.guid, "apps.internal", "bad_host!"),
            Err(StateError::Invalid(_))
        ));
        assert!(matches!(
            s.map_route(&b.guid, "example.com", "x"),
            Err(StateError::Invalid(_))
        ));
        s.create_domain("Other.Internal").unwrap();
        assert!(s.map_route(&b.guid, "other.internal", "x").unwrap());
        assert_eq!(s.routes().unwrap().len(), 3);
        assert!(s.unmap_route(&b.guid, "apps.internal", "appb").unwrap());
        assert!(!s.unmap_route(&b.guid, "apps.internal", "appb").unwrap());
        s.delete_app(&c.guid).unwrap();
        assert_eq!(
            s.routes().unwrap(),
            vec![Route {
                host: "x".into(),
                domain: "other.internal".into(),
                app_guid: b.guid.clone()
            }]
        );
    }

    #[test]
    fn tags_are_unique_and_reused_after_delete() {
        let (_d, mut s) = open();
        let a = s.create_app("appa").unwrap();
        let b = s.create_app("appb").unwrap();
        let c = s.create_app("appc").unwrap();
        assert_eq!((a.tag, b.tag, c.tag), (1, 2, 3));
        assert!(matches!(
            s.create_app("appa"),
            Err(StateError::AppExists(_))
        ));
        s.delete_app(&b.guid).unwrap();
        assert_eq!(
            s.create_app("appd").unwrap().tag,
            2,
            "the freed tag is reused"
        );
        assert_eq!(lowest_free_tag(&[]), Some(1));
        assert_eq!(lowest_free_tag(&(1..=65535).collect::<Vec<_>>()), None);
        assert!(matches!(
            s.create_app("bad name"),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn every_change_bumps_the_revision_and_no_ops_do_not() {
        let (_d, mut s) = open();
        let r0 = s.revision().unwrap();
        let a = s.create_app("a").unwrap();
        let b = s.create_app("b").unwrap();
        let p = Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: "tcp".into(),
            start: 8080,
            end: 8080,
        };
        assert_eq!(s.add_policies(std::slice::from_ref(&p)).unwrap(), 1);
        let r1 = s.revision().unwrap();
        assert_eq!(r1, r0 + 3);
        assert_eq!(
            s.add_policies(std::slice::from_ref(&p)).unwrap(),
            0,
            "creating an existing policy is a no-op"
        );
        assert_eq!(s.revision().unwrap(), r1);
        assert_eq!(
            s.policies(Some(std::slice::from_ref(&b.guid))).unwrap(),
            vec![p.clone()]
        );
        assert_eq!(s.delete_policies(std::slice::from_ref(&p)).unwrap(), 1);
        assert_eq!(s.revision().unwrap(), r1 + 1);
        let unknown = Policy {
            source: "nope".into(),
            ..p
        };
        assert!(matches!(
            s.add_policies(&[unknown]),
            Err(StateError::UnknownApp(_))
        ));
    }

    #[test]
    fn deleting_an_app_drops_its_policies_and_instances() {
        let (_d, mut s) = open();
        let a = s.create_app("a").unwrap();
        let b = s.create_app("b").unwrap();
        s.add_policies(&[Policy {
            source: a.guid.clone(),
            destination: b.guid.clone(),
            protocol: "udp".into(),
            start: 1,
            end: 9,
        }])
        .unwrap();
        s.register_instance(&Instance {
            guid: "i1".into(),
            app_guid: b.guid.clone(),
            index: 0,
            cell: "cell1".into(),
            ip: "10.255.1.1".parse().unwrap(),
        })
        .unwrap();
        s.delete_app(&b.guid).unwrap();
        assert!(s.policies(None).unwrap().is_empty());
        assert!(s.instances(None).unwrap().is_empty());
    }

    #[test]
    fn leases_are_sticky_and_expired_ones_reclaimed_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        // A /22 overlay has 4 subnets.
        let mut s = State::open(
            &d.path().join("s.db"),
            ("10.255.0.0".parse().unwrap(), 22),
            0,
        )
        .unwrap();
        let ip: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let l1 = s.acquire_lease("cell1", ip).unwrap();
        assert_eq!(l1.subnet, "10.255.0.0/24");
        assert_eq!(
            s.acquire_lease("cell1", ip).unwrap().subnet,
            l1.subnet,
            "same cell, same lease"
        );
        for c in ["cell2", "cell3", "cell4"] {
            s.acquire_lease(c, ip).unwrap();
        }
        // All four taken; with a TTL of 0 they are all expired, so the oldest (cell1) goes.
        s.db.execute(
            "UPDATE cells SET renewed_at = renewed_at - 100 WHERE name = 'cell1'",
            [],
        )
        .unwrap();
        let l5 = s.acquire_lease("cell5", ip).unwrap();
        assert_eq!(l5.subnet, "10.255.0.0/24");
        assert!(!s.leases().unwrap().iter().any(|l| l.cell == "cell1"));
        assert!(matches!(
            s.renew_lease("cell1"),
            Err(StateError::NoLease(_))
        ));
        // Reopened with a long TTL, nothing can be reclaimed.
        drop(s);
        let mut s = State::open(
            &d.path().join("s.db"),
            ("10.255.0.0".parse().unwrap(), 22),
            3600,
        )
        .unwrap();
        assert!(matches!(
            s.acquire_lease("cell6", ip),
            Err(StateError::NoSubnet(_))
        ));
        assert!(s.release_lease("cell2").unwrap());
        assert_eq!(
            s.acquire_lease("cell6", ip).unwrap().subnet,
            "10.255.1.0/24"
        );
    }
}
