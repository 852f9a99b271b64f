//! The cell DNS beside the resolvers people run (`bench/dns.sh`): one zone, written for each
//! server from one source, and the cell agent's DNS server serving it.
//!
//! `dns_bench files DIR [APPS INSTANCES]`: writes `hosts` (dnsmasq), `unbound.conf` (its zone
//! part), `queries` (dnsperf: every name, and 10% names that do not exist) and `zone.json`.
//! `dns_bench serve ADDR DIR`: serves `DIR/zone.json` with the agent's DNS code (its own thread,
//! as in the agent) until killed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use c2c_shim::dns::{Budget, Zone};

/// `APPS` apps with `INSTANCES` instances between them (spread round-robin over 4 cells'
/// subnets): each app's route and each instance's `<index>.<route>` name.
fn zone(apps: usize, instances: usize) -> Zone {
    let mut names: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut per_app = vec![0u32; apps];
    for i in 0..instances {
        let app = i % apps;
        let index = per_app[app];
        per_app[app] += 1;
        let ip = Ipv4Addr::new(10, 255, (i % 4) as u8, 2 + (i / 4) as u8);
        let route = format!("app{app}.apps.internal");
        names
            .entry(format!("{index}.{route}"))
            .or_default()
            .push(ip);
        names.entry(route).or_default().push(ip);
    }
    Zone {
        domains: BTreeSet::from(["apps.internal".to_string()]),
        names,
    }
}

fn files(dir: &Path, apps: usize, instances: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let z = zone(apps, instances);
    let mut hosts = String::new();
    let mut unbound = String::from("    local-zone: \"apps.internal.\" static\n");
    let mut queries = String::new();
    let mut records = 0;
    for (name, ips) in &z.names {
        for ip in ips {
            records += 1;
            let _ = writeln!(hosts, "{ip} {name}");
            let _ = writeln!(unbound, "    local-data: \"{name}. 0 IN A {ip}\"");
        }
    }
    // Every name once, and one in ten that does not exist (NXDOMAIN from each server).
    for (k, name) in z.names.keys().enumerate() {
        let _ = writeln!(queries, "{name} A");
        if k % 9 == 8 {
            let _ = writeln!(queries, "missing{k}.apps.internal A");
        }
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(dir.join("unbound-zone.conf"), unbound)?;
    std::fs::write(dir.join("queries"), queries)?;
    let json = serde_json::json!({
        "domains": z.domains,
        "names": z.names,
    });
    std::fs::write(dir.join("zone.json"), json.to_string())?;
    eprintln!(
        "zone: {} names, {records} A records, {} queries in the file",
        z.names.len(),
        std::fs::read_to_string(dir.join("queries"))?
            .lines()
            .count()
    );
    Ok(())
}

fn serve(addr: &str, dir: &Path) -> Result<(), String> {
    let raw = std::fs::read(dir.join("zone.json")).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    let z = Zone {
        domains: serde_json::from_value(v["domains"].clone()).map_err(|e| e.to_string())?,
        names: serde_json::from_value(v["names"].clone()).map_err(|e| e.to_string())?,
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(z));
    c2c_shim::dns::spawn(
        addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        rx,
        vec![],
        Budget::default(),
    )?;
    println!("serving {addr}");
    loop {
        std::thread::park();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("files") if args.len() >= 3 => {
            let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
            files(Path::new(&args[2]), n(3, 20), n(4, 70)).map_err(|e| e.to_string())
        }
        Some("serve") if args.len() == 4 => serve(&args[2], Path::new(&args[3])),
        _ => Err("usage: dns_bench files DIR [APPS INSTANCES] | dns_bench serve ADDR DIR".into()),
    };
    if let Err(e) = r {
        eprintln!("dns_bench: {e}");
        std::process::exit(1);
    }
}
