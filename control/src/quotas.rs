//! The state's budget and quota settings (see [`crate::budgets`] for what they bound).

use c2c_api::types::SpaceQuota;

use crate::budgets::*;
use crate::params;
use crate::state::{State, StateError};

impl State {
    /// The budgets in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the platform's default budgets (`control serve`).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }
}

impl State {
    /// Sets the quota of `space` of `org` (names or GUIDs): apps, instances and routes, each
    /// `None` to keep what it is (the default's value for a space without one).
    pub fn set_space_quota(
        &mut self,
        org: &str,
        space: &str,
        apps: Option<u32>,
        instances: Option<u32>,
        routes: Option<u32>,
    ) -> Result<SpaceQuota, StateError> {
        let sp = self.space(org, space)?;
        let l = self.limits;
        self.write(|tx| {
            let q0 = quota_of(tx, l, &sp.guid)?;
            tx.execute(
                "DELETE FROM space_quotas WHERE space_guid = ?",
                [sp.guid.as_str()],
            )?;
            tx.execute(
                "INSERT INTO space_quotas (space_guid, max_apps, max_instances, max_routes) VALUES (?, ?, ?, ?)",
                params![
                    sp.guid.as_str(),
                    apps.unwrap_or(q0.apps),
                    instances.unwrap_or(q0.instances),
                    routes.unwrap_or(q0.routes)
                ],
            )?;
            Ok((space_quota_in(tx, l, &sp)?, false))
        })
    }

    /// Every space's quota and use, by org and space.
    pub fn space_quotas(&self) -> Result<Vec<SpaceQuota>, StateError> {
        let spaces = self.spaces(None)?;
        spaces
            .iter()
            .map(|sp| space_quota_in(&self.db, self.limits, sp))
            .collect()
    }
}
