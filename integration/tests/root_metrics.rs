//! ROOT TEST: control's and the agents' Prometheus metrics, scraped by a real Prometheus
//! (Debian's package) running in the underlay namespace: it finds all three targets up, and
//! its HTTP API shows the values a test action moved (control's revision and request counts,
//! the policies it holds, each cell's revision catching up, a cell DNS answer by its code).
//! Beside it, the attack:
//! requests to a thousand paths of a client's choosing add no label values (the label sets
//! are bounded by endpoint names), and the listeners are plain HTTP serving `/metrics` only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;

const CONTROL_METRICS: &str = "192.0.2.254:9102";
const PROMETHEUS: &str = "192.0.2.254:9090";

/// `GET path` on `addr` from inside `ns` (HTTP/1.0): the status line and body.
fn get(ns: &Netns, addr: &str, path: &str) -> (String, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    spawn_in(&ns.path(), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .join()
    .unwrap()
    .map(|r| {
        let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    })
    .unwrap_or_else(|e| (format!("error: {e}"), String::new()))
}

/// Prometheus' instant query `q`: each series' labels and value.
fn query(ns: &Netns, q: &str) -> Vec<(serde_json::Value, f64)> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get(ns, PROMETHEUS, &format!("/api/v1/query?query={enc}"));
    if !status.contains(" 200") {
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

fn prometheus_bin() -> std::path::PathBuf {
    let p = std::path::PathBuf::from("/usr/bin/prometheus");
    assert!(
        p.exists(),
        "no /usr/bin/prometheus: install Debian's prometheus package (.ci/run does)"
    );
    p
}

#[test]
fn root_prometheus_scrapes_control_and_agents() {
    if !require_root() {
        return;
    }
    let p = Platform::start_with_flags(
        2,
        &["--metrics-listen", CONTROL_METRICS],
        &["--metrics-listen", "0.0.0.0:9101"],
    );
    let ns = &p.underlay.ns;

    // Prometheus in the underlay, scraping every second.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: control\n  static_configs: [{{targets: ['{CONTROL_METRICS}']}}]\n\
             - job_name: agents\n  static_configs: [{{targets: ['192.0.2.1:9101', '192.0.2.2:9101']}}]\n"
        ),
    )
    .unwrap();
    let _prom = Proc::start_in(
        ns,
        &prometheus_bin(),
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address={PROMETHEUS}"),
        ],
        dir.path().join("prometheus.log"),
    );
    let up = |q: &str| query(ns, q);
    wait_until(
        "Prometheus to find all three targets up",
        Duration::from_secs(60),
        || up("up").iter().filter(|(_, v)| *v == 1.0).count() == 3,
    );

    // A test action: two apps and a policy between them.
    p.c2c(&["create-app", "appa"]);
    p.c2c(&["create-app", "appb"]);
    p.allow("appa", "appb", "tcp", "8080");
    let (_, text) = get(ns, CONTROL_METRICS, "/metrics");
    let revision: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("c2c_control_revision "))
        .expect("c2c_control_revision in control's metrics")
        .trim()
        .parse()
        .unwrap();
    assert!(revision >= 3.0, "{text}");
    wait_until(
        "Prometheus to see the new revision and the policy",
        Duration::from_secs(30),
        || {
            up("c2c_control_revision")
                .first()
                .is_some_and(|(_, v)| *v >= revision)
                && up("c2c_control_objects{kind=\"policies\"}")
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0)
                && up("c2c_control_requests_total{endpoint=\"CreateApp\",code=\"201\"}")
                    .first()
                    .is_some_and(|(_, v)| *v == 2.0)
        },
    );
    wait_until(
        "each cell's applied revision to reach control's",
        Duration::from_secs(30),
        || {
            let cells = up("c2c_agent_revision");
            cells.len() == 2 && cells.iter().all(|(_, v)| *v >= revision)
        },
    );
    assert!(up("c2c_agent_rule_applies_total{result=\"ok\"}").len() == 2);

    // A name the cell's DNS does not know, asked from cell1: counted as NXDOMAIN.
    let cell1 = p.cells[0].ns.path();
    let answer = spawn_in(&cell1, || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // Header: id, RD, one question; then nosuch.apps.internal, type A, class IN.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["nosuch", "apps", "internal"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        s.send_to(&q, "169.254.0.1:53").unwrap();
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .join()
    .unwrap();
    assert_eq!(answer[3] & 0x0f, 3, "not NXDOMAIN: {answer:?}");
    wait_until(
        "the NXDOMAIN in Prometheus",
        Duration::from_secs(30),
        || {
            up("c2c_agent_dns_queries_total{outcome=\"NXDOMAIN\",instance=\"192.0.2.1:9101\"}")
                .first()
                .is_some_and(|(_, v)| *v >= 1.0)
                // The same query, by its question's type (A).
                && up("c2c_agent_dns_questions_total{qtype=\"A\",instance=\"192.0.2.1:9101\"}")
                    .first()
                    .is_some_and(|(_, v)| *v >= 1.0)
        },
    );

    // A caller with a token control never made is refused, and counted.
    let refused = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(c2c_integration::bin("c2c"))
        .args([
            "--state-dir",
            p.dir.path().join("state").to_str().unwrap(),
            "apps",
        ])
        .env("C2C_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    wait_until("the refusal in Prometheus", Duration::from_secs(30), || {
        up("c2c_control_auth_failures_total{reason=\"unknown_token\"}")
            .first()
            .is_some_and(|(_, v)| *v >= 1.0)
    });

    // Every metric the shipped Grafana dashboard plots is one Prometheus has.
    let (_, names) = get(ns, PROMETHEUS, "/api/v1/label/__name__/values");
    let names: serde_json::Value = serde_json::from_str(&names).unwrap();
    let names: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut plotted = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("c2c_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    names.contains(&name.as_str()),
                    "the dashboard plots {name}, which Prometheus does not have ({expr})"
                );
                plotted += 1;
            }
        }
    }
    assert!(plotted >= 10, "{plotted}");

    // The attack: two hundred paths of a client's choosing (unknown apps, made-up routes),
    // each a real request over TLS with the admin's token (`c2c curl`); they fail, as they
    // should, and are counted.
    let state = p.dir.path().join("state");
    let mut made_up = vec![];
    for i in 0..200 {
        let name = format!("probe-{i}-x{}", i * 7919);
        let path = if i % 2 == 0 {
            format!("/v1/apps/{name}")
        } else {
            format!("/{name}/{i}")
        };
        made_up.push(name);
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(c2c_integration::bin("c2c"))
            .args(["--state-dir", state.to_str().unwrap(), "curl", &path])
            .output()
            .unwrap();
    }
    wait_until(
        "the made-up requests to be counted",
        Duration::from_secs(10),
        || {
            let (_, text) = get(ns, CONTROL_METRICS, "/metrics");
            text.contains("c2c_control_requests_total{endpoint=\"other\",code=\"404\"} 100")
                && text.contains("c2c_control_requests_total{endpoint=\"GetApp\",code=\"404\"} 100")
        },
    );
    let (status, text) = get(ns, CONTROL_METRICS, "/metrics");
    assert!(status.contains(" 200"), "{status}");
    for name in &made_up {
        assert!(!text.contains(name.as_str()), "{name} became a label value");
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("c2c_control_requests_total{"))
        .count();
    assert!(series < 40, "{series} request series:\n{text}");
    // The metrics listener serves /metrics and nothing else.
    let (status, _) = get(ns, CONTROL_METRICS, "/v1/apps");
    assert!(status.contains(" 404"), "{status}");
    let (status, _) = get(ns, "192.0.2.1:9101", "/debug");
    assert!(status.contains(" 404"), "{status}");
}
