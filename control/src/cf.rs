//! The parts of the state only Cloud Foundry's policy-server API needs: tags as CF lists and
//! creates them (`GET /external/tags`, `PUT /internal/tags`), when the policies last changed
//! (`GET /internal/policies_last_updated`), stale-policy cleanup and the per-source-app counts
//! the quota is checked against.

use std::collections::BTreeSet;
use std::collections::HashMap;

use crate::db::OptionalExt;
use crate::params;

use crate::state::{free_tag, Policy, State, StateError};
use c2c_api::types::Tag;

/// The group type of apps' tags.
pub const APP_TYPE: &str = "app";

/// The org that holds the apps of a Cloud Controller control serves as policy server for.
pub const EXTERNAL_ORG_GUID: &str = "00000000-0000-4000-8000-00000000c2c3";
/// Its one space: apps an admin's policies named by GUID before control had seen them.
pub const EXTERNAL_SPACE_GUID: &str = "00000000-0000-4000-8000-00000000c2c4";

/// Whether `s` is a GUID as Cloud Controller makes them (8-4-4-4-12 hex digits). Only such ids
/// are taken as another system's apps; anything else unknown is CF's 403, so a typo makes no
/// app.
pub fn is_cf_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl State {
    /// Every tag, apps' and other groups', by tag.
    pub fn tags(&self) -> Result<Vec<Tag>, StateError> {
        let rows = self
            .db
            .prepare(
                "SELECT guid, tag, 'app' FROM apps UNION ALL SELECT guid, tag, type FROM tag_groups ORDER BY 2",
            )?
            .query_map((), |r| {
                Ok(Tag {
                    id: r.get(0)?,
                    tag: Tag::hex(r.get(1)?),
                    kind: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The tag of the group `guid` of `kind`, made if it has none (CF's `CreateTag`). An app's
    /// tag is the one it got when it was created.
    pub fn create_tag(&mut self, guid: &str, kind: &str) -> Result<Tag, StateError> {
        self.create_tag_by(guid, kind, None)
    }

    /// [`State::create_tag`] for cell `owner` (CF's internal API), within its budget and the
    /// platform's (see [`crate::budgets`]); the group's tag is freed when that cell is removed.
    /// A known group writes nothing and wakes no watch.
    pub fn create_tag_by(
        &mut self,
        guid: &str,
        kind: &str,
        owner: Option<&str>,
    ) -> Result<Tag, StateError> {
        if guid.is_empty() || kind.is_empty() {
            return Err(StateError::Invalid(
                "a tag needs a group id and a type".into(),
            ));
        }
        crate::budgets::validate_tag_group(guid, kind)?;
        let tag = |t: u16| Tag {
            id: guid.into(),
            tag: Tag::hex(t),
            kind: kind.into(),
        };
        // Known groups are answered from a read: no write lock, no revision.
        if let Some(t) = Self::known_tag(&self.db, guid, kind)? {
            return Ok(tag(t));
        }
        let limits = self.limits;
        self.write(|tx| {
            if let Some(t) = Self::known_tag(tx, guid, kind)? {
                return Ok((tag(t), false));
            }
            if let Some(owner) = owner {
                crate::budgets::check_tag_budget(tx, limits, owner)?;
            }
            let t = free_tag(tx)?;
            tx.execute(
                "INSERT INTO tag_groups (guid, type, tag, owner) VALUES (?, ?, ?, ?)",
                params![guid, kind, t, owner],
            )?;
            Ok((tag(t), true))
        })
    }

    /// The tag an app (`kind` app) or another group already has.
    fn known_tag(db: &crate::db::Db, guid: &str, kind: &str) -> Result<Option<u16>, StateError> {
        if kind == APP_TYPE {
            if let Some(t) = db
                .query_row("SELECT tag FROM apps WHERE guid = ?", [guid], |r| r.get(0))
                .optional()?
            {
                return Ok(Some(t));
            }
        }
        db.query_row(
            "SELECT tag FROM tag_groups WHERE guid = ? AND type = ?",
            [guid, kind],
            |r| r.get(0),
        )
        .optional()
    }

    /// Which of `guids` are apps (by GUID): a read of those rows only, not of every app.
    pub fn apps_known(&self, guids: &[&str]) -> Result<BTreeSet<String>, StateError> {
        let mut known = BTreeSet::new();
        for chunk in guids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let vals: Vec<crate::db::Val> = chunk.iter().map(|g| (*g).into()).collect();
            known.extend(self.db.query_map(
                &format!("SELECT guid FROM apps WHERE guid IN ({marks})"),
                vals,
                |r| r.get::<String>(0),
            )?);
        }
        Ok(known)
    }

    /// Makes an app, with a tag, for each of `guids` that is a GUID control has not seen (Cloud
    /// Foundry's policy server makes a tag group for any GUID an admin's policy names: here
    /// control serves as the policy server of a Cloud Foundry whose Cloud Controller owns the
    /// apps). They live in the `cloud-controller` org's `apps` space, named by their GUID,
    /// within [`crate::budgets::Limits::external_apps`]; freed with their last policy
    /// ([`State::release_external_apps`]). Returns how many were made.
    pub fn adopt_external_apps(&mut self, guids: &[&str]) -> Result<usize, StateError> {
        // Every admin policy request comes here: when all its GUIDs are known apps (or no
        // GUIDs), a read answers, without the writers' lock.
        let mut unseen = vec![];
        for g in guids.iter().filter(|g| is_cf_guid(g)) {
            if self
                .db
                .query_row("SELECT 1 FROM apps WHERE guid = ?", [*g], |_| Ok(()))
                .optional()?
                .is_none()
            {
                unseen.push(*g);
            }
        }
        if unseen.is_empty() {
            return Ok(0);
        }
        let guids = unseen;
        let limits = self.limits;
        self.write(|tx| {
            let mut made = 0;
            for g in &guids {
                let known = tx
                    .query_row("SELECT 1 FROM apps WHERE guid = ?", [*g], |_| Ok(()))
                    .optional()?
                    .is_some();
                if known || !is_cf_guid(g) {
                    continue;
                }
                if made == 0 {
                    tx.execute(
                        "INSERT INTO orgs (guid, name) VALUES (?, 'cloud-controller') ON CONFLICT DO NOTHING",
                        [EXTERNAL_ORG_GUID],
                    )?;
                    tx.execute(
                        "INSERT INTO spaces (guid, name, org_guid) VALUES (?, 'apps', ?) ON CONFLICT DO NOTHING",
                        [EXTERNAL_SPACE_GUID, EXTERNAL_ORG_GUID],
                    )?;
                }
                let n: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM apps WHERE space_guid = ?",
                    [EXTERNAL_SPACE_GUID],
                    |r| r.get(0),
                )?;
                if n >= i64::from(limits.external_apps) {
                    return Err(StateError::Forbidden(format!(
                        "tag quota exceeded: {n} apps of Cloud Controller's have tags, the platform's limit (control serve --max-external-apps)"
                    )));
                }
                let tag = free_tag(tx)?;
                tx.execute(
                    "INSERT INTO apps (guid, name, tag, space_guid) VALUES (?, ?, ?, ?)",
                    params![*g, *g, tag, EXTERNAL_SPACE_GUID],
                )?;
                made += 1;
            }
            Ok((made, made > 0))
        })
    }

    /// Deletes the apps of Cloud Controller's among `guids` that no policy names any more
    /// (CF's `deleteGroupRowIfLast`): their tags are free again.
    pub fn release_external_apps(&mut self, guids: &[&str]) -> Result<usize, StateError> {
        let guids: Vec<&str> = guids.iter().copied().filter(|g| is_cf_guid(g)).collect();
        if guids.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut gone = 0;
            for g in &guids {
                gone += tx.execute(
                    "DELETE FROM apps WHERE guid = ?1 AND space_guid = ?2
                     AND NOT EXISTS (SELECT 1 FROM policies WHERE source = ?1 OR destination = ?1)",
                    params![*g, EXTERNAL_SPACE_GUID],
                )?;
            }
            Ok((gone, gone > 0))
        })
    }

    /// When a policy was last added or removed: Unix nanoseconds (millisecond resolution),
    /// strictly increasing with every change; 0 if none ever was.
    pub fn policies_last_updated(&self) -> Result<i64, StateError> {
        self.db
            .query_row("SELECT last_updated FROM policies_info", (), |r| r.get(0))
    }

    /// Deletes the policies whose source or destination app no longer exists, and returns
    /// them. Deleting an app deletes its policies in the same transaction, so this finds none
    /// unless the store was changed behind control's back; it is CF's cleanup endpoint.
    pub fn delete_stale_policies(&mut self) -> Result<Vec<Policy>, StateError> {
        let stale: Vec<Policy> = self
            .policies(None)?
            .into_iter()
            .filter(|p| {
                [&p.source, &p.destination].iter().any(|g| {
                    self.db
                        .query_row(
                            "SELECT 1 FROM apps WHERE guid = ?",
                            [g.as_str()],
                            |_| Ok(()),
                        )
                        .optional()
                        .map(|x| x.is_none())
                        .unwrap_or(false)
                })
            })
            .collect();
        if !stale.is_empty() {
            self.delete_policies(&stale)?;
        }
        Ok(stale)
    }

    /// How many policies each of `sources` is the source of.
    pub fn policy_counts_by_source(
        &self,
        sources: &[&str],
    ) -> Result<HashMap<String, usize>, StateError> {
        let mut out = HashMap::new();
        for s in sources {
            let n: i64 =
                self.db
                    .query_row("SELECT COUNT(*) FROM policies WHERE source = ?", [s], |r| {
                        r.get(0)
                    })?;
            out.insert(s.to_string(), n as usize);
        }
        Ok(out)
    }
}
