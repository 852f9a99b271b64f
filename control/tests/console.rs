//! The web console answered in-process (`console::handle` with a real SQLite state): who gets
//! in and how, what each caller sees, and that names users choose never become markup.

mod support;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::json;
use support::{Api, TOKEN};

/// `GET path` on the console with `cookie` (the token) if given: status, headers, body.
fn get(
    api: &Api,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; c2c_console={c}"));
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    api.rt.block_on(async {
        let r = c2c_control::console::handle(&req, &api.ctx).await;
        let (status, headers) = (r.status(), r.headers().clone());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    })
}

#[test]
fn the_console_lets_in_only_known_tokens_and_logs_in_with_a_private_cookie() {
    let api = Api::new();
    // No token, an unknown one: the login page, nothing of the platform.
    api.app("appa");
    for cookie in [None, Some("wrong")] {
        let (code, h, body) = get(&api, Method::GET, "/", cookie);
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{cookie:?}");
        assert!(
            body.contains("name=token") && !body.contains("appa"),
            "{body}"
        );
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
    }
    let (code, h, _) = get(&api, Method::GET, "/login?token=wrong", None);
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(h.get("set-cookie").is_none());
    // The token URL: a cookie only scripts cannot read, sent to this site only; then the map.
    let (code, h, _) = get(&api, Method::GET, &format!("/login?token={TOKEN}"), None);
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/");
    let cookie = h["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    let (code, h, body) = get(&api, Method::GET, "/", Some(TOKEN));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        body.contains("<svg") && body.contains(">appa</text>"),
        "{body}"
    );
    // The console only reads.
    let (code, _, _) = get(&api, Method::POST, "/", Some(TOKEN));
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_console_shows_each_caller_its_own_and_never_a_name_as_markup() {
    let api = Api::new();
    let (ga, gb) = (api.app("appa"), api.app("appb"));
    // Names a user chooses, made to be markup: an org, a space, a security group.
    // (Names may not hold `/`.)
    let evil = "<script>alert(1)<\\script>";
    assert_eq!(
        api.admin(Method::POST, "/v1/orgs", Some(json!({"name": evil})))
            .0,
        StatusCode::CREATED
    );
    let (code, body) = api.admin(
        Method::POST,
        "/v1/spaces",
        Some(json!({"org": evil, "name": "<img src=x onerror=alert(2)>"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = api.admin(
        Method::POST,
        "/v1/apps",
        Some(json!({"name": "appc", "org": evil, "space": "<img src=x onerror=alert(2)>"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = api.admin(
        Method::POST,
        "/v1/security_groups",
        Some(json!({"name": evil, "rules": [{"protocol": "tcp", "destination": "10.0.0.1", "ports": "80", "description": "</code><script>alert(3)</script>"}]})),
    );
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = api.admin(
        Method::POST,
        "/networking/v1/external/policies",
        Some(json!({"policies": [{"source": {"id": ga}, "destination": {"id": gb, "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]})),
    );
    assert_eq!(code, StatusCode::OK, "{body}");
    // A flow reported by a cell, naming an app made to be markup.
    let cell1 = api.cell("cell1");
    let (code, body) = api.call(
        Method::POST,
        "/v1/cells/cell1/flows",
        None,
        Some(&cell1),
        Some(json!({"flows": [{
            "time": "2026-12-05T10:00:00.000Z", "kind": "c2c", "verdict": "deny", "protocol": "tcp",
            "source": {"ip": "10.255.0.1", "port": 4000, "app": "<b>x</b>", "app_guid": ga},
            "destination": {"ip": "10.255.1.1", "port": 8080, "app": "appb", "app_guid": gb}
        }], "revision": 1})),
    );
    assert_eq!(code, StatusCode::OK, "{body}");
    // The admin: every app, the policy as an edge, every page; no name became markup.
    let pages = [
        "/",
        "/apps/appa",
        "/apps/appb",
        "/apps/appc",
        "/cells",
        "/security-groups",
    ];
    for path in pages {
        let (code, _, body) = get(&api, Method::GET, path, Some(TOKEN));
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
        for bad in ["<script", "<img", "<b>"] {
            assert!(!body.contains(bad), "{path} carries {bad}: {body}");
        }
    }
    let (_, _, map) = get(&api, Method::GET, "/", Some(TOKEN));
    assert!(
        map.contains(">appc</text>") && map.contains("tcp 8080"),
        "{map}"
    );
    assert!(
        map.contains("&lt;script&gt;alert(1)&lt;\\script&gt;/&lt;img"),
        "the space's column is named, escaped: {map}"
    );
    // The revision cell1 said it acted on, against control's.
    let (_, _, cells) = get(&api, Method::GET, "/cells", Some(TOKEN));
    let current = api.ctx.current_revision().0;
    assert!(
        cells.contains(&format!("1 ({} behind)", current - 1)),
        "{cells}"
    );
    let (_, _, groups) = get(&api, Method::GET, "/security-groups", Some(TOKEN));
    assert!(
        groups.contains("&lt;script&gt;alert(1)&lt;\\script&gt;"),
        "{groups}"
    );
    let (_, _, b) = get(&api, Method::GET, "/apps/appb", Some(TOKEN));
    assert!(
        b.contains("&lt;b&gt;x&lt;/b&gt;") && b.contains("class=bad>deny"),
        "{b}"
    );
    // A user of appa: its app and what touches it; not appc, not the admin's pages.
    let alice = api.token("alice", "network.write", &["appa"]);
    let (code, _, map) = get(&api, Method::GET, "/", Some(&alice));
    assert_eq!(code, StatusCode::OK);
    assert!(
        map.contains(">appa</text>") && !map.contains("appc"),
        "{map}"
    );
    let (code, _, _) = get(&api, Method::GET, "/apps/appc", Some(&alice));
    assert_eq!(code, StatusCode::NOT_FOUND);
    for admin_only in ["/cells", "/security-groups"] {
        let (code, _, body) = get(&api, Method::GET, admin_only, Some(&alice));
        assert_eq!(code, StatusCode::FORBIDDEN, "{admin_only}");
        assert!(
            !body.contains("cell1") && !body.contains("alert(1)"),
            "{body}"
        );
    }
    // Positive control for alice: her app's page.
    let (code, _, page) = get(&api, Method::GET, "/apps/appa", Some(&alice));
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("<h1>app appa</h1>"), "{page}");
}

/// An app's page says when each instance's certificate and identity, as control signed them,
/// expire: "not signed yet" before its cell asked, then the time left (this control signs
/// certificates for an hour, identities for a day).
#[test]
fn the_app_page_shows_when_each_instance_certificate_expires() {
    let api = Api::new();
    let cell1 = api.cell("cell1");
    let as_cell = |path: &str, body: serde_json::Value| {
        api.call(Method::POST, path, None, Some(&cell1), Some(body))
    };
    let (code, lease) = as_cell("/v1/cells/cell1/lease", json!({"underlay_ip": "192.0.2.1"}));
    assert_eq!(code, StatusCode::OK, "{lease}");
    api.app("appa");
    let (code, placed) = api.admin(
        Method::POST,
        "/v1/apps/appa/instances",
        Some(json!({"cell": "cell1"})),
    );
    assert_eq!(code, StatusCode::CREATED, "{placed}");
    let path = format!(
        "/v1/cells/cell1/instances/{}",
        placed["guid"].as_str().unwrap()
    );
    let confirm = json!({"app_guid": placed["app_guid"], "index": 0, "ip": "10.255.0.3"});
    assert_eq!(
        api.call(Method::PUT, &path, None, Some(&cell1), Some(confirm))
            .0,
        StatusCode::OK
    );
    let (_, _, before) = get(&api, Method::GET, "/apps/appa", Some(TOKEN));
    assert_eq!(before.matches("not signed yet").count(), 2, "{before}");

    for what in ["certificate", "identity"] {
        let (_, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
        let (code, signed) = as_cell(&format!("{path}/{what}"), json!({ "csr": csr }));
        assert_eq!(code, StatusCode::OK, "{what}: {signed}");
    }
    let (_, _, after) = get(&api, Method::GET, "/apps/appa", Some(TOKEN));
    assert!(!after.contains("not signed yet"), "{after}");
    // Read within the same minute as the signing (or the same second).
    let cert = ["<td>in 1 h 0 min</td>", "<td>in 59 min</td>"];
    let id = ["<td>in 1 d 0 h</td>", "<td>in 23 h 59 min</td>"];
    assert!(cert.iter().any(|c| after.contains(c)), "{after}");
    assert!(id.iter().any(|c| after.contains(c)), "{after}");
}
