//! Tenancy through control's API: spaces as the tenancy of `network.write` tokens (CF's
//! SpaceDeveloper), what a space's token may push and place, and the budgets a tenant meets
//! (space quotas, a runtime's token bound to its cells); and Cloud Controller's apps named by
//! GUID in an admin's policies, as CF's policy server takes them. Each attack beside the
//! legitimate path.

mod support;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use support::Api;

/// A control with org `o` and its spaces `dev` and `prod`.
fn org_with_dev_and_prod() -> Api {
    let api = Api::new();
    api.admin(Method::POST, "/v1/orgs", Some(json!({"name": "o"})));
    for s in ["dev", "prod"] {
        api.admin(
            Method::POST,
            "/v1/spaces",
            Some(json!({"org": "o", "name": s})),
        );
    }
    api
}

/// Spaces as the tenancy of `network.write` (CF: the user's spaces as SpaceDeveloper): a user
/// granted o/dev adds policies between dev's apps, one pushed after the token too, and gets
/// CF's 403 for an app of another space.
#[test]
fn a_space_grant_covers_the_spaces_apps_and_no_other() {
    let api = org_with_dev_and_prod();
    let app_in = |name: &str, space: &str| {
        let (code, v) = api.admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": name, "org": "o", "space": space})),
        );
        assert_eq!(code, StatusCode::CREATED, "{v}");
        v["guid"].as_str().unwrap().to_string()
    };
    let a = app_in("a", "dev");
    let (code, t) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "dev1", "scope": "network.write", "spaces": ["o/dev"]})),
    );
    assert_eq!(code, StatusCode::CREATED, "{t}");
    assert_eq!(t["spaces"], json!(["o/dev"]));
    let token = format!("Bearer {}", t["token"].as_str().unwrap());
    let b = app_in("b", "dev");
    let p = app_in("p", "prod");
    let add = |src: &str, dst: &str| {
        api.call(
            Method::POST,
            "/networking/v1/external/policies",
            Some(&token),
            None,
            Some(json!({"policies": [{"source": {"id": src}, "destination": {"id": dst, "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]})),
        )
    };
    assert_eq!(
        add(&a, &b).0,
        StatusCode::OK,
        "an app pushed after the token is covered"
    );
    let (code, v) = add(&a, &p);
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        v["error"],
        "one or more applications cannot be found or accessed"
    );
    let (code, v) = api.call(Method::GET, "/v1/apps", Some(&token), None, None);
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // An unknown space grants nothing and makes no token.
    let (code, _) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "dev2", "scope": "network.write", "spaces": ["o/nope"]})),
    );
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, users) = api.admin(Method::GET, "/v1/tokens", None);
    assert!(!users.to_string().contains("dev2"), "{users}");
}

/// What pushing takes, within a space grant (CF's SpaceDeveloper; what a runtime's `c2c-hook`
/// does with its token): create apps in the granted spaces, place and remove their instances,
/// map their routes. The attacks beside it: an app in another space or the default one, another
/// space's app placed, listed, removed, or its route taken over.
#[test]
fn a_space_developer_pushes_into_its_spaces_only() {
    let api = org_with_dev_and_prod();
    let (_, p) = api.admin(
        Method::POST,
        "/v1/apps",
        Some(json!({"name": "p", "org": "o", "space": "prod"})),
    );
    let p_guid = p["guid"].as_str().unwrap().to_string();
    api.admin(
        Method::POST,
        "/v1/routes",
        Some(json!({"app": "p", "domain": "apps.internal", "hostname": "p"})),
    );
    let (_, placed_p) = api.admin(
        Method::POST,
        "/v1/apps/p/instances",
        Some(json!({"cell": "cell1"})),
    );
    let p_instance = placed_p["guid"].as_str().unwrap().to_string();
    let (_, t) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "runtime1", "scope": "network.write", "spaces": ["o/dev"]})),
    );
    let token = format!("Bearer {}", t["token"].as_str().unwrap());
    let call =
        |m: Method, path: &str, body: Option<Value>| api.call(m, path, Some(&token), None, body);

    // Positive: an app in its space, its instance, its route, its instance removed.
    let (code, v) = call(
        Method::POST,
        "/v1/apps",
        Some(json!({"name": "n", "org": "o", "space": "dev"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (code, placed) = call(
        Method::POST,
        "/v1/apps/n/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{placed}");
    let n_instance = placed["guid"].as_str().unwrap().to_string();
    let (code, v) = call(
        Method::POST,
        "/v1/routes",
        Some(json!({"app": "n", "domain": "apps.internal", "hostname": "n"})),
    );
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, v) = call(Method::GET, "/v1/instances", None);
    assert_eq!(code, StatusCode::OK);
    let listed: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["guid"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [n_instance.as_str()],
        "another space's instances are not listed"
    );

    // Attacks.
    for (space, why) in [
        (
            json!({"name": "x", "org": "o", "space": "prod"}),
            "another space",
        ),
        (json!({"name": "y"}), "the default space"),
    ] {
        let (code, v) = call(Method::POST, "/v1/apps", Some(space));
        assert_eq!(code, StatusCode::FORBIDDEN, "{why}: {v}");
    }
    let (code, v) = call(
        Method::POST,
        "/v1/apps/p/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not manage app p"),
        "{v}"
    );
    let (code, v) = call(Method::DELETE, &format!("/v1/instances/{p_instance}"), None);
    assert_eq!(
        (code, v["removed"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    for (body, why) in [
        (
            json!({"app": "n", "domain": "apps.internal", "hostname": "p"}),
            "another space's route",
        ),
        (
            json!({"app": "p", "domain": "apps.internal", "hostname": "p2"}),
            "another space's app",
        ),
    ] {
        let (code, v) = call(Method::POST, "/v1/routes", Some(body));
        assert_eq!(code, StatusCode::FORBIDDEN, "{why}: {v}");
    }
    // Issue #23: another app's instance name (`0.p` is p/0's) taken as a route on its own app,
    // which would put `0.p.apps.internal` in its certificate and its DNS answers. A route's
    // host is one label, never digits alone.
    for host in ["0.p", "0", "0.P"] {
        let (code, v) = call(
            Method::POST,
            "/v1/routes",
            Some(json!({"app": "n", "domain": "apps.internal", "hostname": host})),
        );
        assert_eq!(code, StatusCode::BAD_REQUEST, "{host}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("Host "), "{v}");
    }
    // A space named with '/' (its ORG/SPACE would be ambiguous).
    let (code, v) = api.admin(
        Method::POST,
        "/v1/spaces",
        Some(json!({"name": "o/dev", "org": "o"})),
    );
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    // The legitimate route is still another space's.
    let (code, v) = call(
        Method::POST,
        "/v1/routes",
        Some(json!({"app": "n", "domain": "apps.internal", "hostname": "p"})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    let (code, _) = call(
        Method::POST,
        "/v1/routes/delete",
        Some(json!({"app": "p", "domain": "apps.internal", "hostname": "p"})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN);
    // Nothing of prod's changed.
    let (_, all) = api.admin(Method::GET, "/v1/instances", None);
    assert!(all.to_string().contains(&p_instance));
    let (_, routes) = api.admin(Method::GET, "/v1/routes", None);
    let p_hosts: Vec<&str> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["app_guid"] == p_guid.as_str())
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(p_hosts, ["p"]);
    let (code, v) = call(Method::DELETE, &format!("/v1/instances/{n_instance}"), None);
    assert_eq!((code, v["removed"].as_bool()), (StatusCode::OK, Some(true)));
    // Deleting: its own app, not another space's.
    let (code, _) = call(Method::DELETE, "/v1/apps/p", None);
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(api.admin(Method::GET, "/v1/apps/p", None).0, StatusCode::OK);
    let (code, v) = call(Method::DELETE, "/v1/apps/n", None);
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        api.admin(Method::GET, "/v1/apps/n", None).0,
        StatusCode::NOT_FOUND
    );

    // Issue #23: a space user made 200 apps and 1,000 placements in seconds. The space's quota
    // (the admin's to set; a user's token may not) stops it; the admin is not bound by it.
    let set = json!({"org": "o", "space": "dev", "max_apps": 2, "max_instances": 2});
    assert_eq!(
        call(Method::PUT, "/v1/space-quotas", Some(set.clone())).0,
        StatusCode::FORBIDDEN
    );
    let (code, q) = api.admin(Method::PUT, "/v1/space-quotas", Some(set));
    assert_eq!(code, StatusCode::OK, "{q}");
    let app = |name: &str| {
        call(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": name, "org": "o", "space": "dev"})),
        )
    };
    assert_eq!(app("q1").0, StatusCode::CREATED);
    assert_eq!(app("q2").0, StatusCode::CREATED);
    let (code, v) = app("q3");
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("app limit"), "{v}");
    for _ in 0..2 {
        let (code, v) = call(
            Method::POST,
            "/v1/apps/q1/instances",
            Some(json!({"cell": "cell1"})),
        );
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    let (code, v) = call(
        Method::POST,
        "/v1/apps/q2/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("instance limit"),
        "{v}"
    );
    let (code, _) = api.admin(
        Method::POST,
        "/v1/apps/q2/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(
        code,
        StatusCode::CREATED,
        "the admin is not bound by a space's quota"
    );
    let (_, all) = api.admin(Method::GET, "/v1/space-quotas", None);
    let dev = all["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["space"] == "dev")
        .unwrap()
        .clone();
    assert_eq!(
        dev,
        json!({"org": "o", "space": "dev", "max_apps": 2, "max_instances": 2,
               "max_routes": 1000, "apps": 2, "instances": 3, "routes": 0, "default": false})
    );

    // A runtime's credential bound to its cell: it places on cell7 only (a leaked one places
    // nothing on other hosts).
    api.admin(
        Method::PUT,
        "/v1/space-quotas",
        Some(json!({"org": "o", "space": "dev", "max_instances": 100})),
    );
    let (_, t) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "podman-cell7", "scope": "network.write", "spaces": [{"org": "o", "space": "dev"}], "cells": ["cell7"]})),
    );
    let bound = format!("Bearer {}", t["token"].as_str().unwrap());
    let (_, users) = api.admin(Method::GET, "/v1/tokens", None);
    let rec = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "podman-cell7")
        .unwrap()
        .clone();
    assert_eq!(rec["cells"], json!(["cell7"]), "{rec}");
    let place = |cell: &str| {
        api.call(
            Method::POST,
            "/v1/apps/q1/instances",
            Some(&bound),
            None,
            Some(json!({ "cell": cell })),
        )
    };
    assert_eq!(place("cell7").0, StatusCode::CREATED);
    let (code, v) = place("cell1");
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not place instances on cell cell1"),
        "{v}"
    );
    // The unbound space token still places anywhere.
    assert_eq!(
        call(
            Method::POST,
            "/v1/apps/q1/instances",
            Some(json!({"cell": "cell1"}))
        )
        .0,
        StatusCode::CREATED
    );
}

/// Issue #23: a control serving as the policy server of a real Cloud Foundry, whose Cloud
/// Controller owns the apps: an admin's policy naming GUIDs control has not seen is CF's 200,
/// each GUID gets a tag (listed as CF lists them, and handed to enforcers on the internal API),
/// freed with its last policy. An unknown id that is no GUID is still CF's 403, and a user's
/// token cannot make apps this way.
#[test]
fn an_admin_names_cloud_controllers_apps_by_guid_as_in_cf() {
    let api = Api::new();
    let a = api.app("local");
    let (src, dst) = (
        "2ffe4b0f-b03c-48bb-a4fa-bf22657d34a2",
        "7c1d2f6e-1111-4222-8333-944455556666",
    );
    let body = |s: &str, d: &str| json!({"policies": [{"source": {"id": s}, "destination": {"id": d, "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]});
    let path = "/networking/v1/external/policies";
    let (code, v) = api.admin(Method::POST, path, Some(body(src, dst)));
    assert_eq!((code, v), (StatusCode::OK, json!({})));
    let (_, tags) = api.admin(Method::GET, "/networking/v1/external/tags", None);
    let ids: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&src) && ids.contains(&dst), "{tags}");
    // The internal API hands the policy with both tags to an enforcer (CF's vxlan-policy-agent).
    let cell = api.cell("cell1");
    let (code, _, raw) = api.raw(
        Method::GET,
        "/networking/v1/internal/policies",
        &[],
        Some(&cell),
        b"",
    );
    assert_eq!(code, StatusCode::OK);
    let internal: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(internal["policies"][0]["source"]["id"], src, "{internal}");
    assert!(internal["policies"][0]["destination"]["tag"].is_string());
    // Not a GUID: CF's 403, nothing made. A user's token makes nothing either.
    let (code, _) = api.admin(Method::POST, path, Some(body(a.as_str(), "no-such-app")));
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (_, t) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "dev", "scope": "network.write", "apps": ["local"]})),
    );
    let token = format!("Bearer {}", t["token"].as_str().unwrap());
    let other = "7c1d2f6e-1111-4222-8333-000000000000";
    let (code, _) = api.call(
        Method::POST,
        path,
        Some(&token),
        None,
        Some(body(a.as_str(), other)),
    );
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        api.admin(Method::GET, &format!("/v1/apps/{other}"), None).0,
        StatusCode::NOT_FOUND
    );
    // The policy deleted, its apps' tags are free again.
    let (code, _) = api.admin(
        Method::POST,
        &format!("{path}/delete"),
        Some(body(src, dst)),
    );
    assert_eq!(code, StatusCode::OK);
    let (_, tags) = api.admin(Method::GET, "/networking/v1/external/tags", None);
    assert_eq!(tags["tags"].as_array().unwrap().len(), 1, "{tags}");
}

/// What an app's sidecar does (`PUT /v1/apps/APP/settings`) is its space developer's to set, as
/// pushing it is: not another space's, and not with values the sidecar does not know.
#[test]
fn only_an_apps_space_developer_changes_its_sidecar_settings() {
    let api = org_with_dev_and_prod();
    for (name, space) in [("d", "dev"), ("p", "prod")] {
        api.admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": name, "org": "o", "space": space})),
        );
    }
    let (_, t) = api.admin(
        Method::POST,
        "/v1/tokens",
        Some(json!({"user": "dev1", "scope": "network.write", "spaces": ["o/dev"]})),
    );
    let token = format!("Bearer {}", t["token"].as_str().unwrap());
    let put = |app: &str, body: Value| {
        api.call(
            Method::PUT,
            &format!("/v1/apps/{app}/settings"),
            Some(&token),
            None,
            Some(body),
        )
    };
    let (code, v) = put("d", json!({"client_identity": "required"}));
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["client_identity"], "required");
    let (code, v) = put("d", json!({"proxy_protocol": "v2"}));
    assert_eq!(
        (code, &v["client_identity"]),
        (StatusCode::OK, &json!("required")),
        "{v}"
    );
    assert_eq!(v["proxy_protocol"], "v2");
    // Another space's app: refused, and unchanged.
    let (code, _) = put("p", json!({"client_identity": "required"}));
    assert!(
        code == StatusCode::FORBIDDEN || code == StatusCode::NOT_FOUND,
        "{code}"
    );
    let (_, p) = api.admin(Method::GET, "/v1/apps/p", None);
    assert!(p.get("client_identity").is_none(), "{p}");
    // Values and fields the sidecar does not know.
    assert_eq!(
        put("d", json!({"client_identity": "maybe"})).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(put("d", json!({"mtls": true})).0, StatusCode::BAD_REQUEST);
}
