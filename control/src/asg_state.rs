//! Orgs, spaces and security groups in the state: the tenancy apps live in and the egress rules
//! bound to it (Cloud Foundry's ASGs), on both engines.

use std::collections::BTreeMap;

use c2c_api::asg::{Egress, Lifecycle, NamedRule, Org, Rule, SecurityGroup, Space, SpaceBinding};

use crate::db::OptionalExt;
use crate::state::{new_guid, State, StateError};

/// Org, space and group names: what CF accepts in practice (no control characters, not blank),
/// bounded so a name is safe in a path and a log line, and without `/`: `ORG/SPACE` names a
/// space in grants and bindings, so an org `a/b` or a space `b/c` would let `a/b/c` land on
/// another tenant's space.
fn validate_name(kind: &str, name: &str) -> Result<(), StateError> {
    if name.trim().is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(StateError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-255 printable characters other than '/'"
        )));
    }
    Ok(())
}

/// Whether `sql` (a `SELECT 1 ...`) finds a row.
fn exists(tx: &crate::db::Db, sql: &str, params: &[&str]) -> Result<bool, StateError> {
    Ok(tx
        .query_row(
            sql,
            params
                .iter()
                .map(|p| crate::db::Val::from(*p))
                .collect::<Vec<_>>(),
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

impl State {
    /// Creates an org.
    pub fn create_org(&mut self, name: &str) -> Result<Org, StateError> {
        validate_name("org", name)?;
        self.write(|tx| {
            if exists(tx, "SELECT 1 FROM orgs WHERE name = ?", &[name])? {
                return Err(StateError::Conflict(format!(
                    "Organization '{name}' already exists."
                )));
            }
            let org = Org {
                guid: new_guid(),
                name: name.into(),
            };
            tx.execute(
                "INSERT INTO orgs (guid, name) VALUES (?, ?)",
                [&org.guid, &org.name],
            )?;
            Ok((org, true))
        })
    }

    /// Every org, by name.
    pub fn orgs(&self) -> Result<Vec<Org>, StateError> {
        self.db
            .query_map("SELECT guid, name FROM orgs ORDER BY name", (), |r| {
                Ok(Org {
                    guid: r.get(0)?,
                    name: r.get(1)?,
                })
            })
    }

    fn org_guid(tx: &crate::db::Db, org: &str) -> Result<String, StateError> {
        tx.query_row(
            "SELECT guid FROM orgs WHERE name = ?1 OR guid = ?1",
            [org],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StateError::NotFound(format!("Organization '{org}' not found.")))
    }

    /// Creates a space in `org` (a name or GUID).
    pub fn create_space(&mut self, org: &str, name: &str) -> Result<Space, StateError> {
        validate_name("space", name)?;
        self.write(|tx| {
            let org_guid = Self::org_guid(tx, org)?;
            if exists(
                tx,
                "SELECT 1 FROM spaces WHERE org_guid = ? AND name = ?",
                &[&org_guid, name],
            )? {
                return Err(StateError::Conflict(format!(
                    "Space '{name}' already exists."
                )));
            }
            let guid = new_guid();
            tx.execute(
                "INSERT INTO spaces (guid, name, org_guid) VALUES (?, ?, ?)",
                [&guid, name, &org_guid],
            )?;
            let org_name: String =
                tx.query_row("SELECT name FROM orgs WHERE guid = ?", [&org_guid], |r| {
                    r.get(0)
                })?;
            Ok((
                Space {
                    guid,
                    name: name.into(),
                    org_guid,
                    org: org_name,
                },
                true,
            ))
        })
    }

    /// Every space (of `org`, a name or GUID, when given), by org and name.
    pub fn spaces(&self, org: Option<&str>) -> Result<Vec<Space>, StateError> {
        let all = self.db.query_map(
            "SELECT s.guid, s.name, s.org_guid, o.name FROM spaces s JOIN orgs o ON o.guid = s.org_guid
             ORDER BY o.name, s.name",
            (),
            |r| {
                Ok(Space {
                    guid: r.get(0)?,
                    name: r.get(1)?,
                    org_guid: r.get(2)?,
                    org: r.get(3)?,
                })
            },
        )?;
        let Some(org) = org else { return Ok(all) };
        let org_guid = Self::org_guid(&self.db, org)?;
        Ok(all.into_iter().filter(|s| s.org_guid == org_guid).collect())
    }

    /// The space `space` (a name or GUID) of `org` (a name or GUID).
    pub fn space(&self, org: &str, space: &str) -> Result<Space, StateError> {
        self.spaces(Some(org))?
            .into_iter()
            .find(|s| s.name == space || s.guid == space)
            .ok_or_else(|| StateError::NotFound(format!("Space '{space}' not found.")))
    }

    /// Creates a security group with validated `rules`.
    pub fn create_security_group(
        &mut self,
        name: &str,
        rules: &[Rule],
    ) -> Result<SecurityGroup, StateError> {
        validate_name("security group", name)?;
        let json = encode(rules)?;
        self.write(|tx| {
            if exists(tx, "SELECT 1 FROM security_groups WHERE name = ?", &[name])? {
                return Err(StateError::Conflict(format!(
                    "Security group '{name}' already exists."
                )));
            }
            let guid = new_guid();
            tx.execute(
                "INSERT INTO security_groups (guid, name, rules) VALUES (?, ?, ?)",
                [&guid, name, &json],
            )?;
            Ok((guid, true))
        })?;
        self.security_group(name)
    }

    /// Replaces a group's rules. Returns whether they changed.
    pub fn update_security_group(
        &mut self,
        name: &str,
        rules: &[Rule],
    ) -> Result<bool, StateError> {
        let json = encode(rules)?;
        self.write(|tx| {
            let old: String = tx
                .query_row(
                    "SELECT rules FROM security_groups WHERE name = ?",
                    [name],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| not_found(name))?;
            if old == json {
                return Ok((false, false));
            }
            tx.execute(
                "UPDATE security_groups SET rules = ? WHERE name = ?",
                [&json, name],
            )?;
            Ok((true, true))
        })
    }

    /// Deletes a group with its bindings. Returns whether it existed.
    pub fn delete_security_group(&mut self, name: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM security_groups WHERE name = ?", [name])?;
            Ok((n > 0, n > 0))
        })
    }

    /// Binds a group to every space (`space` `None`) or to one space (a GUID) for `lifecycle`.
    /// Returns whether the binding is new.
    pub fn bind_security_group(
        &mut self,
        name: &str,
        space: Option<&str>,
        lifecycle: Lifecycle,
    ) -> Result<bool, StateError> {
        self.write(|tx| {
            let guid = group_guid(tx, name)?;
            let bound = match space {
                None => exists(
                    tx,
                    "SELECT 1 FROM security_group_defaults WHERE sg_guid = ? AND lifecycle = ?",
                    &[&guid, lifecycle.as_str()],
                )?,
                Some(s) => exists(
                    tx,
                    "SELECT 1 FROM security_group_spaces WHERE sg_guid = ? AND space_guid = ? AND lifecycle = ?",
                    &[&guid, s, lifecycle.as_str()],
                )?,
            };
            if bound {
                return Ok((false, false));
            }
            match space {
                None => tx.execute(
                    "INSERT INTO security_group_defaults (sg_guid, lifecycle) VALUES (?, ?)",
                    [&guid, lifecycle.as_str()],
                )?,
                Some(s) => tx.execute(
                    "INSERT INTO security_group_spaces (sg_guid, space_guid, lifecycle) VALUES (?, ?, ?)",
                    [&guid, s, lifecycle.as_str()],
                )?,
            };
            Ok((true, true))
        })
    }

    /// Removes a binding made by [`State::bind_security_group`]. Returns whether it existed.
    pub fn unbind_security_group(
        &mut self,
        name: &str,
        space: Option<&str>,
        lifecycle: Lifecycle,
    ) -> Result<bool, StateError> {
        self.write(|tx| {
            let guid = group_guid(tx, name)?;
            let n = match space {
                None => tx.execute(
                    "DELETE FROM security_group_defaults WHERE sg_guid = ? AND lifecycle = ?",
                    [&guid, lifecycle.as_str()],
                )?,
                Some(s) => tx.execute(
                    "DELETE FROM security_group_spaces WHERE sg_guid = ? AND space_guid = ? AND lifecycle = ?",
                    [&guid, s, lifecycle.as_str()],
                )?,
            };
            Ok((n > 0, n > 0))
        })
    }

    /// One group with its bindings.
    pub fn security_group(&self, name: &str) -> Result<SecurityGroup, StateError> {
        self.security_groups()?
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// Every group with its bindings, by name.
    pub fn security_groups(&self) -> Result<Vec<SecurityGroup>, StateError> {
        let mut groups = self.db.query_map(
            "SELECT guid, name, rules FROM security_groups ORDER BY name",
            (),
            |r| {
                let rules: String = r.get(2)?;
                Ok(SecurityGroup {
                    guid: r.get(0)?,
                    name: r.get(1)?,
                    rules: serde_json::from_str(&rules)
                        .map_err(|e| StateError::Internal(format!("stored rules: {e}")))?,
                    running_default: false,
                    staging_default: false,
                    spaces: vec![],
                })
            },
        )?;
        let defaults = self.db.query_map(
            "SELECT sg_guid, lifecycle FROM security_group_defaults",
            (),
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?;
        let bound = self.db.query_map(
            "SELECT b.sg_guid, b.space_guid, o.name || '/' || s.name, b.lifecycle
             FROM security_group_spaces b JOIN spaces s ON s.guid = b.space_guid
             JOIN orgs o ON o.guid = s.org_guid ORDER BY 1, 3, 4",
            (),
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    SpaceBinding {
                        space_guid: r.get(1)?,
                        space: r.get(2)?,
                        lifecycle: lifecycle(&r.get::<String>(3)?)?,
                    },
                ))
            },
        )?;
        for g in &mut groups {
            for (sg, l) in &defaults {
                if *sg == g.guid {
                    match lifecycle(l)? {
                        Lifecycle::Running => g.running_default = true,
                        Lifecycle::Staging => g.staging_default = true,
                    }
                }
            }
            g.spaces = bound
                .iter()
                .filter(|(sg, _)| *sg == g.guid)
                .map(|(_, b)| b.clone())
                .collect();
        }
        Ok(groups)
    }

    /// What cells enforce: the running groups' rules, for every space and per space.
    pub fn egress(&self) -> Result<Egress, StateError> {
        let mut out = Egress::default();
        for g in self.security_groups()? {
            let named = || {
                g.rules.iter().map(|r| NamedRule {
                    group: g.name.clone(),
                    rule: r.clone(),
                })
            };
            if g.running_default {
                out.everywhere.extend(named());
            }
            for b in g
                .spaces
                .iter()
                .filter(|b| b.lifecycle == Lifecycle::Running)
            {
                out.by_space
                    .entry(b.space_guid.clone())
                    .or_default()
                    .extend(named());
            }
        }
        Ok(out)
    }

    /// App GUIDs per space GUID.
    pub fn apps_by_space(&self) -> Result<BTreeMap<String, Vec<String>>, StateError> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (space, app) in
            self.db
                .query_map("SELECT space_guid, guid FROM apps ORDER BY 1, 2", (), |r| {
                    Ok((r.get::<String>(0)?, r.get::<String>(1)?))
                })?
        {
            out.entry(space).or_default().push(app);
        }
        Ok(out)
    }
}

fn encode(rules: &[Rule]) -> Result<String, StateError> {
    serde_json::to_string(rules).map_err(|e| StateError::Internal(format!("encoding rules: {e}")))
}

fn not_found(name: &str) -> StateError {
    StateError::NotFound(format!("Security group '{name}' not found."))
}

fn group_guid(tx: &crate::db::Db, name: &str) -> Result<String, StateError> {
    tx.query_row(
        "SELECT guid FROM security_groups WHERE name = ?",
        [name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| not_found(name))
}

fn lifecycle(s: &str) -> Result<Lifecycle, StateError> {
    s.parse()
        .map_err(|_| StateError::Internal(format!("stored lifecycle {s:?}")))
}
