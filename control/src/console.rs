//! The read-only web console (`control serve --console-listen ADDR`, off by default; a bare
//! port means 127.0.0.1): plain HTTP with the listener budgets of the metrics listener, the
//! same tokens as the API. Server-rendered HTML and SVG with no script and nothing fetched from
//! anywhere else, so it works offline and a strict Content-Security-Policy holds it: the
//! service map (apps by space, policies as edges with the flows counted on them, denied flows
//! apart), an app's page (instances, routes, policies in and out, recent flows), cells and
//! security groups (the admin's). A user's token sees only the apps it may manage.
//!
//! `GET /login?token=T` checks the token and keeps it in an HttpOnly, SameSite=Strict cookie
//! (as Jupyter's token URL logs in), then sends the browser to the map; the URL with the
//! token is never sent on (Referrer-Policy: no-referrer).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use c2c_api::types::{Flow, FlowQuery};
use c2c_api::{App, Policy};

use crate::ctx::Ctx;
use crate::tokens::Caller;

/// The cookie the console keeps the token in.
const COOKIE: &str = "c2c_console";

/// Serves the console on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/"), "console listening");
    }
    let handler = move |req: Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        async move { handle(&req, &ctx).await }
    };
    c2c_api::metrics_http::serve_with(listener, handler, stop.cancelled_owned()).await
}

/// Answers one console request (any body is ignored: the console only reads).
pub async fn handle<B>(req: &Request<B>, ctx: &Ctx) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "c2c console",
            "<p>The console only reads.</p>",
        );
    }
    let path = req.uri().path().to_string();
    if path == "/login" {
        return login(req, ctx).await;
    }
    let Some(token) = cookie(req).or_else(|| bearer(req)) else {
        return login_page(StatusCode::UNAUTHORIZED, None);
    };
    let caller = match crate::auth::caller_of_token(ctx, &token).await {
        Ok(Some(c)) => c,
        Ok(None) => return login_page(StatusCode::UNAUTHORIZED, Some("That token is not known.")),
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "c2c console",
                &format!("<p>{}</p>", esc(&e.to_string())),
            )
        }
    };
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(c2c_api::decode_segment)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r = match segs.as_slice() {
        [] => map(ctx, &caller).await,
        ["apps", name] => app_page(ctx, &caller, name).await,
        ["cells"] if caller.is_admin() => cells_page(ctx).await,
        ["security-groups"] if caller.is_admin() => groups_page(ctx).await,
        ["cells"] | ["security-groups"] => Ok(page(
            StatusCode::FORBIDDEN,
            "c2c console",
            "<p>This page is the admin's (network.admin).</p>",
        )),
        _ => Ok(page(
            StatusCode::NOT_FOUND,
            "c2c console",
            "<p>No such page.</p>",
        )),
    };
    r.unwrap_or_else(|e| {
        page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "c2c console",
            &format!("<p>{}</p>", esc(&e.to_string())),
        )
    })
}

/// `GET /login?token=T`: a known token goes into the cookie and the browser to the map.
async fn login<B>(req: &Request<B>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let q = crate::http::query(req);
    let Some(token) = q.get("token").filter(|t| !t.is_empty()) else {
        return login_page(StatusCode::OK, None);
    };
    match crate::auth::caller_of_token(ctx, token).await {
        Ok(Some(_)) => {
            let mut r = secured(Response::new(Full::new(Bytes::new())));
            *r.status_mut() = StatusCode::SEE_OTHER;
            r.headers_mut()
                .insert(header::LOCATION, header::HeaderValue::from_static("/"));
            if let Ok(v) = header::HeaderValue::from_str(&format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        _ => login_page(StatusCode::UNAUTHORIZED, Some("That token is not known.")),
    }
}

fn login_page(status: StatusCode, why: Option<&str>) -> Response<Full<Bytes>> {
    let why = why
        .map(|w| format!("<p class=bad>{}</p>", esc(w)))
        .unwrap_or_default();
    page(
        status,
        "c2c console: log in",
        &format!(
            "{why}<form method=get action=/login><p>A token (the admin's, or one from <code>c2c token create</code>):</p>\
             <p><input type=password name=token size=48 autofocus> <button>Log in</button></p></form>"
        ),
    )
}

fn cookie<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
}

fn bearer<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(v.strip_prefix("Bearer ").unwrap_or(v).to_string())
}

/// Text for HTML: every character that could open markup or an attribute is escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link to an app's page, its name escaped and its path segment encoded.
fn app_link(name: &str) -> String {
    format!(
        "<a href=\"/apps/{}\">{}</a>",
        esc(&c2c_api::path_segment(name)),
        esc(name)
    )
}

/// The headers every answer carries: no script, nothing from elsewhere, no framing, no
/// caching, no referrer.
fn secured(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    r
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}nav a{margin-right:1em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
.bad{color:#b00}.ok{color:#070}svg text{font-size:12px}.node{fill:#eef;stroke:#447}\
.edge{stroke:#447;fill:none}.denied{stroke:#b00;stroke-dasharray:4 3;fill:none}.space{fill:#555;font-weight:bold}\
.label{paint-order:stroke;stroke:#fff;stroke-width:4px;text-anchor:middle;font-size:11px}";

/// An app's box on the map.
const NODE_W: i64 = 150;

fn page(status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t}</title><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\">Map</a><a href=\"/cells\">Cells</a><a href=\"/security-groups\">Security groups</a></nav>\
         <h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secured(r)
}

type Page = Result<Response<Full<Bytes>>, crate::state::StateError>;

/// What the map and an app's page read: the caller's apps, the policies among what it may see,
/// space names, and flows counted by (source, destination, verdict).
struct Seen {
    apps: Vec<App>,
    policies: Vec<Policy>,
    spaces: HashMap<String, String>,
    flows: Vec<Flow>,
}

async fn seen(ctx: &Ctx, caller: &Caller) -> Result<Seen, crate::state::StateError> {
    let (mut apps, policies, spaces) = ctx
        .with_state(|s| Ok((s.apps()?, s.policies(None)?, s.spaces(None)?)))
        .await?;
    apps.retain(|a| caller.may_manage(a.guid.as_str()));
    let known: std::collections::HashSet<&str> = apps.iter().map(|a| a.guid.as_str()).collect();
    let policies = policies
        .into_iter()
        .filter(|p| known.contains(p.source.as_str()) || known.contains(p.destination.as_str()))
        .collect();
    let spaces = spaces
        .into_iter()
        .map(|s| (s.guid, format!("{}/{}", s.org, s.name)))
        .collect();
    let (flows, _) = ctx.flows.query(
        &FlowQuery {
            limit: Some(crate::flows::MAX_ANSWER),
            ..Default::default()
        },
        std::time::Instant::now(),
        |g| caller.may_manage(g),
    );
    Ok(Seen {
        apps,
        policies,
        spaces,
        flows,
    })
}

/// Flows counted by (source app, destination app) and verdict.
fn counts(flows: &[Flow]) -> BTreeMap<(String, String), (usize, usize)> {
    let mut out: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for f in flows {
        let (Some(s), Some(d)) = (&f.source.app, &f.destination.app) else {
            continue;
        };
        let e = out.entry((s.clone(), d.clone())).or_default();
        if f.verdict == "deny" {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    out
}

/// An edge of the map from the side of the source that faces the destination to the side of
/// the destination that faces back; within a column, out to the right and back in.
fn edge(class: &str, from: (i64, i64), to: (i64, i64), label: &str) -> String {
    let (w, mid) = (NODE_W, 15);
    let (x1, x2, bend) = match from.0.cmp(&to.0) {
        std::cmp::Ordering::Less => (from.0 + w, to.0, 40),
        std::cmp::Ordering::Greater => (from.0, to.0 + w, -40),
        std::cmp::Ordering::Equal => (from.0 + w, to.0 + w, 0),
    };
    let (y1, y2) = (from.1 + mid, to.1 + mid);
    let (c1, c2) = if bend == 0 {
        let out = x1 + 40 + (y2 - y1).abs() / 4;
        (out, out)
    } else {
        (x1 + bend, x2 - bend)
    };
    let (lx, ly) = if bend == 0 {
        (c1 - 10, (y1 + y2) / 2 + 4)
    } else {
        ((x1 + x2) / 2, (y1 + y2) / 2 - 4)
    };
    format!(
        "<path class={class} d=\"M{x1},{y1} C{c1},{y1} {c2},{y2} {x2},{y2}\" marker-end=\"url(#arrow)\"></path><text class=label x={lx} y={ly}>{}</text>",
        esc(label)
    )
}

/// "1 app", "2 apps".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `/`: the service map.
async fn map(ctx: &Ctx, caller: &Caller) -> Page {
    let s = seen(ctx, caller).await?;
    let name_of: HashMap<&str, &str> = s
        .apps
        .iter()
        .map(|a| (a.guid.as_str(), a.name.as_str()))
        .collect();
    // Columns by space, apps in rows.
    let mut by_space: BTreeMap<String, Vec<&App>> = BTreeMap::new();
    for a in &s.apps {
        let space = s
            .spaces
            .get(&a.space)
            .cloned()
            .unwrap_or_else(|| a.space.clone());
        by_space.entry(space).or_default().push(a);
    }
    let (col_w, row_h, top) = (NODE_W + 160, 56, 50);
    let mut at: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut svg = String::new();
    for (col, (space, apps)) in by_space.iter().enumerate() {
        let x = 20 + col as i64 * col_w;
        let _ = write!(svg, "<text class=space x={x} y=24>{}</text>", esc(space));
        for (row, a) in apps.iter().enumerate() {
            let y = top + row as i64 * row_h;
            at.insert(a.name.as_str(), (x, y));
            let _ = write!(
                svg,
                "<a href=\"/apps/{}\"><rect class=node x={x} y={y} width={NODE_W} height=30 rx=6></rect><text x={} y={}>{}</text></a>",
                esc(&c2c_api::path_segment(&a.name)),
                x + 8,
                y + 19,
                esc(&a.name)
            );
        }
    }
    let flows = counts(&s.flows);
    let mut edges = String::new();
    let mut pairs: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for p in &s.policies {
        let (Some(src), Some(dst)) = (
            name_of.get(p.source.as_str()),
            name_of.get(p.destination.as_str()),
        ) else {
            continue;
        };
        pairs
            .entry((src, dst))
            .or_default()
            .push(format!("{} {}", p.protocol, p.ports));
    }
    for ((src, dst), ports) in &pairs {
        let (Some(a), Some(b)) = (at.get(src), at.get(dst)) else {
            continue;
        };
        let (ok, _) = flows
            .get(&(src.to_string(), dst.to_string()))
            .copied()
            .unwrap_or_default();
        edges.push_str(&edge(
            "edge",
            *a,
            *b,
            &format!("{} · {ok} flows", ports.join(", ")),
        ));
    }
    let mut denied_rows = String::new();
    for ((src, dst), (_, denied)) in flows.iter().filter(|(_, (_, d))| *d > 0) {
        if let (Some(a), Some(b)) = (at.get(src.as_str()), at.get(dst.as_str())) {
            edges.push_str(&edge("denied", *a, *b, &format!("{denied} denied")));
        }
        let _ = write!(
            denied_rows,
            "<tr><td>{}</td><td>{}</td><td class=bad>{denied}</td></tr>",
            app_link(src),
            app_link(dst)
        );
    }
    let rows = by_space.values().map(Vec::len).max().unwrap_or(0) as i64;
    let width = 40 + by_space.len().max(1) as i64 * col_w;
    let height = top + rows.max(1) * row_h + 20;
    let mut body = format!(
        "<p>{}, {}{}. Edges are policies (with the flows the cells reported on them); red dashed ones are denied flows.</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width={width} height={height} role=img aria-label=\"service map\">\
         <defs><marker id=arrow viewBox=\"0 0 10 10\" refX=10 refY=5 markerWidth=8 markerHeight=8 orient=auto-start-reverse><path d=\"M0,0 L10,5 L0,10 z\"></path></marker></defs>{svg}{edges}</svg>",
        count(s.apps.len(), "app", "apps"),
        count(s.policies.len(), "policy", "policies"),
        if caller.is_admin() { "" } else { " (the apps your token may manage)" }
    );
    body.push_str("<h2>Denied flows</h2>");
    if denied_rows.is_empty() {
        body.push_str("<p>None reported (the cells record flows with <code>--log-c2c</code>).</p>");
    } else {
        let _ = write!(
            body,
            "<table><tr><th>from</th><th>to</th><th>denied</th></tr>{denied_rows}</table>"
        );
    }
    Ok(page(StatusCode::OK, "c2c: service map", &body))
}

/// `/apps/NAME`: instances, routes, policies in and out, recent flows.
async fn app_page(ctx: &Ctx, caller: &Caller, name: &str) -> Page {
    let s = seen(ctx, caller).await?;
    let Some(app) = s.apps.iter().find(|a| a.name == name) else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            "c2c console",
            "<p>No such app (or not one your token may manage).</p>",
        ));
    };
    let guid = app.guid.clone();
    let (placements, routes, expiries) = ctx
        .with_state(|st| Ok((st.placements(None)?, st.routes()?, st.expiries()?)))
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let name_of: HashMap<&str, &str> = s
        .apps
        .iter()
        .map(|a| (a.guid.as_str(), a.name.as_str()))
        .collect();
    let other = |g: &str| name_of.get(g).map_or_else(|| esc(g), |n| app_link(n));
    let mut body = format!(
        "<p>space {} · tag {} · client identity {} · protocol {}</p><h2>Instances</h2><table><tr><th>index</th><th>cell</th><th>address</th><th>runtime</th><th>certificate expires</th><th>identity expires</th></tr>",
        esc(s.spaces.get(&app.space).map_or(app.space.as_str(), String::as_str)),
        app.tag,
        esc(&format!("{:?}", app.client_identity).to_lowercase()),
        esc(&format!("{:?}", app.app_protocol).to_lowercase()),
    );
    for p in placements.iter().filter(|p| p.app_guid == guid) {
        let (cert, id) = expiries.get(&p.guid).copied().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.index,
            esc(p.cell.as_str()),
            p.ip.map_or_else(|| "(not confirmed)".to_string(), |ip| ip.to_string()),
            esc(p.runtime.as_deref().unwrap_or("")),
            crate::expiry::expires_in(cert, now),
            crate::expiry::expires_in(id, now)
        );
    }
    body.push_str("</table><h2>Routes</h2><ul>");
    for r in routes.iter().filter(|r| r.app_guid == guid) {
        let _ = write!(body, "<li>{}</li>", esc(&r.fqdn()));
    }
    body.push_str("</ul><h2>Policies</h2><table><tr><th>from</th><th>to</th><th>protocol</th><th>ports</th></tr>");
    for p in s
        .policies
        .iter()
        .filter(|p| p.source == guid || p.destination == guid)
    {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            other(p.source.as_str()),
            other(p.destination.as_str()),
            p.protocol,
            p.ports
        );
    }
    body.push_str("</table><h2>Recent flows</h2><table><tr><th>time</th><th>from</th><th>to</th><th>verdict</th><th>cell</th></tr>");
    let end = |e: &c2c_api::types::FlowEnd| {
        let at = e.address();
        match &e.app {
            Some(a) => format!("{} ({})", app_link(a), esc(&at)),
            None => esc(&at),
        }
    };
    for f in s
        .flows
        .iter()
        .rev()
        .filter(|f| {
            f.source.app_guid.as_deref() == Some(guid.as_str())
                || f.destination.app_guid.as_deref() == Some(guid.as_str())
        })
        .take(50)
    {
        let class = if f.verdict == "deny" { "bad" } else { "ok" };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class={class}>{}</td><td>{}</td></tr>",
            esc(&f.time),
            end(&f.source),
            end(&f.destination),
            esc(&f.verdict),
            esc(f.cell.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");
    Ok(page(StatusCode::OK, &format!("app {name}"), &body))
}

/// `/cells`: each cell's lease and instances (the admin's).
async fn cells_page(ctx: &Ctx) -> Page {
    let cells = crate::placement_api::cell_records(ctx).await?;
    let now = crate::state::now();
    let current = ctx.current_revision().0;
    let mut body = format!("<p>Control's revision: {current}.</p><table><tr><th>cell</th><th>subnet</th><th>underlay</th><th>renewed</th><th>instances</th><th>acted on</th></tr>");
    for c in &cells {
        let lease = c.lease.as_ref();
        let renewed = lease.map_or_else(
            || "<span class=bad>no lease</span>".to_string(),
            |l| {
                let class = if c.healthy { "ok" } else { "bad" };
                format!("<span class={class}>{} s ago</span>", now - l.renewed_at)
            },
        );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{renewed}</td><td>{}</td><td>{}</td></tr>",
            esc(c.name.as_str()),
            lease.map(|l| l.subnet.to_string()).unwrap_or_default(),
            lease.map(|l| l.underlay_ip.to_string()).unwrap_or_default(),
            c.instances,
            acted_on(ctx, c.name.as_str(), current)
        );
    }
    body.push_str("</table>");
    Ok(page(StatusCode::OK, "c2c: cells", &body))
}

/// The revision a cell reported it acted on, how far behind control's that is, and how long
/// ago it said so.
fn acted_on(ctx: &Ctx, cell: &str, current: u64) -> String {
    match ctx.flows.revision_of(cell) {
        None => "not reported".into(),
        Some((rev, at)) => {
            let behind = current.saturating_sub(rev);
            let class = if behind == 0 { "ok" } else { "bad" };
            format!(
                "<span class={class}>{rev} ({behind} behind)</span>, {} s ago",
                at.elapsed().as_secs()
            )
        }
    }
}

/// `/security-groups`: rules and bindings (the admin's).
async fn groups_page(ctx: &Ctx) -> Page {
    let groups = ctx.with_state(|s| s.security_groups()).await?;
    let mut body = String::from("<table><tr><th>group</th><th>rules</th><th>bound to</th></tr>");
    for g in &groups {
        let mut bound: Vec<String> = g
            .spaces
            .iter()
            .map(|b| format!("{} ({})", b.space, b.lifecycle.as_str()))
            .collect();
        if g.running_default {
            bound.push("every space (running)".into());
        }
        if g.staging_default {
            bound.push("every space (staging)".into());
        }
        let _ = write!(
            body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&g.name),
            esc(&serde_json::to_string(&g.rules).unwrap_or_default()),
            esc(&bound.join(", "))
        );
    }
    body.push_str("</table>");
    Ok(page(StatusCode::OK, "c2c: security groups", &body))
}
