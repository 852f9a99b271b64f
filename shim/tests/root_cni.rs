//! ROOT TESTS: `c2c-cni` driven exactly as a runtime drives it, against network namespaces the
//! tests create (see support/). Run as root (CI does); `C2C_SKIP_ROOT_TESTS=1` skips them.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use c2c_integration::topo::*;

const SUBNET: &str = "10.255.7.0/24";

fn env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
    ]
}

#[test]
fn root_add_check_del_follow_the_spec() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf(SUBNET, data.path());
    let cell = Netns::new("cell");
    let ctr = Netns::new("ctr");
    let netns = ctr.path().to_str().unwrap().to_string();

    let out = cni(&cell, &env("ADD", "c1", &netns), &conf);
    assert!(out.ok, "{} {}", out.json, out.stderr);
    let r = &out.json;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["ips"][0]["address"], "10.255.7.1/32");
    assert_eq!(r["ips"][0]["gateway"], "169.254.0.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], netns.as_str());
    assert_eq!(r["interfaces"][0]["name"], "s-0aff0701");
    assert!(r["interfaces"][0].get("sandbox").is_none());
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["dns"]["nameservers"][0], "169.254.0.2");
    // No ARP needed on either side; IPv6 off on both ends.
    assert!(ctr
        .ip(&["neigh", "show", "dev", "eth0"])
        .contains("169.254.0.1 lladdr aa:aa:0a:ff:07:01 PERMANENT"));
    assert!(cell
        .ip(&["neigh", "show", "dev", "s-0aff0701"])
        .contains("10.255.7.1 lladdr ee:ee:0a:ff:07:01 PERMANENT"));
    assert_eq!(
        ctr.exec("cat", &["/proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
            .trim(),
        "1"
    );
    assert_eq!(
        cell.exec("cat", &["/proc/sys/net/ipv6/conf/s-0aff0701/disable_ipv6"])
            .trim(),
        "1"
    );
    assert!(ctr.ip(&["link", "show", "eth0"]).contains("mtu 1450"));

    // The container really reaches its cell through the link-local gateway, with its own IP.
    serve(&cell, "169.254.0.1:7000".parse().unwrap(), "cell");
    assert_eq!(
        fetch(&ctr, "169.254.0.1:7000".parse().unwrap()).unwrap(),
        "cell saw 10.255.7.1"
    );

    // Metadata for the agent.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("containers/c1.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            rec["ip"].as_str(),
            rec["app_guid"].as_str(),
            rec["instance_index"].as_u64()
        ),
        (Some("10.255.7.1"), Some("app-guid-1"), Some(0))
    );

    // CHECK passes as is, and with the prevResult a runtime passes.
    assert!(cni(&cell, &env("CHECK", "c1", &netns), &conf).ok);
    let mut with_prev: serde_json::Value = serde_json::from_str(&conf).unwrap();
    with_prev["prevResult"] = r.clone();
    assert!(cni(&cell, &env("CHECK", "c1", &netns), &with_prev.to_string()).ok);
    // CHECK notices what a user would: the host veth going away.
    cell.ip(&["link", "set", "s-0aff0701", "down"]);
    let bad = cni(&cell, &env("CHECK", "c1", &netns), &conf);
    assert!(!bad.ok);
    assert_eq!(bad.json["code"], 101, "{}", bad.json);
    assert!(bad.json["details"].as_str().unwrap().contains("down"));
    cell.ip(&["link", "set", "s-0aff0701", "up"]);
    let unknown = cni(&cell, &env("CHECK", "nobody", &netns), &conf);
    assert_eq!(unknown.json["code"], 3);

    // DEL removes everything; repeating it, or for a container never added, succeeds.
    let del = cni(&cell, &env("DEL", "c1", &netns), &conf);
    assert!(del.ok, "{} {}", del.json, del.stderr);
    assert_eq!(del.json, serde_json::Value::Null, "DEL prints nothing");
    assert_eq!(cell.links(), vec!["lo"]);
    assert_eq!(ctr.links(), vec!["lo"]);
    assert!(!data.path().join("containers/c1.json").exists());
    assert!(cni(&cell, &env("DEL", "c1", &netns), &conf).ok);
    assert!(cni(&cell, &env("DEL", "never-added", &netns), &conf).ok);

    // DEL when the namespace is already gone (and without CNI_NETNS) succeeds and frees the IP.
    let ctr2 = Netns::new("ctr");
    let ip = add(&cell, &ctr2, "c2", &conf);
    drop(ctr2);
    let gone = cni(
        &cell,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf,
    );
    assert!(gone.ok, "{} {}", gone.json, gone.stderr);
    let ctr3 = Netns::new("ctr");
    assert_eq!(
        add(&cell, &ctr3, "c3", &conf),
        ip,
        "the freed address is reused"
    );
}

#[test]
fn root_add_failures_leak_nothing() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf(SUBNET, data.path());
    let cell = Netns::new("cell");

    // A namespace that does not exist.
    let out = cni(
        &cell,
        &env("ADD", "c1", "/run/netns/c2ct-does-not-exist"),
        &conf,
    );
    assert!(!out.ok);
    assert_eq!(out.json["code"], 4, "{}", out.json);
    assert!(out.json["details"]
        .as_str()
        .unwrap()
        .contains("c2ct-does-not-exist"));

    // eth0 already taken inside the container.
    let ctr = Netns::new("ctr");
    ctr.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let out = cni(
        &cell,
        &env("ADD", "c2", ctr.path().to_str().unwrap()),
        &conf,
    );
    assert!(!out.ok);
    assert_eq!(out.json["code"], 102, "{}", out.json);
    assert_eq!(cell.links(), vec!["lo"], "no half-made veth left");
    let leases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.path().join("ipam/10.255.7.0_24.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(leases, serde_json::json!({}), "the address went back");

    // A full subnet is a clear error, not a panic: a /30 has 2 container addresses.
    let tiny = c2c_integration::topo::conf("10.255.9.0/30", data.path());
    let (a, b, c) = (Netns::new("ctr"), Netns::new("ctr"), Netns::new("ctr"));
    add(&cell, &a, "t1", &tiny);
    add(&cell, &b, "t2", &tiny);
    let out = cni(&cell, &env("ADD", "t3", c.path().to_str().unwrap()), &tiny);
    assert!(!out.ok);
    assert_eq!(out.json["code"], 11, "{}", out.json);
    assert!(
        out.json["details"]
            .as_str()
            .unwrap()
            .contains("10.255.9.0/30"),
        "{}",
        out.json
    );
}

#[test]
fn root_bad_input_gets_error_json_with_codes() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let good = conf(SUBNET, data.path());
    let cell = Netns::new("cell");
    let ctr = Netns::new("ctr");
    let netns = ctr.path().to_str().unwrap().to_string();
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u64);
    let cases: Vec<Case> = vec![
        (env("ADD", "c1", &netns), "{not json".into(), 6),
        (env("ADD", "c1", &netns), good.replace("1.0.0", "0.4.0"), 1),
        (
            env("ADD", "c1", &netns),
            good.replace("c2c-cni", "bridge"),
            7,
        ),
        (
            env("ADD", "c1", &netns),
            good.replace(SUBNET, "10.9.0.0/24"),
            7,
        ),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &netns),
            ],
            good.clone(),
            4,
        ),
        (
            vec![
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &netns),
            ],
            good.clone(),
            4,
        ),
        (env("ADD", "../../etc", &netns), good.clone(), 4),
        (env("FROB", "c1", &netns), good.clone(), 4),
    ];
    for (e, conf, code) in cases {
        let out = cni(&cell, &e, &conf);
        assert!(!out.ok, "{e:?} {conf} should fail");
        assert_eq!(out.json["code"], code, "{e:?} {conf}: {}", out.json);
        for k in ["cniVersion", "msg", "details"] {
            assert!(out.json[k].is_string(), "{k} missing: {}", out.json);
        }
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert_eq!(cell.links(), vec!["lo"]);
    let v = cni(
        &cell,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(v.ok);
    assert_eq!(
        v.json["supportedVersions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );
}

/// The two verbs of spec 1.1.0: STATUS says whether an ADD would put a container on the
/// overlay; GC tears down every attachment the runtime no longer lists.
#[test]
fn root_status_and_gc_follow_spec_1_1() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // A /30: two container addresses, so "full" is two ADDs away.
    let conf = conf("10.255.7.0/30", data.path()).replace("1.0.0", "1.1.0");
    let cell = Netns::new("cell");
    let status = || cni(&cell, &[("CNI_COMMAND", "STATUS")], &conf);

    // No VTEP yet (no agent has run on this cell): not available, and why.
    let s = status();
    assert!(!s.ok);
    assert_eq!(s.json["code"], 50, "{}", s.json);
    assert!(
        s.json["details"].as_str().unwrap().contains("silk-vtep"),
        "{}",
        s.json
    );
    cell.ip(&[
        "link",
        "add",
        "silk-vtep",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "4789",
    ]);
    let s = status();
    assert!(s.ok, "{} {}", s.json, s.stderr);
    assert_eq!(s.json, serde_json::Value::Null, "STATUS prints nothing");
    // STATUS is not part of 1.0.0.
    let old = cni(
        &cell,
        &[("CNI_COMMAND", "STATUS")],
        &conf.replace("1.1.0", "1.0.0"),
    );
    assert_eq!(old.json["code"], 1, "{}", old.json);

    let (c1, c2, c3) = (Netns::new("ctr"), Netns::new("ctr"), Netns::new("ctr"));
    let ip1 = add(&cell, &c1, "c1", &conf);
    let ip2 = add(&cell, &c2, "c2", &conf);
    let s = status();
    assert_eq!(s.json["code"], 50, "subnet full: {}", s.json);
    assert!(s.json["details"].as_str().unwrap().contains("leased"));

    let gc = |valid: serde_json::Value| {
        let mut c: serde_json::Value = serde_json::from_str(&conf).unwrap();
        c["cni.dev/valid-attachments"] = valid;
        cni(&cell, &[("CNI_COMMAND", "GC")], &c.to_string())
    };
    // c1 is still the runtime's; c2 is not: its veth, record and address go.
    let out = gc(serde_json::json!([{"containerID": "c1", "ifname": "eth0"}]));
    assert!(out.ok, "{} {}", out.json, out.stderr);
    assert_eq!(out.json, serde_json::Value::Null, "GC prints nothing");
    assert_eq!(c2.links(), vec!["lo"]);
    assert!(!data.path().join("containers/c2.json").exists());
    assert!(data.path().join("containers/c1.json").exists());
    let mut links = cell.links();
    links.sort();
    assert_eq!(
        links,
        vec![
            "lo".to_string(),
            c2c_shim::cni::host_veth_name(ip1),
            "silk-vtep".into()
        ]
    );
    assert!(status().ok, "an address is free again");
    assert_eq!(add(&cell, &c3, "c3", &conf), ip2, "c2's address is reused");
    // Running it again with the same list changes nothing for listed attachments.
    let out = gc(serde_json::json!([
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c3", "ifname": "eth0"}
    ]));
    assert!(out.ok, "{}", out.json);
    assert!(c1.links().contains(&"eth0".to_string()));
    assert!(c3.links().contains(&"eth0".to_string()));
    // An attachment is its container id *and* interface name: c1 listed on eth1 is stale.
    let out = gc(serde_json::json!([{"containerID": "c1", "ifname": "eth1"}]));
    assert!(out.ok, "{}", out.json);
    assert_eq!(c1.links(), vec!["lo"]);
    assert_eq!(c3.links(), vec!["lo"]);
    assert_eq!(cell.links(), vec!["lo", "silk-vtep"]);
}

#[test]
fn root_containers_on_one_cell_reach_each_other() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf(SUBNET, data.path());
    let cell = Netns::new("cell");
    let (a, b) = (Netns::new("ctr"), Netns::new("ctr"));
    let ip_a = add(&cell, &a, "a", &conf);
    let ip_b = add(&cell, &b, "b", &conf);
    serve(&b, SocketAddr::new(ip_b.into(), 8080), "b");
    assert_eq!(
        fetch(&a, SocketAddr::new(ip_b.into(), 8080)).unwrap(),
        format!("b saw {ip_a}")
    );
}

/// 200 ADDs at once, each its own process and namespace, as a busy cell would see: all succeed
/// with distinct addresses; then 200 DELs at once leave no lease and no link.
#[test]
fn root_200_parallel_adds_get_distinct_addresses() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf(SUBNET, data.path());
    let cell = Netns::new("cell");
    let ctrs: Vec<Netns> = (0..200).map(|_| Netns::new("p")).collect();
    let ids: Vec<String> = (0..200).map(|i| format!("par-{i}")).collect();
    let children: Vec<_> = ctrs
        .iter()
        .zip(&ids)
        .map(|(ctr, id)| {
            cni_command(&cell, &env("ADD", id, ctr.path().to_str().unwrap()))
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ips = BTreeSet::new();
    for (child, id) in children.into_iter().zip(&ids) {
        let out = finish(child, &conf);
        assert!(out.ok, "ADD {id}: {} {}", out.json, out.stderr);
        assert!(
            ips.insert(result_ip(&out.json)),
            "{id} got an address someone else has"
        );
    }
    assert_eq!(ips.len(), 200);
    let host_veths = cell
        .links()
        .into_iter()
        .filter(|l| l.starts_with("s-"))
        .count();
    assert_eq!(host_veths, 200);

    let children: Vec<_> = ctrs
        .iter()
        .zip(&ids)
        .map(|(ctr, id)| {
            cni_command(&cell, &env("DEL", id, ctr.path().to_str().unwrap()))
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = finish(child, &conf);
        assert!(out.ok, "{} {}", out.json, out.stderr);
    }
    assert_eq!(cell.links(), vec!["lo"]);
    let leases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.path().join("ipam/10.255.7.0_24.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(leases, serde_json::json!({}));
}

/// ADD processes killed with SIGKILL at every point of their run leave a store that still
/// works: no address is leased twice, and the runtime's retry (ADD again) or cleanup (DEL)
/// recovers each container.
#[test]
fn root_kill_9_during_add_then_recover() {
    if !require_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let conf = conf(SUBNET, data.path());
    let cell = Netns::new("cell");
    let ctrs: Vec<Netns> = (0..40).map(|_| Netns::new("k")).collect();
    for (i, ctr) in ctrs.iter().enumerate() {
        let id = format!("kill-{i}");
        let mut child = cni_command(&cell, &env("ADD", &id, ctr.path().to_str().unwrap()))
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        // Spread the kills over the plugin's whole run (it takes a few ms).
        std::thread::sleep(Duration::from_micros(500 * (i as u64 % 20)));
        let _ = child.kill();
        let _ = child.wait();
    }
    // The store is intact and no address is held by two containers.
    let leases: std::collections::BTreeMap<String, Ipv4Addr> = serde_json::from_slice(
        &std::fs::read(data.path().join("ipam/10.255.7.0_24.json"))
            .unwrap_or_else(|_| b"{}".to_vec()),
    )
    .unwrap();
    let distinct: BTreeSet<_> = leases.values().collect();
    assert_eq!(
        distinct.len(),
        leases.len(),
        "an address is leased twice: {leases:?}"
    );
    let stale_veths = cell
        .links()
        .into_iter()
        .filter(|l| l.starts_with("s-"))
        .count();
    eprintln!(
        "after 40 kills: {} leases, {stale_veths} host veths left behind",
        leases.len()
    );

    // Recovery: even ids are retried (ADD again), odd ones cleaned up (DEL) then added.
    let mut ips = BTreeSet::new();
    for (i, ctr) in ctrs.iter().enumerate() {
        let id = format!("kill-{i}");
        if i % 2 == 1 {
            let out = cni(&cell, &env("DEL", &id, ctr.path().to_str().unwrap()), &conf);
            assert!(out.ok, "DEL {id}: {} {}", out.json, out.stderr);
        }
        let ip = add(&cell, ctr, &id, &conf);
        if let Some(prev) = leases.get(&id) {
            if i % 2 == 0 {
                assert_eq!(*prev, ip, "a retried ADD keeps the address it leased");
            }
        }
        assert!(ips.insert(ip));
    }
    let host_veths = cell
        .links()
        .into_iter()
        .filter(|l| l.starts_with("s-"))
        .count();
    assert_eq!(host_veths, 40, "one host veth per container, no leftovers");
    for ctr in &ctrs {
        let links: BTreeSet<String> = ctr.links().into_iter().collect();
        assert_eq!(
            links,
            BTreeSet::from(["eth0".to_string(), "lo".to_string()])
        );
    }
}

use std::io::Write;
