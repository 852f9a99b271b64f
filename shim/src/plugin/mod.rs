//! The `c2c-cni` plugin's commands (ADD, DEL, CHECK, VERSION; STATUS and GC from 1.1.0) over the environment and stdin a
//! CNI runtime gives it. The binary is a thin wrapper that prints what [`run`] returns.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{json, Value};

use crate::cni::{
    code, has_status_and_gc, parse_config, version_result, Attachment, Checked, CniError, GATEWAY,
};
use crate::ipam::{Ipam, IpamError};
use crate::netlink::{fmt_mac, link_mtu, Netlink};
use crate::store::{ContainerRecord, Store, StoreError};
use crate::veth::{self, Plan, WireError};

/// MTU when neither the config nor the VTEP gives one: a 1500 underlay minus VXLAN's 50.
pub const FALLBACK_MTU: u32 = 1450;

mod env;
pub use env::*;

/// Runs one plugin invocation. `Ok(Some(json))` is printed on stdout; `Ok(None)` prints nothing.
pub fn run(
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    // VERSION needs no valid network config, only (optionally) its cniVersion.
    if get_env("CNI_COMMAND").as_deref() == Some("VERSION") {
        let v = serde_json::from_slice::<Value>(stdin).ok();
        let requested = v
            .as_ref()
            .and_then(|v| v.get("cniVersion"))
            .and_then(Value::as_str);
        return Ok(Some(version_result(requested)));
    }
    // Errors about the environment are reported in the config's version when it has a usable one.
    let conf = parse_config(stdin);
    let version = conf
        .as_ref()
        .map(|c| c.conf.cni_version.clone())
        .unwrap_or_else(|_| newest().into());
    let env = parse_env(&get_env, &version)?;
    let conf = conf?;
    if matches!(env.command, Command::Status | Command::Gc) && !has_status_and_gc(&version) {
        return Err(CniError::new(
            &version,
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("STATUS and GC need cniVersion 1.1.0; the config has {version}"),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                &version,
                code::IO_FAILURE,
                "cannot start runtime",
                e.to_string(),
            )
        })?;
    rt.block_on(async {
        let host = Netlink::open().map_err(|e| {
            CniError::new(
                &version,
                code::IO_FAILURE,
                "cannot open netlink socket",
                e.to_string(),
            )
        })?;
        match env.command {
            Command::Add => add(&host, &conf, &env).await.map(Some),
            Command::Del => del(&host, &conf, &env).await.map(|()| None),
            Command::Check => check(&host, &conf, &env).await.map(|()| None),
            Command::Status => status(&host, &conf).await.map(|()| None),
            Command::Gc => gc(&host, &conf).await.map(|()| None),
            Command::Version => unreachable!("handled above"),
        }
    })
}

fn ipam_error(version: &str, e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted(subnet) => CniError::new(
            version,
            code::TRY_AGAIN_LATER,
            "no free overlay address",
            format!("every address of the cell's subnet {subnet} is leased; delete a container or give the cell a larger subnet"),
        ),
        IpamError::BadContainerId(_) => CniError::new(version, code::INVALID_ENV, "invalid CNI environment", e.to_string()),
        IpamError::Io { .. } | IpamError::Corrupt { .. } => {
            CniError::new(version, code::IO_FAILURE, "ipam store failure", e.to_string())
        }
    }
}

fn wire_error(version: &str, e: WireError) -> CniError {
    match &e {
        WireError::Netns(_) => CniError::new(
            version,
            code::INVALID_ENV,
            "cannot use CNI_NETNS",
            e.to_string(),
        ),
        WireError::IfnameTaken { .. } => CniError::new(
            version,
            code::INTERFACE_EXISTS,
            "interface already exists",
            e.to_string(),
        ),
        WireError::Check(_) => CniError::new(
            version,
            code::CHECK_FAILED,
            "container networking check failed",
            e.to_string(),
        ),
        WireError::Netlink(_) | WireError::Sysctl { .. } | WireError::Socket(_) => CniError::new(
            version,
            code::NETLINK_FAILURE,
            "configuring container networking failed",
            e.to_string(),
        ),
    }
}

fn store_error(version: &str, e: StoreError) -> CniError {
    CniError::new(
        version,
        code::IO_FAILURE,
        "container store failure",
        e.to_string(),
    )
}

/// The MTU for container links: configured, else the VTEP's (underlay - 50), else 1450.
async fn mtu(host: &Netlink, conf: &Checked) -> u32 {
    if let Some(m) = conf.conf.mtu {
        return m;
    }
    match host.link(&conf.conf.vtep_name).await {
        Ok(Some(l)) => link_mtu(&l).unwrap_or(FALLBACK_MTU),
        _ => FALLBACK_MTU,
    }
}

async fn add(host: &Netlink, conf: &Checked, env: &Env) -> Result<Value, CniError> {
    let version = conf.conf.cni_version.as_str();
    let netns = env.netns.as_deref().unwrap_or_default();
    // Fail before leasing anything if the namespace is not usable.
    crate::netns::open(Path::new(netns)).map_err(|e| wire_error(version, e.into()))?;
    let data_dir = &conf.conf.data_dir;
    let ipam = Ipam::open(data_dir, conf.subnet).map_err(|e| ipam_error(version, e))?;
    let ip = ipam
        .allocate(&env.container_id)
        .map_err(|e| ipam_error(version, e))?;
    let plan = Plan::new(ip, &env.ifname, mtu(host, conf).await);
    let meta = app_meta(conf, env);
    let port_mappings = match port_mappings(conf, data_dir, &env.container_id) {
        Ok(m) => m,
        Err(e) => {
            let _ = ipam.release(&env.container_id);
            return Err(CniError::new(
                version,
                code::INVALID_CONFIG,
                "invalid portMappings",
                e,
            ));
        }
    };
    let record = ContainerRecord {
        container_id: env.container_id.clone(),
        ip,
        netns: netns.to_string(),
        ifname: env.ifname.clone(),
        host_veth: plan.host_veth.clone(),
        app_guid: meta.app_guid,
        instance_guid: meta.instance_guid,
        instance_index: meta.instance_index,
        cert_dir: meta.cert_dir,
        port_mappings,
        sidecar: false,
    };
    let wired = async {
        veth::add(host, Path::new(netns), &plan)
            .await
            .map_err(|e| wire_error(version, e))?;
        Store::new(data_dir)
            .put(&record)
            .map_err(|e| store_error(version, e))
    }
    .await;
    if let Err(e) = wired {
        // Give the address back so a failed ADD leaks nothing (veth::add cleaned its links).
        let _ = veth::del(host, ip).await;
        let _ = ipam.release(&env.container_id);
        return Err(e);
    }
    Ok(add_result(version, &plan, netns, &conf.conf.dns))
}

/// The ADD result (SPEC.md "Success"): the two ends, the /32 with its gateway, the default
/// route, and the cell's nameservers.
pub fn add_result(version: &str, plan: &Plan, netns: &str, dns: &[std::net::IpAddr]) -> Value {
    let mut result = json!({
        "cniVersion": version,
        "interfaces": [
            {"name": plan.host_veth, "mac": fmt_mac(plan.host_mac), "mtu": plan.mtu},
            {"name": plan.ifname, "mac": fmt_mac(plan.container_mac), "mtu": plan.mtu, "sandbox": netns},
        ],
        "ips": [{"address": format!("{}/32", plan.ip), "gateway": GATEWAY.to_string(), "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY.to_string()}],
    });
    if !dns.is_empty() {
        result["dns"] = json!({"nameservers": dns});
    }
    result
}

async fn del(host: &Netlink, conf: &Checked, env: &Env) -> Result<(), CniError> {
    let version = conf.conf.cni_version.as_str();
    let data_dir = &conf.conf.data_dir;
    let ipam = Ipam::open(data_dir, conf.subnet).map_err(|e| ipam_error(version, e))?;
    let leased = ipam
        .leases()
        .map_err(|e| ipam_error(version, e))?
        .get(&env.container_id)
        .copied();
    teardown(
        host,
        &Store::new(data_dir),
        &ipam,
        &env.container_id,
        leased,
    )
    .await
    .map_err(|e| e.into_cni(version))
}

/// What tearing one container down failed on.
enum Teardown {
    Wire(WireError),
    Store(StoreError),
    Ipam(IpamError),
}

impl Teardown {
    fn into_cni(self, version: &str) -> CniError {
        match self {
            Teardown::Wire(e) => wire_error(version, e),
            Teardown::Store(e) => store_error(version, e),
            Teardown::Ipam(e) => ipam_error(version, e),
        }
    }
}

/// Removes one container's links, record and lease (DEL, and GC of a stale attachment).
/// The address is known from the record, or from the lease when ADD died before writing it.
async fn teardown(
    host: &Netlink,
    store: &Store,
    ipam: &Ipam,
    container_id: &str,
    leased: Option<Ipv4Addr>,
) -> Result<(), Teardown> {
    let recorded = store.get(container_id).ok().flatten().map(|r| r.ip);
    for ip in recorded
        .into_iter()
        .chain(leased)
        .collect::<std::collections::BTreeSet<Ipv4Addr>>()
    {
        veth::del(host, ip).await.map_err(Teardown::Wire)?;
    }
    store.remove(container_id).map_err(Teardown::Store)?;
    // Last, so the address is not handed out while its links still exist.
    ipam.release(container_id).map_err(Teardown::Ipam)?;
    Ok(())
}

/// STATUS: ready when an ADD would succeed and the container would be on the overlay: the
/// data dir is usable, the subnet has a free address, and the cell's VTEP exists (c2c-agent
/// creates it along with the policy rules; before that a container would be unprotected).
async fn status(host: &Netlink, conf: &Checked) -> Result<(), CniError> {
    let version = conf.conf.cni_version.as_str();
    let unavailable = |details: String| {
        CniError::new(
            version,
            code::PLUGIN_NOT_AVAILABLE,
            "plugin not available",
            details,
        )
    };
    let leases = Ipam::open(&conf.conf.data_dir, conf.subnet)
        .and_then(|i| i.leases())
        .map_err(|e| unavailable(e.to_string()))?;
    if crate::ipam::next_free(&conf.subnet, leases.values()).is_none() {
        return Err(unavailable(format!(
            "every address of the cell's subnet {} is leased",
            conf.subnet
        )));
    }
    match host.link(&conf.conf.vtep_name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(unavailable(format!(
            "the cell's VTEP {} does not exist yet (c2c-agent creates it when it starts)",
            conf.conf.vtep_name
        ))),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// GC: tears down every container of ours the runtime did not list in
/// `cni.dev/valid-attachments`, going on past failures and reporting them all at the end.
async fn gc(host: &Netlink, conf: &Checked) -> Result<(), CniError> {
    let version = conf.conf.cni_version.as_str();
    let valid: std::collections::BTreeSet<Attachment> = conf
        .conf
        .valid_attachments
        .iter()
        .chain(&conf.conf.attachments)
        .flatten()
        .cloned()
        .collect();
    let data_dir = &conf.conf.data_dir;
    let store = Store::new(data_dir);
    let ipam = Ipam::open(data_dir, conf.subnet).map_err(|e| ipam_error(version, e))?;
    let leases = ipam.leases().map_err(|e| ipam_error(version, e))?;
    let (records, _) = store.list().map_err(|e| store_error(version, e))?;
    let ifname_of: std::collections::BTreeMap<&str, &str> = records
        .iter()
        .map(|r| (r.container_id.as_str(), r.ifname.as_str()))
        .collect();
    // A lease without a record is an ADD that died before finishing: stale unless listed.
    let stale: std::collections::BTreeSet<&str> = leases
        .keys()
        .map(String::as_str)
        .chain(ifname_of.keys().copied())
        .filter(|id| match ifname_of.get(id) {
            Some(ifname) => !valid.contains(&Attachment {
                container_id: id.to_string(),
                ifname: ifname.to_string(),
            }),
            None => !valid.iter().any(|a| a.container_id == *id),
        })
        .collect();
    let mut failed = vec![];
    for id in stale {
        if let Err(e) = teardown(host, &store, &ipam, id, leases.get(id).copied()).await {
            failed.push(format!("{id}: {}", e.into_cni(version)));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            version,
            code::IO_FAILURE,
            "garbage collection left some attachments",
            failed.join("; "),
        ))
    }
}

async fn check(host: &Netlink, conf: &Checked, env: &Env) -> Result<(), CniError> {
    let version = conf.conf.cni_version.as_str();
    let data_dir = &conf.conf.data_dir;
    let rec = Store::new(data_dir)
        .get(&env.container_id)
        .map_err(|e| store_error(version, e))?
        .ok_or_else(|| {
            CniError::new(
                version,
                code::UNKNOWN_CONTAINER,
                "unknown container",
                format!("no ADD recorded for container {}", env.container_id),
            )
        })?;
    let leased = Ipam::open(data_dir, conf.subnet)
        .and_then(|i| i.leases())
        .map_err(|e| ipam_error(version, e))?
        .get(&env.container_id)
        .copied();
    let failed = |details: String| {
        CniError::new(
            version,
            code::CHECK_FAILED,
            "container networking check failed",
            details,
        )
    };
    if leased != Some(rec.ip) {
        return Err(failed(format!(
            "container {} holds no lease for {} (lease: {leased:?})",
            env.container_id, rec.ip
        )));
    }
    if let Some(prev) = &conf.conf.prev_result {
        let want = format!("{}/32", rec.ip);
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .is_some_and(|ips| {
                ips.iter()
                    .any(|i| i.get("address").and_then(Value::as_str) == Some(want.as_str()))
            });
        if !listed {
            return Err(failed(format!("prevResult does not list {want}")));
        }
    }
    let netns = env.netns.as_deref().unwrap_or_default();
    let plan = Plan::new(rec.ip, &env.ifname, 0);
    veth::check(host, Path::new(netns), &plan)
        .await
        .map_err(|e| wire_error(version, e))?;
    let missing = crate::rules::missing_host_ports(rec.ip, &rec.port_mappings);
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        return Err(failed(format!(
            "host ports not forwarded (is c2c-agent running?): {}",
            list.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::env::tests::{env, CONF};
    use super::*;

    #[test]
    fn version_needs_no_config_and_errors_carry_the_config_version() {
        let v = run(env(&[("CNI_COMMAND", "VERSION")]), b"")
            .unwrap()
            .unwrap();
        assert_eq!(v["supportedVersions"][0], "1.0.0");
        let e = run(env(&[]), CONF.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code, e.cni_version.as_str()),
            (code::INVALID_ENV, "1.0.0")
        );
    }

    #[test]
    fn add_result_has_spec_fields() {
        let plan = Plan::new("10.255.7.2".parse().unwrap(), "eth0", 1450);
        let r = add_result(
            "1.0.0",
            &plan,
            "/run/netns/x",
            &["10.255.7.0".parse().unwrap()],
        );
        assert_eq!(r["interfaces"][0]["name"], "s-0aff0702");
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(r["interfaces"][1]["mac"], "ee:ee:0a:ff:07:02");
        assert_eq!(r["ips"][0]["address"], "10.255.7.2/32");
        assert_eq!(r["ips"][0]["gateway"], "169.254.0.1");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"]["nameservers"][0], "10.255.7.0");
    }
}
