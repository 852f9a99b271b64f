//! The in-process API harness: requests go straight to `api::handle` with a real SQLite state
//! and real issuers, no TLS or sockets.
#![allow(dead_code)]

use std::sync::Arc;

use c2c_control::api::{self, Ctx, Peer, Signers};
use c2c_control::state::State;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

pub const TOKEN: &str = "t0ken";

pub struct Api {
    pub _dir: tempfile::TempDir,
    pub ctx: Arc<Ctx>,
    pub pki: c2c_certs::Pki,
    pub rt: tokio::runtime::Runtime,
}

impl Api {
    pub fn new() -> Self {
        Self::with(|ctx| ctx)
    }

    /// As [`Api::new`], with `f` applied to the context (a budget, say).
    pub fn with(f: impl FnOnce(Ctx) -> Ctx) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(
            &dir.path().join("state.db"),
            ("10.255.0.0".parse().unwrap(), 16),
            60,
        )
        .unwrap();
        let (pki, _) = c2c_certs::Pki::open_or_create(&dir.path().join("ca")).unwrap();
        let (again, _) = c2c_certs::Pki::open_or_create(&dir.path().join("ca")).unwrap();
        let ctx = Ctx::new(state, TOKEN.into()).unwrap().with_signers(
            Signers {
                cells: again.cells,
                instances: again.instances,
                root_pem: again.root.cert_pem().to_string(),
            },
            std::time::Duration::from_secs(3600),
        );
        Self {
            _dir: dir,
            ctx: Arc::new(f(ctx)),
            pki,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// A request exactly as given: method, path with query, headers and body bytes.
    pub fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        peer: Option<&Peer>,
        body: &[u8],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_vec()))).unwrap();
        self.rt.block_on(async {
            let resp = api::handle(req, &self.ctx, peer).await;
            let status = resp.status();
            let headers = resp.headers().clone();
            let raw = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, raw)
        })
    }

    pub fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        peer: Option<&Peer>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut headers = vec![];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, _, raw) = self.raw(method, path, &headers, peer, body.as_bytes());
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    /// Creates app `name` as the admin; returns its GUID.
    pub fn app(&self, name: &str) -> String {
        let (code, app) = self.admin(Method::POST, "/v1/apps", Some(json!({ "name": name })));
        assert_eq!(code, StatusCode::CREATED, "{app}");
        app["guid"].as_str().unwrap().to_string()
    }

    /// A token for `user` with `scope`, managing `apps`.
    pub fn token(&self, user: &str, scope: &str, apps: &[&str]) -> String {
        let (code, t) = self.admin(
            Method::POST,
            "/v1/tokens",
            Some(json!({ "user": user, "scope": scope, "apps": apps })),
        );
        assert_eq!(code, StatusCode::CREATED, "{t}");
        t["token"].as_str().unwrap().to_string()
    }

    pub fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&format!("Bearer {TOKEN}")), None, body)
    }

    /// A cell registered through the API, and its identity as the TLS layer would report it.
    pub fn cell(&self, name: &str) -> Peer {
        let (_key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
        let (code, signed) = self.admin(
            Method::POST,
            "/v1/cells",
            Some(json!({ "name": name, "csr": csr })),
        );
        assert_eq!(code, StatusCode::OK, "{signed}");
        let pem = signed["cert_pem"].as_str().unwrap();
        let der = c2c_certs::info::first_der_from_pem(pem.as_bytes()).unwrap();
        Peer::from_der(&der).unwrap()
    }
}
