//! Who may call which platform endpoint: one pure decision, made before any handler runs.
//!
//! The admin (`network.admin`) calls every endpoint on everything. A `network.write` user calls
//! only the endpoints a space developer needs to push and delete apps and to name them in
//! policies (look up, create and delete apps, change their settings, place and remove their
//! instances, map and unmap their routes); the handler then narrows each call to the apps and
//! spaces granted to the token (a list shows only those, an app outside them is not found, a
//! create outside them is refused). Every other endpoint answers that user 403. CF's
//! `/networking` APIs authorize in their own module, as CF's policy server does.

use c2c_api::endpoints::Endpoint;

use crate::tokens::Caller;

/// What a caller may do at an endpoint it is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything the endpoint does (the admin).
    All,
    /// Only what the token's grants reach: the handler narrows the call.
    Granted,
}

/// The caller may not call the endpoint at all (it needs `network.admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdminOnly;

/// Whether `caller` may call `ep`, and how far.
pub(crate) fn authorize(caller: &Caller, ep: &Endpoint) -> Result<Access, AdminOnly> {
    use Endpoint::*;
    if caller.is_admin() {
        return Ok(Access::All);
    }
    match ep {
        WhoAmI | ListApps | GetApp(_) | CreateApp | DeleteApp(_) | UpdateAppSettings(_)
        | PlaceInstance(_) | ListInstances | RemoveInstance(_) | MapRoute | UnmapRoute
        | ListFlows => Ok(Access::Granted),
        ListRoutes
        | ListDomains
        | CreateDomain
        | ListTokens
        | CreateToken
        | RevokeTokens(_)
        | ListJoinTokens
        | CreateJoinToken
        | RevokeJoinToken(_)
        | ListCells
        | RegisterCell
        | RemoveCell(_)
        | ListLeases
        | ListOrgs
        | CreateOrg
        | ListSpaces
        | CreateSpace
        | ListSpaceQuotas
        | SetSpaceQuota
        | ListSecurityGroups
        | CreateSecurityGroup
        | GetSecurityGroup(_)
        | UpdateSecurityGroup(_)
        | DeleteSecurityGroup(_)
        | BindSecurityGroup(_)
        | UnbindSecurityGroup(_) => Err(AdminOnly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::types::Scope;

    fn writer(apps: &[&str], spaces: &[&str]) -> Caller {
        Caller {
            user: "alice".into(),
            scope: Scope::Write,
            apps: apps.iter().map(|s| s.to_string()).collect(),
            spaces: spaces.iter().map(|s| s.to_string()).collect(),
            cells: Default::default(),
        }
    }

    /// Every caller kind against every endpoint, written out: a new endpoint fails this test
    /// until someone decides who may call it.
    #[test]
    fn every_caller_kind_against_every_endpoint() {
        // (method path, a writer may call it)
        let table: &[(&str, bool)] = &[
            ("GET /v1/whoami", true),
            ("GET /v1/apps", true),
            ("POST /v1/apps", true),
            ("GET /v1/apps/x", true),
            ("DELETE /v1/apps/x", true),
            ("PUT /v1/apps/x/settings", true),
            ("POST /v1/apps/x/instances", true),
            ("GET /v1/instances", true),
            ("DELETE /v1/instances/x", true),
            ("GET /v1/routes", false),
            ("POST /v1/routes", true),
            ("POST /v1/routes/delete", true),
            ("GET /v1/domains", false),
            ("POST /v1/domains", false),
            ("GET /v1/tokens", false),
            ("POST /v1/tokens", false),
            ("DELETE /v1/tokens/x", false),
            ("GET /v1/join-tokens", false),
            ("POST /v1/join-tokens", false),
            ("DELETE /v1/join-tokens/x", false),
            ("GET /v1/cells", false),
            ("POST /v1/cells", false),
            ("DELETE /v1/cells/x", false),
            ("GET /v1/leases", false),
            ("GET /v1/flows", true),
            ("GET /v1/orgs", false),
            ("POST /v1/orgs", false),
            ("GET /v1/spaces", false),
            ("POST /v1/spaces", false),
            ("GET /v1/space-quotas", false),
            ("PUT /v1/space-quotas", false),
            ("GET /v1/security_groups", false),
            ("POST /v1/security_groups", false),
            ("GET /v1/security_groups/x", false),
            ("PUT /v1/security_groups/x", false),
            ("DELETE /v1/security_groups/x", false),
            ("POST /v1/security_groups/x/bindings", false),
            ("POST /v1/security_groups/x/bindings/delete", false),
        ];
        let every = Endpoint::every();
        assert_eq!(
            table.len(),
            every.len(),
            "an endpoint is missing from the table"
        );
        let admin = Caller::admin();
        let kinds = [
            ("a writer with apps and spaces", writer(&["g1"], &["s1"])),
            ("a writer granted nothing", writer(&[], &[])),
        ];
        for ep in every {
            let key = format!("{} {}", ep.method(), ep.path());
            let writer_may = table
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{key} is not in the table"))
                .1;
            assert_eq!(authorize(&admin, &ep), Ok(Access::All), "admin: {key}");
            for (kind, caller) in &kinds {
                let want = if writer_may {
                    Ok(Access::Granted)
                } else {
                    Err(AdminOnly)
                };
                assert_eq!(authorize(caller, &ep), want, "{kind}: {key}");
            }
        }
    }
}
