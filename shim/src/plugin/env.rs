//! What a runtime hands the plugin: the command and the CNI_* environment, checked; the
//! port mappings asked for; the app metadata found in the config's args and runtimeConfig.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::Value;

use crate::cni::{code, Checked, CniError, SUPPORTED_VERSIONS};
use crate::store::Store;

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container.
    Add,
    /// Detach it.
    Del,
    /// Verify the attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Report whether ADD can be serviced (1.1.0).
    Status,
    /// Release whatever belongs to attachments the runtime no longer has (1.1.0).
    Gc,
}

/// The CNI_* environment, checked.
#[derive(Debug, Clone)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS (may be absent on DEL).
    pub netns: Option<String>,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS, split into key/value pairs.
    pub args: Vec<(String, String)>,
}

/// App metadata the runtime passed for the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppMeta {
    /// App GUID.
    pub app_guid: Option<String>,
    /// Instance GUID.
    pub instance_guid: Option<String>,
    /// Instance index.
    pub instance_index: Option<u32>,
    /// The instance's cert dir (for the cell agent).
    pub cert_dir: Option<String>,
}

pub(super) fn newest() -> &'static str {
    SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]
}

/// CNI's container id rule (SPEC.md): alphanumeric first, then alphanumerics, `_`, `.`, `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id.len() <= 256
}

/// Linux interface names: 1-15 bytes, no `/`, whitespace or `:`, not `.` or `..`.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Reads the CNI_* variables through `get`.
pub fn parse_env(get: impl Fn(&str) -> Option<String>, version: &str) -> Result<Env, CniError> {
    let bad = |details: String| {
        CniError::new(
            version,
            code::INVALID_ENV,
            "invalid CNI environment",
            details,
        )
    };
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some("STATUS") => Command::Status,
        Some("GC") => Command::Gc,
        Some(other) => {
            return Err(bad(format!(
                "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            )))
        }
        None => return Err(bad("CNI_COMMAND is not set".into())),
    };
    let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
    // These act on the network, not on one container: no container variables.
    if matches!(command, Command::Version | Command::Status | Command::Gc) {
        return Ok(Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: vec![],
        });
    }
    let container_id =
        nonempty("CNI_CONTAINERID").ok_or_else(|| bad("CNI_CONTAINERID is not set".into()))?;
    if !valid_container_id(&container_id) {
        return Err(bad(format!(
            "CNI_CONTAINERID {container_id:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        )));
    }
    let ifname = nonempty("CNI_IFNAME").ok_or_else(|| bad("CNI_IFNAME is not set".into()))?;
    if !valid_ifname(&ifname) {
        return Err(bad(format!("CNI_IFNAME {ifname:?} is not a valid interface name (1-15 chars, no '/', ':' or spaces)")));
    }
    let netns = nonempty("CNI_NETNS");
    if netns.is_none() && command != Command::Del {
        return Err(bad("CNI_NETNS is not set".into()));
    }
    let args = get("CNI_ARGS")
        .unwrap_or_default()
        .split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("CNI_ARGS item {kv:?} is not KEY=VALUE")))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Env {
        command,
        container_id,
        netns,
        ifname,
        args,
    })
}

/// The `portMappings` capability from `runtimeConfig` (what the standard portmap plugin
/// takes), checked: ports 1-65535, tcp or udp, an IPv4 `hostIP` or none (`""` and `0.0.0.0`
/// mean every address of the cell), and no host port another container on this cell holds.
pub fn port_mappings(
    conf: &Checked,
    data_dir: &Path,
    container_id: &str,
) -> Result<Vec<crate::store::PortMapping>, String> {
    let Some(list) = conf
        .conf
        .runtime_config
        .as_ref()
        .and_then(|rc| rc.get("portMappings"))
    else {
        return Ok(vec![]);
    };
    let list = list
        .as_array()
        .ok_or("runtimeConfig.portMappings must be an array")?;
    let mut out: Vec<crate::store::PortMapping> = vec![];
    for (i, m) in list.iter().enumerate() {
        let port = |k: &str| -> Result<u16, String> {
            m.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("portMappings[{i}].{k} must be a port 1-65535"))
        };
        let protocol = match m.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
            p if p.eq_ignore_ascii_case("tcp") => c2c_api::net::Protocol::Tcp,
            p if p.eq_ignore_ascii_case("udp") => c2c_api::net::Protocol::Udp,
            p => {
                return Err(format!(
                    "portMappings[{i}].protocol {p:?}: c2c forwards tcp and udp"
                ))
            }
        };
        let host_ip =
            match m.get("hostIP").and_then(Value::as_str).unwrap_or("") {
                "" | "0.0.0.0" => None,
                ip => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                    format!("portMappings[{i}].hostIP {ip:?} is not an IPv4 address")
                })?),
            };
        let pm = crate::store::PortMapping {
            host_port: port("hostPort")?,
            container_port: port("containerPort")?,
            protocol,
            host_ip,
        };
        // The cell's own: VXLAN from the other cells and the containers' DNS.
        if (pm.protocol == c2c_api::net::Protocol::Udp && pm.host_port == crate::rules::VXLAN_PORT)
            || pm.host_port == 53
        {
            return Err(format!(
                "host port {pm} is the cell's own ({}); pick another",
                if pm.host_port == 53 {
                    "its DNS"
                } else {
                    "VXLAN between cells"
                }
            ));
        }
        if out.iter().any(|o| o.clashes(&pm)) {
            return Err(format!("host port {pm} is given twice"));
        }
        out.push(pm);
    }
    let (records, _) = Store::new(data_dir).list().map_err(|e| e.to_string())?;
    for r in records.iter().filter(|r| r.container_id != container_id) {
        for theirs in &r.port_mappings {
            if let Some(mine) = out.iter().find(|m| m.clashes(theirs)) {
                return Err(format!(
                    "host port {mine} is taken on this cell (by container {}: {theirs})",
                    r.container_id
                ));
            }
        }
    }
    Ok(out)
}

/// App metadata from `runtimeConfig`, then `args.cni`, then CNI_ARGS (first found wins).
pub fn app_meta(conf: &Checked, env: &Env) -> AppMeta {
    let from_json = |v: Option<&Value>| -> AppMeta {
        let Some(v) = v else {
            return AppMeta::default();
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        AppMeta {
            app_guid: s("app_guid"),
            instance_guid: s("instance_guid"),
            cert_dir: s("cert_dir"),
            instance_index: v
                .get("instance_index")
                .and_then(|i| {
                    i.as_u64()
                        .or_else(|| i.as_str().and_then(|s| s.parse().ok()))
                })
                .and_then(|i| u32::try_from(i).ok()),
        }
    };
    let rc = from_json(conf.conf.runtime_config.as_ref());
    let args = from_json(conf.conf.args.as_ref().and_then(|a| a.get("cni")));
    let arg = |k: &str| {
        env.args
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    AppMeta {
        app_guid: rc.app_guid.or(args.app_guid).or_else(|| arg("APP_GUID")),
        instance_guid: rc
            .instance_guid
            .or(args.instance_guid)
            .or_else(|| arg("INSTANCE_GUID")),
        instance_index: rc
            .instance_index
            .or(args.instance_index)
            .or_else(|| arg("INSTANCE_INDEX").and_then(|v| v.parse().ok())),
        cert_dir: rc.cert_dir.or(args.cert_dir),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cni::parse_config;
    use std::collections::HashMap;

    pub(in crate::plugin) const CONF: &str = r#"{"cniVersion":"1.0.0","name":"c2c","type":"c2c-cni","subnet":"10.255.7.0/24",
        "runtimeConfig":{"app_guid":"g-rc","instance_index":2},"args":{"cni":{"app_guid":"g-args","instance_guid":"ig"}}}"#;

    pub(in crate::plugin) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_checks_name_the_variable() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ];
        assert!(parse_env(env(&base), "1.0.0").is_ok());
        for (drop, needle) in [
            ("CNI_COMMAND", "CNI_COMMAND"),
            ("CNI_CONTAINERID", "CNI_CONTAINERID"),
            ("CNI_IFNAME", "CNI_IFNAME"),
            ("CNI_NETNS", "CNI_NETNS"),
        ] {
            let pairs: Vec<_> = base.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = parse_env(env(&pairs), "1.0.0").unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV);
            assert!(e.details.contains(needle), "{e}");
        }
        // DEL without a namespace is allowed (the namespace may be gone).
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert!(parse_env(env(&del), "1.0.0").is_ok());
        for (k, v) in [
            ("CNI_CONTAINERID", "../etc"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_IFNAME", "much-too-long-name"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_COMMAND", "FROB"),
            ("CNI_ARGS", "novalue"),
        ] {
            let mut pairs: Vec<_> = base.iter().copied().filter(|(key, _)| *key != k).collect();
            pairs.push((k, v));
            let e = parse_env(env(&pairs), "1.0.0").unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{k}={v}");
        }
    }

    #[test]
    fn app_metadata_sources_in_order() {
        let conf = parse_config(CONF.as_bytes()).unwrap();
        let e = parse_env(
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/x"),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;INSTANCE_INDEX=9;APP_GUID=g-env",
                ),
            ]),
            "1.0.0",
        )
        .unwrap();
        assert_eq!(
            app_meta(&conf, &e),
            AppMeta {
                app_guid: Some("g-rc".into()),
                instance_guid: Some("ig".into()),
                instance_index: Some(2),
                cert_dir: None,
            }
        );
        let bare = parse_config(
            br#"{"cniVersion":"1.0.0","name":"c2c","type":"c2c-cni","subnet":"10.255.7.0/24"}"#,
        )
        .unwrap();
        assert_eq!(
            app_meta(&bare, &e),
            AppMeta {
                app_guid: Some("g-env".into()),
                instance_guid: None,
                instance_index: Some(9),
                cert_dir: None,
            }
        );
    }
}
