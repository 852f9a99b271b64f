//! The CNI protocol side of `c2c-cni` (spec 1.0.0 and 1.1.0): the network config it reads on stdin, the
//! environment a runtime sets, and the error object it prints. Pure: no netlink, no files.
//! The plugin's wiring (veth, addresses, routes) builds on this.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ipam::Subnet;

/// CNI versions this plugin speaks, newest last.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// Whether `version` has STATUS and GC (spec 1.1.0 and later).
pub fn has_status_and_gc(version: &str) -> bool {
    version != "1.0.0"
}

/// Well-known CNI error codes (SPEC.md, "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS (1.1.0): the plugin cannot service ADD requests now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific (100+): configuring links, addresses or routes failed.
    pub const NETLINK_FAILURE: u32 = 100;
    /// Plugin-specific: CHECK found the container's networking not as ADD left it.
    pub const CHECK_FAILED: u32 = 101;
    /// Plugin-specific: the interface name is taken inside the container.
    pub const INTERFACE_EXISTS: u32 = 102;
}

/// The error object a plugin prints on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The CNI version of the request (or the newest we speak).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// One of [`code`].
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    pub details: String,
}

impl CniError {
    /// An error for a request of `version`.
    pub fn new(version: &str, code: u32, msg: &str, details: impl Into<String>) -> Self {
        Self {
            cni_version: version.to_string(),
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }
}

/// Our network config (`"type": "c2c-cni"`), with the defaults Cloud Foundry uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetConf {
    /// CNI version of the config.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Must be `c2c-cni`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The whole overlay, default 10.255.0.0/16.
    #[serde(default = "default_overlay")]
    pub overlay_network: String,
    /// This cell's subnet (its lease), e.g. 10.255.7.0/24.
    pub subnet: String,
    /// Where IPAM and the container metadata store live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Container MTU; default underlay MTU - 50 (VXLAN overhead).
    pub mtu: Option<u32>,
    /// Name of the cell's VTEP.
    #[serde(default = "default_vtep")]
    pub vtep_name: String,
    /// Nameservers for containers (the cell's DNS): the spec's `{"nameservers": [...]}` (what
    /// libcni's `NetConf` parses, so runtimes such as podman load the config), or a bare list.
    #[serde(default, deserialize_with = "nameservers")]
    pub dns: Vec<IpAddr>,
    /// Per-attachment values from the runtime (capabilities); we read app metadata here.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
    /// Conventional `args` (`{"cni": {...}}`); app metadata may come here too.
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// The result of the previous ADD (given to CHECK and DEL).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    /// GC (1.1.0): the attachments the runtime still has; everything else of ours is stale.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The same list under an earlier spelling, which libcni sends alongside.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

/// `dns` as the spec's object (`{"nameservers": ["169.254.0.1"]}`) or a bare list of addresses.
fn nameservers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dns {
        Spec {
            #[serde(default)]
            nameservers: Vec<IpAddr>,
        },
        List(Vec<IpAddr>),
    }
    Ok(match Dns::deserialize(d)? {
        Dns::Spec { nameservers } => nameservers,
        Dns::List(l) => l,
    })
}

/// One attachment named in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    /// CNI_CONTAINERID of its ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// CNI_IFNAME of its ADD.
    pub ifname: String,
}

fn default_overlay() -> String {
    "10.255.0.0/16".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/c2c/cni")
}
fn default_vtep() -> String {
    crate::vtep::VTEP_NAME.into()
}

/// A parsed and checked config: the subnet lies inside the overlay.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The raw config.
    pub conf: NetConf,
    /// The overlay.
    pub overlay: Subnet,
    /// The cell's subnet.
    pub subnet: Subnet,
}

/// Parses stdin's network config and checks what the plugin relies on.
pub fn parse_config(stdin: &[u8]) -> Result<Checked, CniError> {
    let newest = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1];
    // Read the version first, so even a config we cannot use gets an error in its version.
    #[derive(Deserialize)]
    struct VersionOnly {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    let version = serde_json::from_slice::<VersionOnly>(stdin)
        .map_err(|e| {
            CniError::new(
                newest,
                code::DECODE_FAILURE,
                "network config is not valid JSON",
                e.to_string(),
            )
        })?
        .cni_version
        .ok_or_else(|| {
            CniError::new(
                newest,
                code::INVALID_CONFIG,
                "invalid network config",
                "cniVersion is missing",
            )
        })?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            newest,
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "config has cniVersion {version}; this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let invalid = |details: String| {
        CniError::new(
            &version,
            code::INVALID_CONFIG,
            "invalid network config",
            details,
        )
    };
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| invalid(e.to_string()))?;
    if conf.plugin_type != "c2c-cni" {
        return Err(invalid(format!(
            "type is {:?}, expected \"c2c-cni\"",
            conf.plugin_type
        )));
    }
    let overlay: Subnet = conf
        .overlay_network
        .parse()
        .map_err(|e: crate::ipam::SubnetError| invalid(e.to_string()))?;
    let subnet: Subnet = conf
        .subnet
        .parse()
        .map_err(|e: crate::ipam::SubnetError| invalid(e.to_string()))?;
    if subnet.prefix() < overlay.prefix() || !overlay.contains(subnet.network()) {
        return Err(invalid(format!(
            "subnet {subnet} is not inside overlay_network {overlay}"
        )));
    }
    if let Some(mtu) = conf.mtu {
        if !(576..=9000).contains(&mtu) {
            return Err(invalid(format!("mtu {mtu} is outside 576-9000")));
        }
    }
    Ok(Checked {
        conf,
        overlay,
        subnet,
    })
}

/// The VERSION answer.
pub fn version_result(request_version: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": request_version.unwrap_or(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// The link-local gateway every container routes through, as silk does: no address of the
/// overlay is spent on it and the permanent neighbour entry means no ARP.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The host-side veth name for a container IP: `s-` and the address's hex, at most 15 chars
/// (IFNAMSIZ - 1), unique per IP.
pub fn host_veth_name(ip: Ipv4Addr) -> String {
    format!("s-{:08x}", u32::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"c2c","type":"c2c-cni","subnet":"10.255.7.0/24","dns":{"nameservers":["10.255.7.0"]}}"#;

    #[test]
    fn parses_config_with_cf_defaults() {
        let gc = parse_config(
            br#"{"cniVersion":"1.1.0","name":"c2c","type":"c2c-cni","subnet":"10.255.7.0/24",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
                "cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            gc.conf.valid_attachments.unwrap()[0],
            Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }
        );
        let c = parse_config(GOOD.as_bytes()).unwrap();
        assert_eq!(c.overlay.to_string(), "10.255.0.0/16");
        assert_eq!(c.subnet.to_string(), "10.255.7.0/24");
        assert_eq!(c.conf.vtep_name, "silk-vtep");
        assert_eq!(c.conf.mtu, None);
        // The spec's dns object and a bare list both give the nameservers.
        let want: Vec<IpAddr> = vec!["10.255.7.0".parse().unwrap()];
        assert_eq!(c.conf.dns, want);
        let bare = GOOD.replace(r#"{"nameservers":["10.255.7.0"]}"#, r#"["10.255.7.0"]"#);
        assert_eq!(parse_config(bare.as_bytes()).unwrap().conf.dns, want);
    }

    #[test]
    fn bad_configs_get_spec_error_codes() {
        let cases = [
            // No usable version in the config: the error speaks the newest we know.
            ("{not json", code::DECODE_FAILURE, "1.1.0"),
            (r#"{"name":"x"}"#, code::INVALID_CONFIG, "1.1.0"),
            (
                r#"{"cniVersion":"0.1.0","name":"x","type":"c2c-cni","subnet":"10.255.7.0/24"}"#,
                code::INCOMPATIBLE_VERSION,
                "1.1.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"bridge","subnet":"10.255.7.0/24"}"#,
                code::INVALID_CONFIG,
                "1.0.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"c2c-cni"}"#,
                code::INVALID_CONFIG,
                "1.0.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"c2c-cni","subnet":"10.9.7.0/24"}"#,
                code::INVALID_CONFIG,
                "1.0.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"c2c-cni","subnet":"10.255.7.1/24"}"#,
                code::INVALID_CONFIG,
                "1.0.0",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","type":"c2c-cni","subnet":"10.255.7.0/24","mtu":10}"#,
                code::INVALID_CONFIG,
                "1.0.0",
            ),
        ];
        for (conf, want, version) in cases {
            let e = parse_config(conf.as_bytes()).unwrap_err();
            assert_eq!(
                (e.code, e.cni_version.as_str()),
                (want, version),
                "{conf}: {e}"
            );
            let json = serde_json::to_value(&e).unwrap();
            for k in ["cniVersion", "code", "msg", "details"] {
                assert!(json.get(k).is_some(), "{k} missing from {json}");
            }
        }
    }

    #[test]
    fn version_answer_and_veth_names() {
        let v = version_result(Some("1.0.0"));
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0"));
        let name = host_veth_name(Ipv4Addr::new(10, 255, 255, 254));
        assert_eq!(name, "s-0afffffe");
        assert!(name.len() <= 15);
    }
}
