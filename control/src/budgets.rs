//! Budgets on what tenants and cells may create in state every tenant shares (issue #23).
//!
//! The 16-bit tag space is one for the whole platform: every app and every group a cell names
//! through CF's `PUT /internal/tags` takes a tag, and a tag is what a packet's VXLAN GBP mark
//! says it is. Without budgets one cell or one space user could take them all, after which no
//! tenant can create an app. So:
//!
//! - tag groups made through the internal API: at most [`Limits::tag_groups_per_cell`] per
//!   cell and [`Limits::tag_groups`] in all; ids and types bounded and validated; a group's tag
//!   is freed when the cell that made it is removed (or by CF's cleanup once that cell is
//!   gone); a PUT of a known group writes nothing and wakes no watch.
//! - per space (CF's space quotas): at most [`Limits::space_apps`] apps,
//!   [`Limits::space_instances`] placed instances and [`Limits::space_routes`] routes unless the admin set the space's own quota
//!   (`c2c set-space-quota`). Quotas bind `network.write` callers (tenants and runtimes); the
//!   admin is not limited, as CF's policy quota does not limit `network.admin`.
//!
//! Every count is taken inside the write transaction that adds the row, so concurrent callers
//! (also on several replicas: writes are serialized) cannot pass a limit together.

use c2c_api::types::SpaceQuota;

use crate::db::{Db, OptionalExt};
use crate::error::StateError;

/// The platform's default budgets (`control serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tag groups one cell may create through `PUT /internal/tags`.
    pub tag_groups_per_cell: u32,
    /// Tag groups that are not apps, in all.
    pub tag_groups: u32,
    /// Apps per space, unless the space has a quota of its own.
    pub space_apps: u32,
    /// Placed instances per space, unless the space has a quota of its own.
    pub space_instances: u32,
    /// Routes mapped to a space's apps, unless the space has a quota of its own.
    pub space_routes: u32,
    /// Apps of Cloud Controller's that an admin's policies name (CF's behaviour for GUIDs the
    /// policy server has not seen: see [`crate::cf`]), in all.
    pub external_apps: u32,
}

/// Defaults: a few hundred apps and a couple of thousand instances per space leave the
/// 65,535 tags to a hundred-odd full spaces; a cell's enforcer names a handful of groups
/// (CF's router names one).
impl Default for Limits {
    fn default() -> Self {
        Self {
            tag_groups_per_cell: 64,
            tag_groups: 1024,
            space_apps: 300,
            space_instances: 2000,
            space_routes: 1000,
            external_apps: 4096,
        }
    }
}

/// A group id as the internal API takes it: 1-64 of letters, digits, `.`, `_`, `:` or `-`
/// (CF's GUIDs are 36); a type: 1-32 of letters, digits, `_` or `-`.
pub fn validate_tag_group(id: &str, kind: &str) -> Result<(), StateError> {
    let ok = |s: &str, max: usize, extra: &[char]| {
        (1..=max).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    };
    if !ok(id, 64, &['.', ':']) {
        return Err(StateError::Invalid(
            "a tag's group id is 1-64 letters, digits, '.', '_', ':' or '-'".into(),
        ));
    }
    if !ok(kind, 32, &[]) {
        return Err(StateError::Invalid(
            "a tag's type is 1-32 letters, digits, '_' or '-'".into(),
        ));
    }
    Ok(())
}

/// Counts with one `COUNT(*)` query.
fn count(tx: &Db, sql: &str, param: &str) -> Result<u32, StateError> {
    let n: i64 = tx.query_row(sql, [param], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Refuses a new tag group made by `owner` past its cell's or the platform's budget.
pub(crate) fn check_tag_budget(tx: &Db, l: Limits, owner: &str) -> Result<(), StateError> {
    let mine = count(tx, "SELECT COUNT(*) FROM tag_groups WHERE owner = ?", owner)?;
    if mine >= l.tag_groups_per_cell {
        return Err(StateError::Forbidden(format!(
                "tag quota exceeded: cell {owner} made {mine} tag groups, its limit (control serve --max-tag-groups-per-cell)"
            )));
    }
    let all: i64 = tx.query_row("SELECT COUNT(*) FROM tag_groups", (), |r| r.get(0))?;
    if all >= i64::from(l.tag_groups) {
        return Err(StateError::Forbidden(format!(
                "tag quota exceeded: {all} tag groups exist, the platform's limit (control serve --max-tag-groups)"
            )));
    }
    Ok(())
}

/// A space's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub apps: u32,
    pub instances: u32,
    pub routes: u32,
}

/// The quota of the space with GUID `space`: its own, else the platform's default.
pub(crate) fn quota_of(tx: &Db, l: Limits, space: &str) -> Result<Quota, StateError> {
    let own: Option<(i64, i64, i64)> = tx
        .query_row(
            "SELECT max_apps, max_instances, max_routes FROM space_quotas WHERE space_guid = ?",
            [space],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(match own {
        Some((a, i, r)) => Quota {
            apps: n(a),
            instances: n(i),
            routes: n(r),
        },
        None => Quota {
            apps: l.space_apps,
            instances: l.space_instances,
            routes: l.space_routes,
        },
    })
}

/// Routes mapped to the apps of a space (a route mapped to two of its apps counts twice).
const SPACE_ROUTES: &str =
    "SELECT COUNT(*) FROM routes r JOIN apps a ON a.guid = r.app_guid WHERE a.space_guid = ?";

/// The space of the app `app_guid`.
fn space_of(tx: &Db, app_guid: &str) -> Result<String, StateError> {
    tx.query_row(
        "SELECT space_guid FROM apps WHERE guid = ?",
        [app_guid],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StateError::UnknownApp(app_guid.into()))
}

/// Refuses one more route for `app_guid` past its space's quota (every route is in each cell's
/// view and its app's certificates).
pub(crate) fn check_space_routes(tx: &Db, l: Limits, app_guid: &str) -> Result<(), StateError> {
    let space = space_of(tx, app_guid)?;
    let max = quota_of(tx, l, &space)?.routes;
    if count(tx, SPACE_ROUTES, &space)? >= max {
        return Err(StateError::Forbidden(format!(
            "You have exceeded the total routes for your space's quota ({max} routes; the admin sets it with `c2c set-space-quota`)."
        )));
    }
    Ok(())
}

/// Refuses one more app in `space` past its quota.
pub(crate) fn check_space_apps(tx: &Db, l: Limits, space: &str) -> Result<(), StateError> {
    let max = quota_of(tx, l, space)?.apps;
    let n = count(tx, "SELECT COUNT(*) FROM apps WHERE space_guid = ?", space)?;
    if n >= max {
        return Err(StateError::Forbidden(format!(
                "You have exceeded the app limit for your space's quota ({max} apps; the admin sets it with `c2c set-space-quota`)."
            )));
    }
    Ok(())
}

/// Refuses one more instance of `app_guid` past its space's quota.
pub(crate) fn check_space_instances(tx: &Db, l: Limits, app_guid: &str) -> Result<(), StateError> {
    let space = space_of(tx, app_guid)?;
    let max = quota_of(tx, l, &space)?.instances;
    let n = count(
            tx,
            "SELECT COUNT(*) FROM instances i JOIN apps a ON a.guid = i.app_guid WHERE a.space_guid = ?",
            &space,
        )?;
    if n >= max {
        return Err(StateError::Forbidden(format!(
                "You have exceeded the instance limit for your space's quota ({max} instances; the admin sets it with `c2c set-space-quota`)."
            )));
    }
    Ok(())
}

pub(crate) fn space_quota_in(
    tx: &Db,
    l: Limits,
    sp: &c2c_api::asg::Space,
) -> Result<SpaceQuota, StateError> {
    let q = quota_of(tx, l, &sp.guid)?;
    let own = tx
        .query_row(
            "SELECT 1 FROM space_quotas WHERE space_guid = ?",
            [sp.guid.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    Ok(SpaceQuota {
        org: sp.org.clone(),
        space: sp.name.clone(),
        max_apps: q.apps,
        max_instances: q.instances,
        max_routes: q.routes,
        apps: count(tx, "SELECT COUNT(*) FROM apps WHERE space_guid = ?", &sp.guid)?,
        routes: count(tx, SPACE_ROUTES, &sp.guid)?,
        instances: count(
            tx,
            "SELECT COUNT(*) FROM instances i JOIN apps a ON a.guid = i.app_guid WHERE a.space_guid = ?",
            &sp.guid,
        )?,
        default: !own,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_group_ids_and_types_are_bounded() {
        validate_tag_group("2ffe4b0f-b03c-48bb-a4fa-bf22657d34a2", "app").unwrap();
        validate_tag_group("router:1.a_b", "Router-1").unwrap();
        for (id, kind) in [
            ("", "app"),
            ("x", ""),
            (&"a".repeat(65) as &str, "app"),
            ("x", &"t".repeat(33) as &str),
            ("a b", "app"),
            ("a/b", "app"),
            ("x", "a.b"),
            ("é", "app"),
        ] {
            assert!(validate_tag_group(id, kind).is_err(), "{id:?} {kind:?}");
        }
    }
}
