//! What issue #23's checks cost (run by bench/checks.sh, as root, once per build so the build
//! before them is measured in the same run): on a real two-cell platform,
//! - TCP connect latency from the underlay through a host port, with 1 host port on the cell
//!   and with 1,000 (rounds alternate 1, 1,000, 1, 1,000 on the same cell and container);
//! - TCP connect latency across cells under a policy (every VXLAN packet now has its tag and
//!   inner source checked against the sending cell's instances);
//! - policy add -> enforced on the destination cell, and remove -> enforced.
//!
//! Prints one line of `key=value` per measure, for bench/checks.sh to put side by side.

use std::net::{Ipv4Addr, SocketAddr};

use c2c_integration::benchkit::{add_remove_rounds, api, connect_us, pct, until};
use c2c_integration::testbed::Platform;
use c2c_integration::topo::*;
use hyper::Method;
use serde_json::json;

const CELL1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The cell's CNI config for `index` of `app` (placed as `guid`) with `mappings`.
fn conf(p: &Platform, app: &str, index: u32, guid: &str, mappings: serde_json::Value) -> String {
    // The agent writes a network list; a runtime hands the plugin its one config.
    let mut conf: serde_json::Value =
        c2c_api::cni_list::read_plugin_config(&p.cni_conf_path(1)).unwrap();
    conf["runtimeConfig"] = json!({
        "app_guid": p.app_guid(app), "instance_index": index, "instance_guid": guid,
        "portMappings": mappings,
    });
    conf.to_string()
}

fn summary(name: &str, v: &mut [f64]) {
    println!(
        "{name} p50={:.1} p99={:.1} n={}",
        pct(v, 0.5),
        pct(v, 0.99),
        v.len()
    );
}

/// `n` connects to `to` from inside `ns` (µs each), after 100 unmeasured ones.
fn connects_from(ns: &Netns, to: SocketAddr, n: usize) -> Vec<f64> {
    spawn_in(&ns.path(), move || {
        for _ in 0..100 {
            connect_us(to);
        }
        (0..n).map(|_| connect_us(to)).collect::<Vec<f64>>()
    })
    .join()
    .unwrap()
}

fn main() {
    let arg = |n: usize, default: usize| -> usize {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, connects) = (arg(1, 50), arg(2, 2000));
    clean_up_on_panic();
    let p = Platform::start(2);
    let u = &p.underlay.ns;
    for app in ["web", "extra", "appa", "appb"] {
        p.c2c(&["create-app", app]);
    }
    // web/0 on cell1 maps 18080 -> 8080.
    let guid = p.place(1, "web", 0);
    let web = Netns::new("ctr");
    let web_conf = conf(
        &p,
        "web",
        0,
        &guid,
        json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]),
    );
    let ip = add(&p.cells[0].ns, &web, "web-0", &web_conf);
    serve(&web, SocketAddr::new(ip.into(), 8080), "web");
    let to_host_port = SocketAddr::new(CELL1.into(), 18080);
    until(u, to_host_port, true);
    // 999 more on cell1 come and go with a second container.
    let extra_guid = p.place(1, "extra", 0);
    let extra = Netns::new("ctr");
    let many: Vec<_> = (20001..=20999u16)
        .map(|h| json!({"hostPort": h, "containerPort": 8080, "protocol": "tcp"}))
        .collect();
    let extra_conf = conf(&p, "extra", 0, &extra_guid, json!(many));
    // On every address the container gets (each ADD may give another).
    serve(&extra, "0.0.0.0:8080".parse().unwrap(), "extra");
    let extra_path = extra.path();
    let env = |cmd: &'static str| -> [(&'static str, String); 4] {
        [
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "extra-0".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_NETNS", extra_path.display().to_string()),
        ]
    };
    let (mut one, mut thousand) = (vec![], vec![]);
    for round in 0..4 {
        let with_many = round % 2 == 1;
        if with_many {
            let e = env("ADD");
            let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let out = cni(&p.cells[0].ns, &e, &extra_conf);
            assert!(out.ok, "ADD with 999 host ports: {}", out.json);
            // In force: the last of the 999 reaches the container.
            until(u, SocketAddr::new(CELL1.into(), 20999), true);
        } else if round > 0 {
            let e = env("DEL");
            let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert!(cni(&p.cells[0].ns, &e, &extra_conf).ok);
            until(u, SocketAddr::new(CELL1.into(), 20999), false);
        }
        // Settle, warm up, then measure.
        std::thread::sleep(std::time::Duration::from_secs(1));
        let lat = connects_from(u, to_host_port, connects);
        if with_many {
            thousand.extend(lat);
        } else {
            one.extend(lat);
        }
    }
    summary("host_port_connect_us_1", &mut one);
    summary("host_port_connect_us_1000", &mut thousand);

    // Across cells under a policy: appa on cell1 -> appb on cell2.
    let (a, _) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    serve(&b, SocketAddr::new(ip_b.into(), 7000), "b");
    let (ga, gb) = (p.app_guid("appa"), p.app_guid("appb"));
    let policy = |port: u16| json!({"policies": [{"source": {"id": ga}, "destination": {"id": gb, "protocol": "tcp", "ports": {"start": port, "end": port}}}]});
    let post = "/networking/v1/external/policies";
    api(&p, Method::POST, post, Some(policy(8080)));
    let to_b = SocketAddr::new(ip_b.into(), 8080);
    until(&a, to_b, true);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut cross = connects_from(&a, to_b, connects);
    summary("cross_cell_connect_us", &mut cross);

    let to_7000 = SocketAddr::new(ip_b.into(), 7000);
    let (mut add_ms, mut del_ms) = add_remove_rounds(&p, &a, to_7000, &policy(7000), rounds);
    summary("policy_add_to_enforced_ms", &mut add_ms);
    summary("policy_remove_to_enforced_ms", &mut del_ms);
}
