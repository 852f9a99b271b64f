//! The platform API's endpoints (`/v1/...` with a user's token), written once: control's router
//! parses a request into an [`Endpoint`] and authorizes that; the client's paths
//! ([`crate::paths`]) are tested to be what [`Endpoint::path`] spells. The cell API, the join,
//! and Cloud Foundry's `/networking` APIs have their own routers.

use crate::path_segment as seg;

/// One endpoint of the platform API, with the names its path carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/whoami`.
    WhoAmI,
    /// `GET /v1/apps`.
    ListApps,
    /// `POST /v1/apps`.
    CreateApp,
    /// `GET /v1/apps/APP`.
    GetApp(String),
    /// `DELETE /v1/apps/APP`.
    DeleteApp(String),
    /// `PUT /v1/apps/APP/settings`.
    UpdateAppSettings(String),
    /// `POST /v1/apps/APP/instances`.
    PlaceInstance(String),
    /// `GET /v1/instances`.
    ListInstances,
    /// `DELETE /v1/instances/GUID`.
    RemoveInstance(String),
    /// `GET /v1/routes`.
    ListRoutes,
    /// `POST /v1/routes`.
    MapRoute,
    /// `POST /v1/routes/delete`.
    UnmapRoute,
    /// `GET /v1/domains`.
    ListDomains,
    /// `POST /v1/domains`.
    CreateDomain,
    /// `GET /v1/tokens`.
    ListTokens,
    /// `POST /v1/tokens`.
    CreateToken,
    /// `DELETE /v1/tokens/USER`.
    RevokeTokens(String),
    /// `GET /v1/join-tokens`.
    ListJoinTokens,
    /// `POST /v1/join-tokens`.
    CreateJoinToken,
    /// `DELETE /v1/join-tokens/ID`.
    RevokeJoinToken(String),
    /// `GET /v1/cells`.
    ListCells,
    /// `POST /v1/cells`.
    RegisterCell,
    /// `DELETE /v1/cells/NAME`.
    RemoveCell(String),
    /// `GET /v1/leases`.
    ListLeases,
    /// `GET /v1/flows[?from=APP&to=APP&verdict=V&since_ms=MS&after=SEQ&limit=N]`.
    ListFlows,
    /// `GET /v1/orgs`.
    ListOrgs,
    /// `POST /v1/orgs`.
    CreateOrg,
    /// `GET /v1/spaces`.
    ListSpaces,
    /// `POST /v1/spaces`.
    CreateSpace,
    /// `GET /v1/space-quotas`.
    ListSpaceQuotas,
    /// `PUT /v1/space-quotas`.
    SetSpaceQuota,
    /// `GET /v1/security_groups`.
    ListSecurityGroups,
    /// `POST /v1/security_groups`.
    CreateSecurityGroup,
    /// `GET /v1/security_groups/NAME`.
    GetSecurityGroup(String),
    /// `PUT /v1/security_groups/NAME`.
    UpdateSecurityGroup(String),
    /// `DELETE /v1/security_groups/NAME`.
    DeleteSecurityGroup(String),
    /// `POST /v1/security_groups/NAME/bindings`.
    BindSecurityGroup(String),
    /// `POST /v1/security_groups/NAME/bindings/delete`.
    UnbindSecurityGroup(String),
}

impl Endpoint {
    /// The endpoint `METHOD /seg/seg/...` names (segments already percent-decoded), if any.
    pub fn parse(method: &str, segs: &[&str]) -> Option<Self> {
        use Endpoint::*;
        let s = |x: &str| x.to_string();
        Some(match (method, segs) {
            ("GET", ["v1", "whoami"]) => WhoAmI,
            ("GET", ["v1", "apps"]) => ListApps,
            ("POST", ["v1", "apps"]) => CreateApp,
            ("GET", ["v1", "apps", a]) => GetApp(s(a)),
            ("DELETE", ["v1", "apps", a]) => DeleteApp(s(a)),
            ("PUT", ["v1", "apps", a, "settings"]) => UpdateAppSettings(s(a)),
            ("POST", ["v1", "apps", a, "instances"]) => PlaceInstance(s(a)),
            ("GET", ["v1", "instances"]) => ListInstances,
            ("DELETE", ["v1", "instances", g]) => RemoveInstance(s(g)),
            ("GET", ["v1", "routes"]) => ListRoutes,
            ("POST", ["v1", "routes"]) => MapRoute,
            ("POST", ["v1", "routes", "delete"]) => UnmapRoute,
            ("GET", ["v1", "domains"]) => ListDomains,
            ("POST", ["v1", "domains"]) => CreateDomain,
            ("GET", ["v1", "tokens"]) => ListTokens,
            ("POST", ["v1", "tokens"]) => CreateToken,
            ("DELETE", ["v1", "tokens", u]) => RevokeTokens(s(u)),
            ("GET", ["v1", "join-tokens"]) => ListJoinTokens,
            ("POST", ["v1", "join-tokens"]) => CreateJoinToken,
            ("DELETE", ["v1", "join-tokens", i]) => RevokeJoinToken(s(i)),
            ("GET", ["v1", "cells"]) => ListCells,
            ("POST", ["v1", "cells"]) => RegisterCell,
            ("DELETE", ["v1", "cells", n]) => RemoveCell(s(n)),
            ("GET", ["v1", "leases"]) => ListLeases,
            ("GET", ["v1", "flows"]) => ListFlows,
            ("GET", ["v1", "orgs"]) => ListOrgs,
            ("POST", ["v1", "orgs"]) => CreateOrg,
            ("GET", ["v1", "spaces"]) => ListSpaces,
            ("POST", ["v1", "spaces"]) => CreateSpace,
            ("GET", ["v1", "space-quotas"]) => ListSpaceQuotas,
            ("PUT", ["v1", "space-quotas"]) => SetSpaceQuota,
            ("GET", ["v1", "security_groups"]) => ListSecurityGroups,
            ("POST", ["v1", "security_groups"]) => CreateSecurityGroup,
            ("GET", ["v1", "security_groups", n]) => GetSecurityGroup(s(n)),
            ("PUT", ["v1", "security_groups", n]) => UpdateSecurityGroup(s(n)),
            ("DELETE", ["v1", "security_groups", n]) => DeleteSecurityGroup(s(n)),
            ("POST", ["v1", "security_groups", n, "bindings"]) => BindSecurityGroup(s(n)),
            ("POST", ["v1", "security_groups", n, "bindings", "delete"]) => {
                UnbindSecurityGroup(s(n))
            }
            _ => return None,
        })
    }

    /// Its HTTP method.
    pub fn method(&self) -> &'static str {
        use Endpoint::*;
        match self {
            WhoAmI | ListApps | GetApp(_) | ListInstances | ListRoutes | ListDomains
            | ListTokens | ListJoinTokens | ListCells | ListLeases | ListFlows | ListOrgs
            | ListSpaces | ListSpaceQuotas | ListSecurityGroups | GetSecurityGroup(_) => "GET",
            CreateApp
            | PlaceInstance(_)
            | MapRoute
            | UnmapRoute
            | CreateDomain
            | CreateToken
            | CreateJoinToken
            | RegisterCell
            | CreateOrg
            | CreateSpace
            | CreateSecurityGroup
            | BindSecurityGroup(_)
            | UnbindSecurityGroup(_) => "POST",
            UpdateAppSettings(_) | SetSpaceQuota | UpdateSecurityGroup(_) => "PUT",
            DeleteApp(_)
            | RemoveInstance(_)
            | RevokeTokens(_)
            | RevokeJoinToken(_)
            | RemoveCell(_)
            | DeleteSecurityGroup(_) => "DELETE",
        }
    }

    /// Its path, every name percent-encoded as one segment.
    pub fn path(&self) -> String {
        use Endpoint::*;
        match self {
            WhoAmI => "/v1/whoami".into(),
            ListApps | CreateApp => "/v1/apps".into(),
            GetApp(a) | DeleteApp(a) => format!("/v1/apps/{}", seg(a)),
            UpdateAppSettings(a) => format!("/v1/apps/{}/settings", seg(a)),
            PlaceInstance(a) => format!("/v1/apps/{}/instances", seg(a)),
            ListInstances => "/v1/instances".into(),
            RemoveInstance(g) => format!("/v1/instances/{}", seg(g)),
            ListRoutes | MapRoute => "/v1/routes".into(),
            UnmapRoute => "/v1/routes/delete".into(),
            ListDomains | CreateDomain => "/v1/domains".into(),
            ListTokens | CreateToken => "/v1/tokens".into(),
            RevokeTokens(u) => format!("/v1/tokens/{}", seg(u)),
            ListJoinTokens | CreateJoinToken => "/v1/join-tokens".into(),
            RevokeJoinToken(i) => format!("/v1/join-tokens/{}", seg(i)),
            ListCells | RegisterCell => "/v1/cells".into(),
            RemoveCell(n) => format!("/v1/cells/{}", seg(n)),
            ListLeases => "/v1/leases".into(),
            ListFlows => "/v1/flows".into(),
            ListOrgs | CreateOrg => "/v1/orgs".into(),
            ListSpaces | CreateSpace => "/v1/spaces".into(),
            ListSpaceQuotas | SetSpaceQuota => "/v1/space-quotas".into(),
            ListSecurityGroups | CreateSecurityGroup => "/v1/security_groups".into(),
            GetSecurityGroup(n) | UpdateSecurityGroup(n) | DeleteSecurityGroup(n) => {
                format!("/v1/security_groups/{}", seg(n))
            }
            BindSecurityGroup(n) => format!("/v1/security_groups/{}/bindings", seg(n)),
            UnbindSecurityGroup(n) => format!("/v1/security_groups/{}/bindings/delete", seg(n)),
        }
    }

    /// One of each endpoint (names filled in with `x`): for tests that must cover them all.
    pub fn every() -> Vec<Endpoint> {
        use Endpoint::*;
        let x = || "x".to_string();
        vec![
            WhoAmI,
            ListApps,
            CreateApp,
            GetApp(x()),
            DeleteApp(x()),
            UpdateAppSettings(x()),
            PlaceInstance(x()),
            ListInstances,
            RemoveInstance(x()),
            ListRoutes,
            MapRoute,
            UnmapRoute,
            ListDomains,
            CreateDomain,
            ListTokens,
            CreateToken,
            RevokeTokens(x()),
            ListJoinTokens,
            CreateJoinToken,
            RevokeJoinToken(x()),
            ListCells,
            RegisterCell,
            RemoveCell(x()),
            ListLeases,
            ListFlows,
            ListOrgs,
            CreateOrg,
            ListSpaces,
            CreateSpace,
            ListSpaceQuotas,
            SetSpaceQuota,
            ListSecurityGroups,
            CreateSecurityGroup,
            GetSecurityGroup(x()),
            UpdateSecurityGroup(x()),
            DeleteSecurityGroup(x()),
            BindSecurityGroup(x()),
            UnbindSecurityGroup(x()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').skip(1).map(crate::decode_segment).collect()
    }

    #[test]
    fn every_endpoint_parses_back_from_its_path() {
        let every = Endpoint::every();
        for ep in &every {
            let path = ep.path();
            let segs = segments(&path);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            assert_eq!(
                Endpoint::parse(ep.method(), &segs).as_ref(),
                Some(ep),
                "{path}"
            );
        }
        // Names with a slash, a space or a percent stay one segment.
        let odd = Endpoint::GetApp("a/b c%".into());
        let segs = segments(&odd.path());
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        assert_eq!(Endpoint::parse("GET", &segs), Some(odd));
        // Nothing else parses: another method, a trailing segment.
        assert_eq!(Endpoint::parse("PATCH", &["v1", "apps"]), None);
        assert_eq!(Endpoint::parse("GET", &["v1", "apps", "a", "b"]), None);
    }

    #[test]
    fn the_clients_paths_are_the_endpoints() {
        use Endpoint::*;
        let pairs: Vec<(String, Endpoint)> = vec![
            (paths::APPS.into(), ListApps),
            (paths::app("a b"), GetApp("a b".into())),
            (paths::app_settings("a"), UpdateAppSettings("a".into())),
            (paths::app_instances("a"), PlaceInstance("a".into())),
            (paths::INSTANCES.into(), ListInstances),
            (paths::instance("g"), RemoveInstance("g".into())),
            (paths::ROUTES.into(), ListRoutes),
            (paths::ROUTES_DELETE.into(), UnmapRoute),
            (paths::DOMAINS.into(), ListDomains),
            (paths::TOKENS.into(), ListTokens),
            (paths::user_tokens("u"), RevokeTokens("u".into())),
            (paths::JOIN_TOKENS.into(), ListJoinTokens),
            (paths::join_token("i"), RevokeJoinToken("i".into())),
            (paths::CELLS.into(), ListCells),
            (paths::cell("c"), RemoveCell("c".into())),
            (paths::ORGS.into(), ListOrgs),
            (paths::SPACES.into(), ListSpaces),
            (paths::SPACE_QUOTAS.into(), ListSpaceQuotas),
            (paths::SECURITY_GROUPS.into(), ListSecurityGroups),
            (paths::security_group("g"), GetSecurityGroup("g".into())),
            (
                paths::security_group_bindings("g"),
                BindSecurityGroup("g".into()),
            ),
            (paths::WHOAMI.into(), WhoAmI),
            (paths::FLOWS.into(), ListFlows),
        ];
        for (path, ep) in pairs {
            assert_eq!(path, ep.path());
        }
    }
}
