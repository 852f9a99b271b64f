//! The control API's paths: spelled here only, with every name percent-encoded as one segment.

use crate::path_segment as seg;

/// CF's external policies (`GET` list, `POST` add).
pub const POLICIES: &str = "/networking/v1/external/policies";
/// CF's policy delete.
pub const POLICIES_DELETE: &str = "/networking/v1/external/policies/delete";
/// Apps (`GET` list, `POST` create).
pub const APPS: &str = "/v1/apps";
/// Routes (`GET` list, `POST` map).
pub const ROUTES: &str = "/v1/routes";
/// Route unmap.
pub const ROUTES_DELETE: &str = "/v1/routes/delete";
/// Internal domains.
pub const DOMAINS: &str = "/v1/domains";
/// Placed instances (`GET`).
pub const INSTANCES: &str = "/v1/instances";
/// Registered cells (`GET` list, `POST` register).
pub const CELLS: &str = "/v1/cells";
/// Users' tokens (`GET` list, `POST` create).
pub const TOKENS: &str = "/v1/tokens";
/// One-time join tokens for new cells (`POST`, admin).
pub const JOIN_TOKENS: &str = "/v1/join-tokens";
/// A new cell joins with a join token (`POST`, no other credential).
pub const JOIN: &str = "/v1/join";
/// Orgs (`GET` list, `POST` create).
pub const ORGS: &str = "/v1/orgs";
/// Spaces (`GET` list `[?org=ORG]`, `POST` create).
pub const SPACES: &str = "/v1/spaces";
/// Space quotas (`GET` every space's quota and use, `PUT` one space's, admin).
pub const SPACE_QUOTAS: &str = "/v1/space-quotas";
/// Security groups (`GET` list, `POST` create).
pub const SECURITY_GROUPS: &str = "/v1/security_groups";

/// One security group (`GET`, `PUT` its rules, `DELETE`).
pub fn security_group(name: &str) -> String {
    format!("{SECURITY_GROUPS}/{}", seg(name))
}

/// A security group's bindings (`POST` bind; `.../delete` unbind).
pub fn security_group_bindings(name: &str) -> String {
    format!("{}/bindings", security_group(name))
}

/// Flows the cells' traffic logs recorded (`GET`, with a query).
pub const FLOWS: &str = "/v1/flows";

/// `POST`: a cell's flows since its last report.
pub fn cell_flows(cell: &str) -> String {
    format!("{CELLS}/{}/flows", seg(cell))
}

/// Who the caller's token speaks for, with its scope (any token).
pub const WHOAMI: &str = "/v1/whoami";

/// `DELETE`: revoke every token of a user.
pub fn user_tokens(user: &str) -> String {
    format!("{TOKENS}/{}", seg(user))
}

/// `DELETE`: revoke an unused join token by its id.
pub fn join_token(id: &str) -> String {
    format!("{JOIN_TOKENS}/{}", seg(id))
}

/// `GET`/`DELETE` one app, by name or GUID.
pub fn app(name: &str) -> String {
    format!("{APPS}/{}", seg(name))
}

/// `PUT`: what the app's sidecar does ([`crate::types::AppSettings`]).
pub fn app_settings(name: &str) -> String {
    format!("{}/settings", app(name))
}

/// `POST`: place an instance of the app.
pub fn app_instances(app: &str) -> String {
    format!("{APPS}/{}/instances", seg(app))
}

/// `DELETE`: remove a placed instance.
pub fn instance(guid: &str) -> String {
    format!("{INSTANCES}/{}", seg(guid))
}

/// `DELETE`: revoke a cell.
pub fn cell(name: &str) -> String {
    format!("{CELLS}/{}", seg(name))
}

/// Policies whose source or destination is one of `ids`.
pub fn policies_of(ids: &[crate::AppGuid]) -> String {
    let ids: Vec<String> = ids.iter().map(|i| seg(i)).collect();
    format!("{POLICIES}?id={}", ids.join(","))
}

/// The cell API: a cell's lease (`POST` acquire, `PUT` renew, `DELETE` release).
pub fn lease(cell: &str) -> String {
    format!("{CELLS}/{}/lease", seg(cell))
}

/// The cell API: confirm (`PUT`) or withdraw (`DELETE`) an instance.
pub fn cell_instance(cell: &str, guid: &str) -> String {
    format!("{CELLS}/{}/instances/{}", seg(cell), seg(guid))
}

/// The cell API: sign an instance's CSR.
pub fn cell_certificate(cell: &str, guid: &str) -> String {
    format!("{}/certificate", cell_instance(cell, guid))
}

/// `POST` (cell): have control sign an instance's identity (CF_INSTANCE_CERT).
pub fn cell_identity(cell: &str, guid: &str) -> String {
    format!("{}/identity", cell_instance(cell, guid))
}

/// The protocol a streamed watch upgrades to: after the 101, control writes one line per
/// change, each a view as JSON (changes only since the previous line), and an empty line as a
/// heartbeat when nothing changed for a while.
pub const WATCH_PROTOCOL: &str = "c2c-watch";

/// How often control writes an empty line on a watch stream that has nothing to say, so a cell
/// can tell a quiet replica from a silent one (a powered-off host, a partition) within a few
/// seconds and move to the next (issue #30: the goal is a cell on another replica within 10 s).
pub const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// The cell API: a streamed watch from revision `after` (0: from nothing).
pub fn watch_stream(cell: &str, after: crate::Revision) -> String {
    format!("{CELLS}/{}/watch?after={after}&delta=1", seg(cell))
}

/// The cell API: the long-poll watch.
pub fn watch(cell: &str, after: crate::Revision, timeout_secs: u64) -> String {
    format!(
        "{CELLS}/{}/watch?after={after}&timeout={timeout_secs}",
        seg(cell)
    )
}

/// The cell API: the long-poll watch, answering only what changed since `after` (the parts as
/// they were at `after` are named in `unchanged`).
pub fn watch_delta(cell: &str, after: crate::Revision, timeout_secs: u64) -> String {
    format!("{}&delta=1", watch(cell, after, timeout_secs))
}
