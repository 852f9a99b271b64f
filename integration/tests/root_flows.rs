//! ROOT TEST: `c2c flows`, end to end with the real binaries: agents run with `--log-c2c`;
//! appa on cell1, appb on cell2. A denied c2c connect (logged on appb's cell) and, after a
//! policy, an allowed one, and an egress deny (logged on appa's cell) reach control in the
//! cells' reports and come back through `c2c flows`, merged across cells, narrowed by
//! `--from`, `--to` and `--verdict`, each named with the cell control took it from. Run as root
//! (CI does); `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use serde_json::Value;

/// `c2c flows --json ARGS`: the flows.
fn flows(p: &Platform, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["flows", "--json"];
    a.extend_from_slice(args);
    let out: Value = serde_json::from_str(&p.c2c(&a)).expect("flows --json is JSON");
    out["flows"].as_array().cloned().unwrap_or_default()
}

/// Waits for a flow that `args` selects and `f` matches.
fn reported(p: &Platform, what: &str, args: &[&str], f: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(15), || {
        flows(p, args).into_iter().find(|l| f(l))
    })
    .unwrap_or_else(|| panic!("no flow for {what}: {:?}", flows(p, &[])))
}

#[test]
fn root_flows_from_every_cell_come_back_through_control() {
    if !require_root() {
        return;
    }
    let p = Platform::start_with(2, &["--log-c2c"]);
    let (a, ip_a, _b, ip_b) = p.appa_to_appb();
    let to_b = SocketAddr::new(ip_b.into(), 8080);

    // The deny: logged on cell2, reported to control, named with both apps and the cell.
    let deny = reported(&p, "the denied connect", &["--to", "appb"], |f| {
        f["kind"] == "c2c" && f["verdict"] == "deny"
    });
    assert_eq!(deny["cell"], "cell2", "{deny}");
    assert_eq!(deny["source"]["app"], "appa");
    assert_eq!(deny["source"]["ip"], ip_a.to_string());
    assert_eq!(deny["destination"]["port"], 8080);
    assert_eq!(deny["destination"]["app_guid"], p.app_guid("appb"));

    p.allow("appa", "appb", "tcp", "8080");
    wait_until("the policy", Duration::from_secs(15), || {
        fetch(&a, to_b).is_ok()
    });
    let accept = reported(&p, "the allowed connect", &["--verdict", "accept"], |f| {
        f["kind"] == "c2c" && f["destination"]["app"] == "appb"
    });
    assert_eq!(
        (accept["cell"].as_str(), accept["source"]["app"].as_str()),
        (Some("cell2"), Some("appa"))
    );

    // Egress, refused on appa's own cell: another cell's report, in the same answer.
    let outside = p.underlay.cell(200);
    let host = Ipv4Addr::new(192, 0, 2, 200);
    serve(&outside.ns, SocketAddr::new(host.into(), 8000), "ext");
    assert!(fetch(&a, SocketAddr::new(host.into(), 8000)).is_err());
    let egress = reported(&p, "the egress deny", &["--from", "appa"], |f| {
        f["kind"] == "egress"
    });
    assert_eq!(
        (egress["cell"].as_str(), egress["verdict"].as_str()),
        (Some("cell1"), Some("deny"))
    );
    let cells: std::collections::BTreeSet<String> = flows(&p, &[])
        .iter()
        .filter_map(|f| f["cell"].as_str().map(String::from))
        .collect();
    assert_eq!(cells, ["cell1".to_string(), "cell2".into()].into());

    // Narrowing: only what was asked for.
    let denied = flows(&p, &["--verdict", "denied"]);
    assert!(!denied.is_empty() && denied.iter().all(|f| f["verdict"] == "deny"));
    let to_b_only = flows(&p, &["--to", "appb"]);
    assert!(to_b_only.iter().all(|f| f["destination"]["app"] == "appb"));
    assert!(flows(&p, &["--from", "appb"]).is_empty());

    // As a person reads them: one line each, as hubble's.
    let text = p.c2c(&["flows", "--from", "appa", "--to", "appb"]);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("appa ({ip_a}:"))
                && l.contains("DENIED (no policy; cell2)")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("-> appb ({ip_b}:8080)"))
                && l.contains("ALLOWED (policy; cell2)")),
        "{text}"
    );
}
