//! Starting one instance on the local platform: its namespace, `c2c-cni` ADD as a runtime runs
//! it, its cert dir, then the sidecar and the app under their supervisor.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    free_host_ports, instances, HostPorts, InstanceInfo, PushArgs, APP_PORT, INTERNAL_DOMAIN,
    TLS_PORT,
};
use crate::{bin, ip, wait_for, Paths};

/// Starts the placed instance `rec` (its address still unknown) on `cell`.
pub(super) fn start_instance(
    state_dir: &Path,
    cell: &crate::CellInfo,
    mut rec: InstanceInfo,
    a: &PushArgs,
) -> Result<InstanceInfo> {
    let paths = Paths::new(state_dir);
    let (app, index, guid, netns) = (
        rec.app.clone(),
        rec.index,
        rec.guid.clone(),
        rec.netns.clone(),
    );
    let app_guid = rec.app_guid.clone();
    let dir = paths.instance(&app, index);
    std::fs::create_dir_all(&dir)?;
    ip(&["netns", "add", &netns])?;
    // From here on, a failure leaves a partial instance that `delete`/`down` clean up.
    std::fs::write(dir.join("instance.json"), serde_json::to_vec_pretty(&rec)?)?;

    // CNI STATUS then ADD, exactly as a runtime runs them: STATUS fails (and says why) while
    // the cell is not ready to put a container on the overlay.
    // The agent's network list, as a runtime hands its plugin on to `c2c-cni`.
    let mut conf =
        c2c_api::cni_list::read_plugin_config(&paths.cell(&cell.name).join("cni.conflist"))?;
    // (libcni skips STATUS for configs older than 1.1.0, and so do we.)
    if conf["cniVersion"].as_str().is_some_and(|v| v != "1.0.0") {
        cni(&cell.netns, "STATUS", &rec.container_id, &netns, &conf)
            .with_context(|| format!("{} is not ready for containers", cell.name))?;
    }
    let certs = dir.join("certs");
    // Two host ports on the cell, as a runtime's `-p` gives them.
    let taken: Vec<HostPorts> = instances(state_dir, None)?
        .iter()
        .filter(|i| i.cell == cell.name)
        .filter_map(|i| i.host_ports)
        .collect();
    let ports = free_host_ports(a.host_ports, &taken).with_context(|| {
        format!(
            "no two free host ports left on {} in {}-{}",
            cell.name, a.host_ports.0, a.host_ports.1
        )
    })?;
    conf["runtimeConfig"] = serde_json::json!({
        "app_guid": app_guid, "instance_guid": guid, "instance_index": index, "cert_dir": certs,
        "portMappings": [
            {"hostPort": ports.app, "containerPort": APP_PORT, "protocol": "tcp"},
            {"hostPort": ports.tls, "containerPort": TLS_PORT, "protocol": "tcp"},
        ],
    });
    rec.host_ports = Some(ports);
    let result = cni(&cell.netns, "ADD", &rec.container_id, &netns, &conf)?;
    rec.ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .context("CNI result without an address")?;
    std::fs::write(dir.join("instance.json"), serde_json::to_vec_pretty(&rec)?)?;
    // The container's resolver is the cell's DNS (from the CNI result), the way a container
    // runtime writes resolv.conf; `ip netns exec` mounts /etc/netns/NAME/resolv.conf for us.
    let nameservers: Vec<String> = result["dns"]["nameservers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    let etc = Path::new("/etc/netns").join(&netns);
    std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    let resolv: String = nameservers
        .iter()
        .map(|n| format!("nameserver {n}\n"))
        .collect();
    std::fs::write(
        etc.join("resolv.conf"),
        format!("search {INTERNAL_DOMAIN}\n{resolv}options ndots:1\n"),
    )?;

    // The instance's cert comes from the cell agent (its key never leaves the cell; control
    // signs with names from its route table), as soon as the agent has registered the instance.
    wait_for(
        "the cell agent to issue the instance certificate",
        Duration::from_secs(10),
        || certs.join("cert.pem").exists(),
    )
    .with_context(|| format!("see {}", paths.cell(&cell.name).join("agent.log").display()))?;

    // Its identity too (CF_INSTANCE_CERT): the app starts with it in place, as on Diego.
    wait_for(
        "the cell agent to issue the instance identity",
        Duration::from_secs(10),
        || {
            c2c_api::layout::identity_dir(&certs)
                .join(c2c_certs::identity::CERT_FILE)
                .exists()
        },
    )
    .with_context(|| format!("see {}", paths.cell(&cell.name).join("agent.log").display()))?;

    // The app (under its supervisor), then the sidecar, inside the container's namespace.
    crate::lifecycle::launch(state_dir, &rec, a.command.as_deref())?;
    Ok(rec)
}

/// Runs `c2c-cni` in the cell as a runtime does.
pub(super) fn cni(
    cell_ns: &str,
    command: &str,
    container_id: &str,
    netns: &str,
    conf: &serde_json::Value,
) -> Result<serde_json::Value> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", cell_ns])
        .arg(bin("c2c-cni")?)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_PATH",
            bin("c2c-cni")?.parent().unwrap_or(Path::new("/")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running c2c-cni")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let json: serde_json::Value = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    if !out.status.success() {
        bail!(
            "c2c-cni {command}: {} ({})",
            json["msg"].as_str().unwrap_or("failed"),
            json["details"]
                .as_str()
                .unwrap_or_else(|| std::str::from_utf8(&out.stderr).unwrap_or(""))
        );
    }
    Ok(json)
}
