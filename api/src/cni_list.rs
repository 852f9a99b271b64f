//! The network configuration list the cell agent writes for container runtimes (CNI spec's
//! `.conflist`: a name, a version and the plugins in order; c2c's is one plugin, `c2c-cni`), and
//! the single plugin configuration a runtime derives from it and hands the plugin on stdin.
//!
//! Why a list: podman 4 (CNI backend) loads only `.conflist` files from its network config
//! directory and ignores a lone `.conf`; CRI-O, containerd and kubelet read lists too. Why 1.0.0
//! by default: podman 4.3's libcni refuses a list of 1.1.0 ("incompatible CNI versions"); a
//! runtime with a newer libcni reads 1.1.0 and then also runs `STATUS` before each `ADD`
//! (`c2c-agent --cni-version 1.1.0`; the local platform does).

use serde_json::{json, Value};

/// The CNI network's name, which runtimes select it by (`podman run --network c2c`).
pub const NETWORK_NAME: &str = "c2c";

/// The file name the agent writes in a runtime's network config directory.
pub const FILE_NAME: &str = "10-c2c.conflist";

/// The version the agent writes unless told otherwise.
pub const DEFAULT_VERSION: &str = "1.0.0";

/// A list of one plugin configuration, `plugin` (without `cniVersion` or `name`).
pub fn network_list(version: &str, plugin: Value) -> Value {
    json!({"cniVersion": version, "name": NETWORK_NAME, "plugins": [plugin]})
}

/// What a runtime gives the first plugin of `list` on stdin: its configuration with the list's
/// `cniVersion` and `name`. `None` for something that is not a list of at least one plugin.
pub fn plugin_config(list: &Value) -> Option<Value> {
    let mut plugin = list.get("plugins")?.as_array()?.first()?.clone();
    let obj = plugin.as_object_mut()?;
    obj.insert("cniVersion".into(), list.get("cniVersion")?.clone());
    obj.insert("name".into(), list.get("name")?.clone());
    Some(plugin)
}

/// [`plugin_config`] of the list in file `path`.
pub fn read_plugin_config(path: &std::path::Path) -> std::io::Result<Value> {
    let list: Value = serde_json::from_slice(&std::fs::read(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    plugin_config(&list).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a CNI network list", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_hands_the_plugin_its_config_with_the_lists_version_and_name() {
        let list = network_list(
            "1.0.0",
            json!({"type": "c2c-cni", "subnet": "10.255.7.0/24"}),
        );
        assert_eq!(
            plugin_config(&list).unwrap(),
            json!({"cniVersion": "1.0.0", "name": "c2c", "type": "c2c-cni", "subnet": "10.255.7.0/24"})
        );
        assert_eq!(
            plugin_config(&json!({"cniVersion": "1.0.0", "name": "c2c"})),
            None
        );
        assert_eq!(
            plugin_config(&json!({"cniVersion": "1.0.0", "name": "c2c", "plugins": []})),
            None
        );
    }
}
