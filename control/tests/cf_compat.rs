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
