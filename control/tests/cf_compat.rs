//! Cloud Foundry compatibility: the requests CF's own clients send, replayed as they send them
//! (method, path and query encoding, headers, body bytes: from the cf CLI's
//! `api/cfnetworking/cfnetv1` and cf-networking's `policy_client/internal_policy_client.go`),
//! each answer checked against what CF's policy server answers (`handlers/` and
//! `docs/policy-server-external-api.md` of cf-networking-release). Then the scopes: a
//! `network.write` user reaches only its apps and hits CF's quota at 151.

mod support;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Api, TOKEN};

/// The headers the cf CLI sets on every networking request (`cfnetv1/request.go`), with the
/// access token as UAA hands it out: `bearer <token>`.
fn cf_cli_headers(auth: &str, body: bool) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("accept", "application/json".to_string()),
        (
            "user-agent",
            "cf/8.8.2+2ed2a0a.2024-09-25 (go1.22.7; amd64 linux)".to_string(),
        ),
        ("authorization", auth.to_string()),
    ];
    if body {
        h.push(("content-type", "application/json".to_string()));
    }
    h
}

fn send(
    api: &Api,
    method: Method,
    path: &str,
    headers: &[(&'static str, String)],
    body: &str,
) -> (StatusCode, hyper::HeaderMap, Value) {
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, h, raw) = api.raw(method, path, &hs, None, body.as_bytes());
    let v = serde_json::from_slice(&raw).unwrap_or_else(|_| json!(String::from_utf8_lossy(&raw)));
    (code, h, v)
}

/// `cfnetv1.PolicyList` marshalled by Go: compact, `total_policies` omitted (omitempty).
fn cli_body(policies: &[(&str, &str, &str, u16, u16)]) -> String {
    let ps: Vec<String> = policies
        .iter()
        .map(|(s, d, proto, start, end)| {
            format!(r#"{{"source":{{"id":"{s}"}},"destination":{{"id":"{d}","protocol":"{proto}","ports":{{"start":{start},"end":{end}}}}}}}"#)
        })
        .collect();
    format!(r#"{{"policies":[{}]}}"#, ps.join(","))
}

#[test]
fn the_cf_clis_requests_get_cf_answers() {
    let api = Api::new();
    let (a, b, c) = (api.app("frontend"), api.app("backend"), api.app("other"));
    let auth = format!("bearer {TOKEN}");
    let path = "/networking/v1/external/policies";

    // CreatePolicies (policy_test.go's body: two policies, tcp and udp, 1234-1235).
    let body = cli_body(&[(&a, &b, "tcp", 1234, 1235), (&c, &b, "udp", 1234, 1235)]);
    let (code, h, answer) = send(
        &api,
        Method::POST,
        path,
        &cf_cli_headers(&auth, true),
        &body,
    );
    assert_eq!((code, answer), (StatusCode::OK, json!({})));
    // CF's security headers on every answer.
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-xss-protection"], "1; mode=block");
    assert_eq!(h["strict-transport-security"], "max-age=31536000");

    // ListPolicies(appGUIDs...): `url.Values.Encode` sends the comma as %2C.
    let (code, _, list) = send(
        &api,
        Method::GET,
        &format!("{path}?id={a}%2C{c}"),
        &cf_cli_headers(&auth, false),
        "",
    );
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["total_policies"], 2);
    // What cfnetv1 parses: source.id, destination.{id, protocol, ports}; no tags shown.
    let mut got: Vec<Value> = list["policies"].as_array().unwrap().clone();
    got.sort_by_key(|p| p["destination"]["protocol"].as_str().unwrap().to_string());
    assert_eq!(
        got,
        vec![
            json!({"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "ports": {"start": 1234, "end": 1235}}}),
            json!({"source": {"id": c}, "destination": {"id": b, "protocol": "udp", "ports": {"start": 1234, "end": 1235}}}),
        ]
    );
    // ListPolicies() with no GUIDs: no query at all.
    let (_, _, all) = send(&api, Method::GET, path, &cf_cli_headers(&auth, false), "");
    assert_eq!(all["total_policies"], 2);
    // Only `frontend`'s: the other policy does not name it.
    let (_, _, one) = send(
        &api,
        Method::GET,
        &format!("{path}?id={a}"),
        &cf_cli_headers(&auth, false),
        "",
    );
    assert_eq!(one["total_policies"], 1);

    // RemovePolicies.
    let del = cli_body(&[(&a, &b, "tcp", 1234, 1235)]);
    let (code, _, answer) = send(
        &api,
        Method::POST,
        &format!("{path}/delete"),
        &cf_cli_headers(&auth, true),
        &del,
    );
    assert_eq!((code, answer), (StatusCode::OK, json!({})));
    // Removing it again is not an error (CF: 200), and the other policy stays.
    let (code, _, _) = send(
        &api,
        Method::POST,
        &format!("{path}/delete"),
        &cf_cli_headers(&auth, true),
        &del,
    );
    assert_eq!(code, StatusCode::OK);
    let (_, _, all) = send(&api, Method::GET, path, &cf_cli_headers(&auth, false), "");
    assert_eq!(all["total_policies"], 1);

    // The errors the CLI turns into its messages: `{"error": ...}` with CF's status codes.
    for (method, p, hdrs, body, want_code, want) in [
        (
            Method::POST,
            path.to_string(),
            cf_cli_headers(&auth, true),
            cli_body(&[(&a, &b, "tcp", 8080, 0)]),
            StatusCode::BAD_REQUEST,
            "mapper: validate policies: invalid port range 8080-0, start must be less than or equal to end",
        ),
        (
            Method::POST,
            path.to_string(),
            cf_cli_headers(&auth, true),
            cli_body(&[(&a, "no-such-app", "tcp", 8080, 8080)]),
            StatusCode::FORBIDDEN,
            "one or more applications cannot be found or accessed",
        ),
        (
            Method::GET,
            path.to_string(),
            cf_cli_headers("bearer expired", false),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "failed to verify token with uaa",
        ),
        (
            Method::GET,
            path.to_string(),
            vec![("accept", "application/json".to_string())],
            String::new(),
            StatusCode::UNAUTHORIZED,
            "missing authorization header",
        ),
        (
            Method::GET,
            "/networking/v2/external/policies".to_string(),
            cf_cli_headers(&auth, false),
            String::new(),
            StatusCode::NOT_ACCEPTABLE,
            "api version 'v2' not supported",
        ),
    ] {
        let (code, _, answer) = send(&api, method, &p, &hdrs, &body);
        assert_eq!((code, answer), (want_code, json!({ "error": want })), "{p} {body}");
    }
}

#[test]
fn cfs_internal_client_is_answered_on_a_cell_identity() {
    let api = Api::new();
    let (a, b) = (api.app("frontend"), api.app("backend"));
    api.admin(
        Method::POST,
        "/networking/v1/external/policies",
        Some(json!({"policies": [{"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]})),
    );
    let cell = api.cell("cell1");
    // json_client.Do: no content type, no token; the identity is the client certificate.
    let get = |path: &str, peer| api.raw(Method::GET, path, &[], peer, b"");

    let (code, _, raw) = get("/networking/v1/internal/policies", Some(&cell));
    assert_eq!(code, StatusCode::OK);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        v,
        json!({"total_policies": 1, "policies": [{
            "source": {"id": a, "tag": "0001"},
            "destination": {"id": b, "tag": "0002", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}},
        }]})
    );
    // GetPoliciesByID joins with a bare comma.
    let (_, _, raw) = get(
        &format!("/networking/v1/internal/policies?id={b},unknown"),
        Some(&cell),
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&raw).unwrap()["total_policies"],
        1
    );
    let (_, _, raw) = get("/networking/v1/internal/policies?id=unknown", Some(&cell));
    assert_eq!(
        serde_json::from_slice::<Value>(&raw).unwrap()["total_policies"],
        0
    );

    // GetPoliciesLastUpdated: a bare integer, which moves when a policy changes.
    let last = |api: &Api| {
        let (code, _, raw) = api.raw(
            Method::GET,
            "/networking/v1/internal/policies_last_updated",
            &[],
            Some(&cell),
            b"",
        );
        assert_eq!(code, StatusCode::OK);
        std::str::from_utf8(&raw).unwrap().parse::<i64>().unwrap()
    };
    let t1 = last(&api);
    assert!(
        t1 > 1_600_000_000_000_000_000,
        "{t1} is not Unix nanoseconds"
    );
    api.admin(
        Method::POST,
        "/networking/v1/external/policies/delete",
        Some(json!({"policies": [{"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]})),
    );
    assert!(last(&api) > t1);

    // CreateOrGetTag marshals a struct without json tags: `{"ID": ..., "Type": ...}`.
    let put = |body: &str| {
        let (code, _, raw) = api.raw(
            Method::PUT,
            "/networking/v1/internal/tags",
            &[],
            Some(&cell),
            body.as_bytes(),
        );
        (code, serde_json::from_slice::<Value>(&raw).unwrap())
    };
    let router = json!({"id": "router-guid", "tag": "0003", "type": "router"});
    assert_eq!(
        put(r#"{"ID":"router-guid","Type":"router"}"#),
        (StatusCode::OK, router.clone())
    );
    assert_eq!(
        put(r#"{"ID":"router-guid","Type":"router"}"#),
        (StatusCode::OK, router)
    );
    assert_eq!(
        put(&format!(r#"{{"ID":"{a}","Type":"app"}}"#)),
        (
            StatusCode::OK,
            json!({"id": a, "tag": "0001", "type": "app"})
        )
    );
    assert_eq!(
        put("not json"),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "failed parsing request body"})
        )
    );
    // Issue #23: a cell filled the tag space (every later app refused) and the database (1 MB
    // ids). Ids are bounded, and a cell makes 64 groups at most; a known group is still
    // answered, without a new revision, and app tags are unaffected.
    let (code, v) = put(&format!(
        r#"{{"ID":"{}","Type":"router"}}"#,
        "x".repeat(100_000)
    ));
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    let mut refused = None;
    for i in 0..100 {
        let (code, v) = put(&format!(r#"{{"ID":"flood-{i}","Type":"router"}}"#));
        if code != StatusCode::OK {
            refused = Some((i, code, v));
            break;
        }
    }
    let (i, code, v) = refused.expect("the flood was never refused");
    assert_eq!((i, code), (63, StatusCode::FORBIDDEN), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("tag quota exceeded"),
        "{v}"
    );
    assert_eq!(
        put(r#"{"ID":"router-guid","Type":"router"}"#).0,
        StatusCode::OK
    );
    assert_eq!(
        api.admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "after-flood"}))
        )
        .0,
        StatusCode::CREATED
    );

    // The attack: the internal API lists every policy and tag and makes tags. The admin token
    // without a cell certificate does not open it, nor does a cell certificate that was
    // replaced by a re-registration.
    let (code, _, _) = api.raw(
        Method::GET,
        "/networking/v1/internal/policies",
        &[("authorization", &format!("bearer {TOKEN}"))],
        None,
        b"",
    );
    assert_eq!(code, StatusCode::FORBIDDEN);
    api.cell("cell1");
    assert_eq!(
        get("/networking/v1/internal/policies", Some(&cell)).0,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn the_rest_of_cfs_external_api() {
    let api = Api::new();
    let (a, b) = (api.app("frontend"), api.app("backend"));

    // Uptime and health need no token.
    for path in ["/", "/networking"] {
        let (code, h, raw) = api.raw(Method::GET, path, &[], None, b"");
        let text = String::from_utf8(raw.to_vec()).unwrap();
        assert_eq!(code, StatusCode::OK);
        assert!(
            text.starts_with("Network policy server, up for ") && text.ends_with("s\n"),
            "{text:?}"
        );
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    }
    let (code, _, raw) = api.raw(Method::GET, "/health", &[], None, b"");
    assert_eq!((code, raw.len()), (StatusCode::OK, 0));
    // CORS preflight, as CF's wrapper answers it with no allowed origins configured.
    let (code, h, _) = api.raw(
        Method::OPTIONS,
        "/networking/v1/external/policies",
        &[],
        None,
        b"",
    );
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h["access-control-allow-methods"], "POST,GET,OPTIONS");
    assert_eq!(h["access-control-allow-headers"], "authorization");
    assert_eq!(h["x-frame-options"], "deny");
    let (_, h, _) = api.raw(
        Method::OPTIONS,
        "/networking/v0/external/tags",
        &[],
        None,
        b"",
    );
    assert_eq!(h["access-control-allow-methods"], "GET,OPTIONS");
    assert!(h.get("access-control-allow-origin").is_none());

    // whoami, tags (fixed-width upper-case hex) and cleanup, for an admin.
    assert_eq!(
        api.admin(Method::GET, "/networking/v1/external/whoami", None),
        (StatusCode::OK, json!({"subject": "admin"}))
    );
    assert_eq!(
        api.admin(Method::GET, "/networking/v1/external/tags", None),
        (
            StatusCode::OK,
            json!({"tags": [{"id": a, "tag": "0001", "type": "app"}, {"id": b, "tag": "0002", "type": "app"}]})
        )
    );
    assert_eq!(
        api.admin(
            Method::POST,
            "/networking/v1/external/policies/cleanup",
            None
        ),
        (StatusCode::OK, json!({"total_policies": 0, "policies": []}))
    );

    // v0: `port` instead of `ports`; v0 lists only one-port policies, v1 sees v0's.
    let v0 = |port: i64| json!({"policies": [{"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "port": port}}]});
    assert_eq!(
        api.admin(
            Method::POST,
            "/networking/v0/external/policies",
            Some(v0(8080))
        ),
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        api.admin(
            Method::POST,
            "/networking/v0/external/policies",
            Some(v0(0))
        ),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "mapper: validate policies: missing port"})
        )
    );
    api.admin(
        Method::POST,
        "/networking/v1/external/policies",
        Some(json!({"policies": [{"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "ports": {"start": 9000, "end": 9100}}}]})),
    );
    assert_eq!(
        api.admin(Method::GET, "/networking/v0/external/policies", None),
        (
            StatusCode::OK,
            json!({"total_policies": 1, "policies": [{"source": {"id": a}, "destination": {"id": b, "protocol": "tcp", "port": 8080}}]})
        )
    );
    assert_eq!(
        api.admin(Method::GET, "/networking/v1/external/policies", None)
            .1["total_policies"],
        2
    );
    assert_eq!(
        api.admin(
            Method::POST,
            "/networking/v0/external/policies/delete",
            Some(v0(8080))
        ),
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        api.admin(Method::GET, "/networking/v0/external/policies", None)
            .1["total_policies"],
        0
    );
    // CF's source_id / dest_id filters.
    let q = |query: &str| {
        api.admin(
            Method::GET,
            &format!("/networking/v1/external/policies?{query}"),
            None,
        )
        .1["total_policies"]
            .clone()
    };
    assert_eq!(q(&format!("source_id={a}")), 1);
    assert_eq!(q(&format!("source_id={b}")), 0);
    assert_eq!(q(&format!("dest_id={b}")), 1);
    assert_eq!(q(&format!("source_id={b}&dest_id={b}")), 0);
}

#[test]
fn a_network_write_user_reaches_only_its_apps_within_cfs_quota() {
    let api = Api::new();
    let (a, b, c) = (api.app("appa"), api.app("appb"), api.app("appc"));
    let dev = format!(
        "bearer {}",
        api.token("dev", "network.write", &["appa", "appb"])
    );
    let as_dev = |m: Method, p: &str, body: Option<Value>| api.call(m, p, Some(&dev), None, body);
    let policy = |s: &str, d: &str, port: u16| json!({"source": {"id": s}, "destination": {"id": d, "protocol": "tcp", "ports": {"start": port, "end": port}}});
    let path = "/networking/v1/external/policies";
    let forbidden = json!({"error": "one or more applications cannot be found or accessed"});

    // Positive control: between its own apps.
    assert_eq!(
        as_dev(
            Method::POST,
            path,
            Some(json!({"policies": [policy(&a, &b, 8080)]}))
        ),
        (StatusCode::OK, json!({}))
    );
    // Another user's app, as source or destination, to add or remove: CF's 403.
    api.admin(
        Method::POST,
        path,
        Some(json!({"policies": [policy(&c, &b, 8080)]})),
    );
    for (p, verb) in [
        (policy(&a, &c, 8080), ""),
        (policy(&c, &a, 8080), ""),
        (policy(&c, &b, 8080), "/delete"),
    ] {
        assert_eq!(
            as_dev(
                Method::POST,
                &format!("{path}{verb}"),
                Some(json!({"policies": [p]}))
            ),
            (StatusCode::FORBIDDEN, forbidden.clone())
        );
    }
    // It lists only policies whose both ends it manages; the admin sees both.
    let (code, list) = as_dev(Method::GET, path, None);
    assert_eq!(
        (code, list["total_policies"].clone()),
        (StatusCode::OK, json!(1))
    );
    assert_eq!(list["policies"][0]["source"]["id"], a.as_str());
    assert_eq!(api.admin(Method::GET, path, None).1["total_policies"], 2);
    let (_, apps) = as_dev(Method::GET, "/v1/apps", None);
    let names: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["appa", "appb"]);
    assert_eq!(
        as_dev(Method::GET, "/v1/apps/appc", None).0,
        StatusCode::NOT_FOUND
    );
    // Admin-only endpoints answer with CF's scope message.
    let scopes = json!({"error": "provided scopes [network.write] do not include allowed scopes [network.admin]"});
    for (m, p) in [
        (Method::GET, "/networking/v1/external/whoami"),
        (Method::GET, "/networking/v1/external/tags"),
        (Method::POST, "/networking/v1/external/policies/cleanup"),
        (Method::GET, "/v1/cells"),
        (Method::POST, "/v1/tokens"),
    ] {
        assert_eq!(
            as_dev(m, p, None),
            (StatusCode::FORBIDDEN, scopes.clone()),
            "{p}"
        );
    }

    // Quota (CF's quota_guard): appa is the source of 1; 149 more fit, then the 151st fails.
    let batch: Vec<Value> = (2..=150).map(|port| policy(&a, &b, port)).collect();
    assert_eq!(
        as_dev(Method::POST, path, Some(json!({ "policies": batch }))),
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        as_dev(
            Method::POST,
            path,
            Some(json!({"policies": [policy(&a, &b, 151)]}))
        ),
        (
            StatusCode::FORBIDDEN,
            json!({"error": "policy quota exceeded"})
        )
    );
    // Another source app has its own quota; an admin has none.
    assert_eq!(
        as_dev(
            Method::POST,
            path,
            Some(json!({"policies": [policy(&b, &a, 151)]}))
        )
        .0,
        StatusCode::OK
    );
    assert_eq!(
        api.admin(
            Method::POST,
            path,
            Some(json!({"policies": [policy(&a, &b, 151)]}))
        )
        .0,
        StatusCode::OK
    );

    // Revoked: the token no longer verifies.
    assert_eq!(
        api.admin(Method::DELETE, "/v1/tokens/dev", None).0,
        StatusCode::OK
    );
    assert_eq!(
        as_dev(Method::GET, path, None),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "failed to verify token with uaa"})
        )
    );
}

/// CF's vxlan-policy-agent lists security groups as `GetSecurityGroupsForSpace` asks:
/// `per_page`, `space_guids` joined with a bare comma, then `from=<next>` until `next` is 0;
/// `rules` is a JSON string. Only a cell's identity opens it; a user's token does not create or
/// bind groups.
#[test]
fn cfs_internal_security_groups_listing_pages_as_its_client_reads_it() {
    let api = Api::new();
    let (code, _) = api.admin(Method::POST, "/v1/orgs", Some(json!({"name": "o"})));
    assert_eq!(code, StatusCode::CREATED);
    let mut spaces = vec![];
    for s in ["dev", "prod", "other"] {
        let (_, sp) = api.admin(
            Method::POST,
            "/v1/spaces",
            Some(json!({"org": "o", "name": s})),
        );
        spaces.push(sp["guid"].as_str().unwrap().to_string());
    }
    let rule =
        json!([{"protocol": "tcp", "destination": "10.0.11.0/24", "ports": "80,443", "log": true}]);
    for g in ["a-global", "b-dev", "c-prod", "d-other"] {
        let (code, v) = api.admin(
            Method::POST,
            "/v1/security_groups",
            Some(json!({"name": g, "rules": rule})),
        );
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    // CC's validation messages, all of them, as a 422.
    let (code, v) = api.admin(
        Method::POST,
        "/v1/security_groups",
        Some(json!({"name": "bad", "rules": [{"protocol": "all", "destination": "1.2.3.4", "ports": "80"}]})),
    );
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        v["error"],
        "Rules[0]: ports are not allowed for protocols of type all"
    );
    let bind = |g: &str, body: Value| {
        let (code, v) = api.admin(
            Method::POST,
            &format!("/v1/security_groups/{g}/bindings"),
            Some(body),
        );
        assert_eq!(code, StatusCode::OK, "{v}");
        v
    };
    bind("a-global", json!({"lifecycle": "running"}));
    bind(
        "b-dev",
        json!({"lifecycle": "running", "org": "o", "space": "dev"}),
    );
    bind(
        "c-prod",
        json!({"lifecycle": "staging", "org": "o", "space": "prod"}),
    );
    bind(
        "d-other",
        json!({"lifecycle": "running", "org": "o", "space": "other"}),
    );

    let cell = api.cell("cell1");
    let page = |q: &str| {
        let (code, _, raw) = api.raw(
            Method::GET,
            &format!("/networking/v1/internal/security_groups?{q}"),
            &[],
            Some(&cell),
            b"",
        );
        assert_eq!(code, StatusCode::OK);
        serde_json::from_slice::<Value>(&raw).unwrap()
    };
    let want = format!("per_page=2&space_guids={},{}", spaces[0], spaces[1]);
    let first = page(&want);
    assert_eq!(first["next"], 3, "{first}");
    let names: Vec<&str> = first["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-global", "b-dev"]);
    let g = &first["security_groups"][1];
    assert_eq!(g["running_space_guids"], json!([spaces[0]]));
    assert_eq!(g["staging_space_guids"], json!([]));
    assert_eq!(
        (
            g["running_default"].as_bool(),
            g["staging_default"].as_bool()
        ),
        (Some(false), Some(false))
    );
    let rules: Value = serde_json::from_str(g["rules"].as_str().unwrap()).unwrap();
    assert_eq!(rules, rule);
    assert_eq!(first["security_groups"][0]["running_default"], true);
    let second = page(&format!("{want}&from=3"));
    assert_eq!(second["next"], 0);
    let names: Vec<&str> = second["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["c-prod"],
        "d-other is bound to a space not asked for"
    );
    assert_eq!(
        second["security_groups"][0]["staging_space_guids"],
        json!([spaces[1]])
    );

    // Not without a cell identity; not for a user's token.
    let (code, _, _) = api.raw(
        Method::GET,
        "/networking/v1/internal/security_groups",
        &[],
        None,
        b"",
    );
    assert_ne!(code, StatusCode::OK);
    let a = api.app("appa");
    let user = api.token("alice", "network.write", &[&a]);
    let (code, _) = api.call(
        Method::POST,
        "/v1/security_groups/a-global/bindings/delete",
        Some(&format!("Bearer {user}")),
        None,
        Some(json!({"lifecycle": "running"})),
    );
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        api.admin(Method::GET, "/v1/security_groups/a-global", None)
            .1["running_default"]
            == true
    );
}

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
