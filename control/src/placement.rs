//! Placement: an instance exists because a user's token placed it on a cell (control makes its
//! GUID); only that cell may confirm it, at a free host address of its own lease, and withdraw
//! it; a placement no cell confirms within a TTL is removed.

use std::net::Ipv4Addr;

use c2c_api::types::Placement;
use c2c_api::Instance;

use crate::db::OptionalExt;
use crate::params;

/// When an instance's route certificate and its identity expire, as control last signed them
/// (Unix seconds; None until signed).
pub(crate) type Expiry = (Option<i64>, Option<i64>);
use crate::state::*;

impl State {
    /// Places a new instance of `app_guid` on `cell` (the scheduler's call, made with a user's
    /// token): control generates its GUID. `index` defaults to the lowest free one. The
    /// instance has no address until its cell confirms it ([`State::confirm_instance`]).
    pub fn place_instance(
        &mut self,
        app_guid: &str,
        cell: &str,
        index: Option<u32>,
    ) -> Result<Placement, StateError> {
        self.place_instance_by(app_guid, cell, index, None)
    }

    /// [`State::place_instance`], recording what runs the instance (`runtime`: free text from
    /// the placer, at most 100 printable characters).
    pub fn place_instance_by(
        &mut self,
        app_guid: &str,
        cell: &str,
        index: Option<u32>,
        runtime: Option<&str>,
    ) -> Result<Placement, StateError> {
        self.place_instance_as(app_guid, cell, index, runtime, false)
    }

    /// [`State::place_instance_by`] within the app's space's quota when `quota` (a tenant's
    /// call; see [`crate::budgets`]).
    pub fn place_instance_as(
        &mut self,
        app_guid: &str,
        cell: &str,
        index: Option<u32>,
        runtime: Option<&str>,
        quota: bool,
    ) -> Result<Placement, StateError> {
        let limits = self.limits;
        let cell = cell_name(cell)?;
        if let Some(r) = runtime {
            if r.is_empty() || r.len() > 100 || r.chars().any(|c| c.is_control()) {
                return Err(StateError::Invalid(
                    "runtime: 1-100 printable characters (e.g. \"podman 3f2a9c1b0d2e\")".into(),
                ));
            }
        }
        // A probe (`probe:PORT`) is hosted by the cell's agent: its view names it at once.
        let probe = runtime
            .and_then(c2c_api::probe::port_of)
            .transpose()
            .map_err(StateError::Invalid)?
            .is_some();
        self.write(|tx| {
            if probe {
                probe_budget(tx, app_guid, cell.as_str(), runtime.unwrap_or_default())?;
            }
            if tx
                .query_row("SELECT 1 FROM apps WHERE guid = ?", [app_guid], |_| Ok(()))
                .optional()?
                .is_none()
            {
                return Err(StateError::UnknownApp(app_guid.into()));
            }
            if quota {
                crate::budgets::check_space_instances(tx, limits, app_guid)?;
            }
            let used: Vec<u32> = tx
                .prepare("SELECT idx FROM instances WHERE app_guid = ? ORDER BY idx")?
                .query_map([app_guid], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let index = match index {
                Some(i) if used.contains(&i) => {
                    return Err(StateError::Conflict(format!(
                        "instance index {i} of app {app_guid} is already placed"
                    )))
                }
                Some(i) => i,
                None => (0..).find(|i| !used.contains(i)).unwrap_or(0),
            };
            let p = Placement {
                guid: new_guid(),
                app_guid: app_guid.into(),
                index,
                cell: cell.clone(),
                ip: None,
                runtime: runtime.map(str::to_string),
            };
            tx.execute(
                "INSERT INTO instances (guid, app_guid, idx, cell, ip, runtime, waiting_since) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                params![&p.guid, p.app_guid.as_str(), p.index, p.cell.as_str(), p.runtime.as_deref(), now()],
            )?;
            // Nothing a cell routes or resolves changed until the instance is confirmed; a
            // probe is in its cell's view from now on.
            Ok((p, probe))
        })
    }

    /// Notes when the certificate (or, `identity`, the identity) control just signed for
    /// instance `guid` expires (Unix seconds). Not a change any cell needs: no revision.
    pub fn record_expiry(
        &mut self,
        guid: &str,
        identity: bool,
        expires_at: i64,
    ) -> Result<(), StateError> {
        let sql = if identity {
            "UPDATE instances SET identity_expires_at = ? WHERE guid = ?"
        } else {
            "UPDATE instances SET cert_expires_at = ? WHERE guid = ?"
        };
        self.write(|tx| {
            tx.execute(sql, params![expires_at, guid])?;
            Ok(((), false))
        })
    }

    /// Each instance's certificate and identity expiry as last signed (Unix seconds), by GUID.
    pub fn expiries(&self) -> Result<std::collections::HashMap<String, Expiry>, StateError> {
        let mut st = self
            .db
            .prepare_cached("SELECT guid, cert_expires_at, identity_expires_at FROM instances")?;
        let rows = st.query_map([None::<&str>; 0], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))
        })?;
        rows.collect::<Result<_, _>>()
    }

    /// Removes a placed instance (the scheduler's call); true if it existed.
    pub fn remove_instance(&mut self, guid: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let found: Option<(Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT ip, runtime FROM instances WHERE guid = ?",
                    [guid],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let n = tx.execute("DELETE FROM instances WHERE guid = ?", [guid])?;
            // Only a confirmed instance, or a probe, was in any cell's view.
            let in_view = found.is_some_and(|(ip, runtime)| {
                ip.is_some() || runtime.is_some_and(|r| c2c_api::probe::port_of(&r).is_some())
            });
            Ok((n > 0, in_view))
        })
    }

    /// `cell` confirms that the instance `guid` runs on it at `ip`. Refused unless control placed
    /// that instance on that very cell (a cell cannot claim or move another's instance), the
    /// app and index it reports are the placed ones, and `ip` is a host address of the cell's
    /// own lease that no other instance holds.
    pub fn confirm_instance(
        &mut self,
        cell: &str,
        guid: &str,
        app_guid: &str,
        index: u32,
        ip: Ipv4Addr,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let placed: Option<(String, u32, String, Option<String>)> = tx
                .query_row(
                    "SELECT app_guid, idx, cell, ip FROM instances WHERE guid = ?",
                    [guid],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((placed_app, placed_index, placed_cell, current)) = placed else {
                return Err(StateError::Forbidden(format!(
                    "instance {guid} was not placed by control; nothing runs under that GUID"
                )));
            };
            if placed_cell != cell {
                return Err(StateError::Forbidden(format!(
                    "instance {guid} is placed on another cell, not on {cell}"
                )));
            }
            if placed_app != app_guid || placed_index != index {
                return Err(StateError::Forbidden(format!(
                    "instance {guid} is index {placed_index} of app {placed_app}, not index {index} of app {app_guid}"
                )));
            }
            let subnet: Option<Subnet> = tx
                .query_row("SELECT subnet FROM cells WHERE name = ?", [cell], |r| {
                    parsed(r, 0)
                })
                .optional()?;
            let subnet = subnet.ok_or_else(|| StateError::NoLease(cell.into()))?;
            if !host_of(&subnet, ip) {
                return Err(StateError::Forbidden(format!(
                    "{ip} is not a container address of {cell}'s lease {subnet}"
                )));
            }
            if current.as_deref() == Some(ip.to_string().as_str()) {
                return Ok(((), false));
            }
            let holder: Option<String> = tx
                .query_row(
                    "SELECT guid FROM instances WHERE ip = ? AND guid != ?",
                    params![ip.to_string(), guid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = holder {
                return Err(StateError::Conflict(format!(
                    "{ip} is already the address of instance {other}"
                )));
            }
            tx.execute(
                "UPDATE instances SET ip = ?, waiting_since = 0 WHERE guid = ?",
                params![ip.to_string(), guid],
            )?;
            Ok(((), true))
        })
    }

    /// `cell` says the instance `guid` no longer runs on it: its address is withdrawn (it leaves
    /// DNS and every view) and its placement stays for the scheduler to remove. Only the cell it
    /// is placed on may say so. True if it was confirmed.
    pub fn unconfirm_instance(&mut self, cell: &str, guid: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let placed: Option<String> = tx
                .query_row("SELECT cell FROM instances WHERE guid = ?", [guid], |r| {
                    r.get(0)
                })
                .optional()?;
            match placed {
                None => Ok((false, false)),
                Some(c) if c != cell => Err(StateError::Forbidden(format!(
                    "instance {guid} is placed on another cell, not on {cell}"
                ))),
                Some(_) => {
                    // Withdrawn: it waits for its cell again, and expires if nothing
                    // confirms it (see [`State::expire_placements`]).
                    let n = tx.execute(
                        "UPDATE instances SET ip = NULL, waiting_since = ? WHERE guid = ? AND ip IS NOT NULL",
                        params![now(), guid],
                    )?;
                    Ok((n > 0, n > 0))
                }
            }
        })
    }

    /// Confirmed instances (placed, and running at an address), all or those on `cell`: what
    /// cells route to, resolve and certify.
    pub fn instances(&self, cell: Option<&str>) -> Result<Vec<Instance>, StateError> {
        Ok(self
            .placements(cell)?
            .into_iter()
            .filter_map(|p| {
                Some(Instance {
                    ip: p.ip?,
                    guid: p.guid,
                    app_guid: p.app_guid,
                    index: p.index,
                    cell: p.cell,
                })
            })
            .collect())
    }

    /// The probes cells host for `c2c check` (instances placed with runtime `probe:PORT`),
    /// confirmed or not, with their cells.
    pub fn probes_hosted(&self) -> Result<Vec<(String, c2c_api::probe::Hosted)>, StateError> {
        let mut st = self.db.prepare_cached(
            "SELECT guid, app_guid, idx, cell, runtime FROM instances WHERE runtime LIKE 'probe:%' ORDER BY cell, app_guid, idx",
        )?;
        let rows = st.query_map([None::<&str>; 0], |r| {
            let runtime: String = r.get(4)?;
            Ok((
                r.get::<String>(3)?,
                c2c_api::probe::Hosted {
                    guid: r.get(0)?,
                    app_guid: parsed(r, 1)?,
                    index: r.get(2)?,
                    host_port: c2c_api::probe::port_of(&runtime)
                        .and_then(Result::ok)
                        .unwrap_or_default(),
                },
            ))
        })?;
        rows.collect()
    }

    /// Every placed instance, confirmed or not, all or those on `cell`.
    pub fn placements(&self, cell: Option<&str>) -> Result<Vec<Placement>, StateError> {
        let mut st = self.db.prepare_cached("SELECT guid, app_guid, idx, cell, ip, runtime FROM instances WHERE CAST(?1 AS TEXT) IS NULL OR cell = ?1 ORDER BY app_guid, idx")?;
        let rows = st.query_map([cell], |r| {
            let ip: Option<String> = r.get(4)?;
            Ok(Placement {
                guid: r.get(0)?,
                app_guid: parsed(r, 1)?,
                index: r.get(2)?,
                cell: parsed(r, 3)?,
                ip: ip
                    .map(|ip| ip.parse())
                    .transpose()
                    .map_err(|e| StateError::Internal(format!("stored address: {e}")))?,
                runtime: r.get(5)?,
            })
        })?;
        rows.collect::<Result<_, _>>()
    }

    /// Removes the placements their cell has not confirmed within `ttl_secs` of being placed
    /// or withdrawn (a container that failed to start, whose runtime never said so), and
    /// returns their GUIDs. Instances of a cell whose lease expired are not among them: that
    /// cell confirms them again when it is back, and removing it removes them.
    pub fn expire_placements(&mut self, ttl_secs: u64) -> Result<Vec<String>, StateError> {
        self.expire_placements_at(ttl_secs, now())
    }

    /// [`State::expire_placements`] as of `now` (seconds since the Unix epoch).
    pub fn expire_placements_at(
        &mut self,
        ttl_secs: u64,
        now: i64,
    ) -> Result<Vec<String>, StateError> {
        let cutoff = now.saturating_sub(ttl_secs as i64);
        self.write(|tx| {
            let gone: Vec<String> = tx.query_map(
                "SELECT guid FROM instances WHERE ip IS NULL AND waiting_since > 0 AND waiting_since < ? ORDER BY guid",
                [cutoff],
                |r| r.get(0),
            )?;
            for g in &gone {
                tx.execute("DELETE FROM instances WHERE guid = ?", [g])?;
            }
            // Unconfirmed placements are in no cell's view: nothing to wake.
            Ok((gone, false))
        })
    }
}

/// Only an app of `c2c check`'s own space may be a probe (a probe opens a port on its cell's
/// underlay); it may take a cell's probe port only while it is free, and a cell hosts at most
/// [`c2c_api::probe::PER_CELL`] probes.
fn probe_budget(
    tx: &crate::db::Tx<'_>,
    app_guid: &str,
    cell: &str,
    runtime: &str,
) -> Result<(), StateError> {
    let space: Option<(String, String)> = tx
        .query_row(
            "SELECT o.name, s.name FROM apps a JOIN spaces s ON s.guid = a.space_guid JOIN orgs o ON o.guid = s.org_guid WHERE a.guid = ?",
            [app_guid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if space
        .as_ref()
        .is_some_and(|(o, s)| o != c2c_api::probe::ORG || s != c2c_api::probe::SPACE)
    {
        return Err(StateError::Forbidden(format!(
            "only apps of {}/{} (`c2c check`'s probes) may be hosted as probes",
            c2c_api::probe::ORG,
            c2c_api::probe::SPACE
        )));
    }
    let taken: Vec<String> = tx
        .prepare("SELECT runtime FROM instances WHERE cell = ? AND runtime LIKE 'probe:%'")?
        .query_map([cell], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if taken.iter().any(|t| t == runtime) {
        return Err(StateError::Conflict(format!(
            "cell {cell} already hosts a probe on host port {}",
            runtime.trim_start_matches(c2c_api::probe::RUNTIME_PREFIX)
        )));
    }
    if taken.len() >= c2c_api::probe::PER_CELL {
        return Err(StateError::Conflict(format!(
            "cell {cell} hosts {} probes, the most a cell hosts; remove one (`c2c check` removes its own at the end)",
            taken.len()
        )));
    }
    Ok(())
}
