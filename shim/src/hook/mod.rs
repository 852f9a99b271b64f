//! `c2c-hook`: the OCI hook that gives a container a runtime started with the `c2c.app`
//! annotation what `c2c push` gives an instance. podman and CRI-O run it from their hooks
//! directory (selected by the annotation): at `createRuntime`, after `c2c-cni` ADD put the
//! container on the overlay, it places the container in control as an instance of the app (with
//! the runtime's credential on this host: a user's token, the authority of `c2c push`, never
//! the cell's certificate), makes the container's sidecar directory, and hands the instance to
//! the cell agent through the container's CNI record; the agent confirms it, keeps its
//! certificate issued and runs its sidecar. At `poststop` it removes the placement, the sidecar
//! and the directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use c2c_api::client::{Client, ClientError, StatusCode};
use serde::{Deserialize, Serialize};

use crate::sidecars;

mod config;
mod mount;

use crate::store::Store;
pub use config::{HookConfig, OciState};
use mount::mount_identity;

/// The annotation that names the container's app.
pub const APP: &str = "c2c.app";
/// The annotation that declares what the app speaks on its port (`http1`, `http2`,
/// `http1,http2`), as `c2c update-app --app-protocol` does.
pub const APP_PROTOCOL: &str = "c2c.app-protocol";

/// The annotation that asks for one instance index (default: the app's lowest free one).
pub const INDEX: &str = "c2c.index";

/// What the hook asked of control for one container, kept for `poststop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// App name.
    pub app: String,
    /// Instance GUID.
    pub guid: String,
    /// Instance index.
    pub index: u32,
}

/// The app and index a container's annotations ask for; `None`: not a c2c instance.
pub fn wanted(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(String, Option<u32>)>, String> {
    let Some(app) = annotations.get(APP) else {
        return Ok(None);
    };
    c2c_api::names::validate_app_name(app).map_err(|e| format!("annotation {APP}: {e}"))?;
    let index = annotations
        .get(INDEX)
        .map(|i| {
            i.parse::<u32>().map_err(|_| {
                format!("annotation {INDEX}: {i:?} is not an instance index (0, 1, ...)")
            })
        })
        .transpose()?;
    Ok(Some((app.clone(), index)))
}

/// What runs the container, for `c2c apps`: podman says so in an annotation of its own.
pub fn runtime_of(state: &OciState) -> String {
    let runtime = match state
        .annotations
        .get("io.container.manager")
        .map(String::as_str)
    {
        Some("libpod") => "podman",
        _ => "oci",
    };
    let short: String = state.id.chars().take(12).collect();
    format!("{runtime} {short}")
}

/// The hook's log stays near this size: past it, the file becomes `hook.log.1` (replacing the
/// one before) and a new one starts.
const LOG_LIMIT: u64 = 1 << 20;

fn log(cfg: &HookConfig, line: &str) {
    let _ = std::fs::create_dir_all(&cfg.data_dir);
    // Root's only (0600), as the traffic log: lines name apps, instances and containers.
    if let Ok(mut f) = crate::netlog::RotatingLog::open(cfg.data_dir.join("hook.log"), LOG_LIMIT) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = f.write(format!("{now} {line}\n").as_bytes());
    }
}

fn refused(app: &str, e: ClientError) -> String {
    match &e {
        ClientError::Status { status, message }
            if *status == StatusCode::FORBIDDEN || *status == StatusCode::UNAUTHORIZED =>
        {
            format!("the runtime's credential may not place instances of app {app:?} on this cell: control said {message}")
        }
        _ => format!("placing an instance of app {app:?}: {e}"),
    }
}

/// `createRuntime`: the container (already on the overlay) becomes an instance of its app.
pub async fn attach(cfg: &HookConfig, state: &OciState) -> Result<(), String> {
    let Some((app, index)) = wanted(&state.annotations)? else {
        return Ok(());
    };
    let app_protocol = state
        .annotations
        .get(APP_PROTOCOL)
        .map(|p| {
            p.parse::<c2c_api::AppProtocol>()
                .map_err(|e| format!("annotation {APP_PROTOCOL}: {e}"))
        })
        .transpose()?;
    let store = Store::new(&cfg.data_dir);
    let rec = store
        .get(&state.id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "container {} has no c2c-cni attachment on cell {} (run it with --network c2c)",
                state.id, cfg.cell
            )
        })?;
    let client = cfg.client()?;
    let dir = cfg.container_dir(&state.id);
    // A restarted container keeps its placement.
    let before: Option<Placed> = std::fs::read(dir.join("placed.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|p: &Placed| p.app == app);
    let a = app_of(cfg, &client, &app).await?;
    // What the app speaks, as the annotation declares it (the app's setting, as
    // `c2c update-app --app-protocol` makes it: every instance's sidecar follows).
    if let Some(p) = app_protocol.filter(|p| *p != a.app_protocol) {
        let settings = c2c_api::types::AppSettings {
            app_protocol: Some(p),
            ..Default::default()
        };
        client
            .update_app(&app, &settings)
            .await
            .map_err(|e| format!("declaring {app}'s protocol ({APP_PROTOCOL}={p}): {e}"))?;
        log(cfg, &format!("app {app} speaks {p} ({APP_PROTOCOL})"));
    }
    let placed = match before {
        Some(p)
            if client
                .instances()
                .await
                .map_err(|e| refused(&app, e))?
                .iter()
                .any(|i| i.guid == p.guid) =>
        {
            p
        }
        _ => {
            let p = client
                .place_by(&app, &cfg.cell, index, Some(&runtime_of(state)))
                .await
                .map_err(|e| refused(&app, e))?;
            Placed {
                app: app.clone(),
                guid: p.guid,
                index: p.index,
            }
        }
    };
    let certs = dir.join("certs");
    let prepared = (|| -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // Only root (the agent, the sidecar) reads the key; the container never sees the dir.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&certs)?;
        c2c_certs::pair::write_file_atomic(
            &dir.join("placed.json"),
            &serde_json::to_vec(&placed).map_err(std::io::Error::other)?,
            0o600,
        )
    })();
    if let Err(e) = prepared {
        let _ = client.remove_instance(&placed.guid).await;
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("preparing {}: {e}", dir.display()));
    }
    // From here a failure takes back everything this hook did: the runtime does not run
    // poststop for a container that never started.
    if let Err(e) = hand_over(cfg, state, &store, rec, &a.guid, &placed, &certs).await {
        if let Err(undo) = detach(cfg, state).await {
            log(cfg, &format!("container {}: undoing: {undo}", state.id));
        }
        return Err(e);
    }
    Ok(())
}

/// App `app` in control, made (with its default internal route) in the runtime's space when
/// missing.
async fn app_of(cfg: &HookConfig, client: &Client, app: &str) -> Result<c2c_api::App, String> {
    match client.app(app).await {
        Ok(a) => Ok(a),
        Err(e) if e.is_not_found() => {
            let space = cfg.space.as_deref().and_then(|s| s.split_once('/'));
            let a = match client.create_app_in(app, space).await {
                Ok(a) => a,
                // Invisible to this credential, yet the name is taken: another space's app.
                Err(ClientError::Status { status, message }) if status == StatusCode::CONFLICT => {
                    return Err(format!("the runtime's credential may not place instances of app {app:?} on this cell: no app of that name is in its spaces, and another space has one (control said {message})"));
                }
                Err(e) => return Err(refused(app, e)),
            };
            // As `c2c push` does for a new app: its default internal route.
            if let Some(host) = c2c_api::names::default_hostname(app) {
                let r = c2c_api::types::RouteRequest {
                    app: app.to_string(),
                    domain: "apps.internal".into(),
                    hostname: host,
                };
                client
                    .route(&r, false)
                    .await
                    .map_err(|e| format!("mapping {app}'s default route: {e}"))?;
            }
            log(cfg, &format!("created app {app} ({})", a.guid));
            Ok(a)
        }
        Err(e) => Err(refused(app, e)),
    }
}

/// Marks the container's record with its instance (the agent confirms it, has its certificate
/// signed and starts its sidecar) and waits for the certificate: the container starts with its
/// identity in place, as a pushed instance does.
async fn hand_over(
    cfg: &HookConfig,
    state: &OciState,
    store: &Store,
    mut rec: crate::store::ContainerRecord,
    app_guid: &c2c_api::AppGuid,
    placed: &Placed,
    certs: &Path,
) -> Result<(), String> {
    let app = &placed.app;
    rec.app_guid = Some(app_guid.to_string());
    rec.instance_guid = Some(placed.guid.clone());
    rec.instance_index = Some(placed.index);
    rec.cert_dir = Some(certs.display().to_string());
    rec.sidecar = true;
    store.put(&rec).map_err(|e| e.to_string())?;
    log(
        cfg,
        &format!(
            "container {} is {app}/{} ({}), {}; waiting for its certificate",
            state.id, placed.index, placed.guid, rec.ip
        ),
    );
    let end = Instant::now() + cfg.wait;
    while !certs.join("cert.pem").exists() {
        if Instant::now() > end {
            return Err(format!(
                "the cell agent did not issue {app}/{}'s certificate within {:?}: is c2c-agent running on cell {} with --data-dir {}? (see its log)",
                placed.index,
                cfg.wait,
                cfg.cell,
                cfg.data_dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let identity = c2c_api::layout::identity_dir(certs);
    while !identity.join(c2c_certs::identity::CERT_FILE).exists() {
        if Instant::now() > end {
            return Err(format!(
                "the cell agent did not issue {app}/{}'s identity within {:?} (see its log)",
                placed.index, cfg.wait
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mount_identity(state, certs)?;
    log(
        cfg,
        &format!(
            "container {} has its certificate, and its identity at {}",
            state.id,
            c2c_certs::identity::CONTAINER_IDENTITY_DIR
        ),
    );
    Ok(())
}

/// `poststop`: the placement, the sidecar and the directory go.
pub async fn detach(cfg: &HookConfig, state: &OciState) -> Result<(), String> {
    let dir = cfg.container_dir(&state.id);
    let Some(placed) = std::fs::read(dir.join("placed.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Placed>(&b).ok())
    else {
        // Not one of ours (or already cleaned up).
        return Ok(());
    };
    // The record is normally gone already (CNI DEL at stop); if not, it no longer asks for a
    // sidecar, so the agent does not restart the one stopped below.
    let store = Store::new(&cfg.data_dir);
    if let Ok(Some(mut rec)) = store.get(&state.id) {
        rec.sidecar = false;
        rec.instance_guid = None;
        rec.app_guid = None;
        rec.cert_dir = None;
        let _ = store.put(&rec);
    }
    let certs = dir.join("certs");
    sidecars::stop_by_pidfile(&dir.join("proxy.pid"), &certs, Duration::from_secs(3));
    let removed = match cfg.client()?.remove_instance(&placed.guid).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(format!(
            "removing {}/{} ({}) from control: {e}",
            placed.app, placed.index, placed.guid
        )),
    };
    std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    log(
        cfg,
        &format!(
            "container {} ({}/{}) removed{}",
            state.id,
            placed.app,
            placed.index,
            removed
                .as_ref()
                .err()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    );
    removed
}

/// The hooks directory entries (OCI hooks 1.0.0, as podman and CRI-O read them) that run
/// `hook_bin` for containers with the `c2c.app` annotation: (file name, JSON).
pub fn hook_files(hook_bin: &Path, config: &Path) -> Vec<(&'static str, serde_json::Value)> {
    let entry = |stage: &str, verb: &str| {
        serde_json::json!({
            "version": "1.0.0",
            "hook": {
                "path": hook_bin,
                "args": ["c2c-hook", "--config", config, verb],
            },
            "when": {"annotations": {"^c2c\\.app$": ".+"}},
            "stages": [stage],
        })
    };
    vec![
        ("c2c-attach.json", entry("createRuntime", "attach")),
        ("c2c-detach.json", entry("poststop", "detach")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_name_the_app_and_maybe_the_index() {
        let a = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(wanted(&a(&[])).unwrap(), None);
        assert_eq!(wanted(&a(&[("other", "x")])).unwrap(), None);
        assert_eq!(
            wanted(&a(&[(APP, "appb")])).unwrap(),
            Some(("appb".into(), None))
        );
        assert_eq!(
            wanted(&a(&[(APP, "appb"), (INDEX, "2")])).unwrap(),
            Some(("appb".into(), Some(2)))
        );
        assert!(wanted(&a(&[(APP, "../x")])).unwrap_err().contains(APP));
        assert!(wanted(&a(&[(APP, "appb"), (INDEX, "-1")]))
            .unwrap_err()
            .contains(INDEX));
    }

    #[test]
    fn state_annotations_come_from_the_bundle_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"c2c.app":"appb"}}"#,
        )
        .unwrap();
        let raw = serde_json::json!({"ociVersion":"1.0.2","id":"abc","status":"creating","pid":1,"bundle":dir.path()});
        let s = OciState::parse(raw.to_string().as_bytes()).unwrap();
        assert_eq!(s.id, "abc");
        assert_eq!(s.annotations.get(APP).map(String::as_str), Some("appb"));
        assert!(OciState::parse(b"{}").is_err(), "no id");
        for bad in ["../x", ".", "", "a/b"] {
            let raw = serde_json::json!({"id": bad});
            assert!(
                OciState::parse(raw.to_string().as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("runtime.token");
        std::fs::write(&t, "secret").unwrap();
        let cfg: HookConfig = serde_json::from_value(serde_json::json!({
            "control": "https://c:4002", "ca_file": "/ca", "cell": "cell1",
            "token_file": t,
        }))
        .unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = cfg.check_token_file().unwrap_err();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode)).unwrap();
            cfg.check_token_file().unwrap();
        }
        std::fs::remove_file(&t).unwrap();
        assert!(cfg.check_token_file().is_err());
    }

    #[test]
    fn the_log_is_rotated_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: HookConfig = serde_json::from_value(serde_json::json!({
            "control": "https://c:4002", "ca_file": "/ca", "token_file": "/t", "cell": "cell1",
            "data_dir": dir.path(),
        }))
        .unwrap();
        log(&cfg, "first");
        std::fs::write(
            dir.path().join("hook.log"),
            vec![b'x'; LOG_LIMIT as usize + 1],
        )
        .unwrap();
        log(&cfg, "after the limit");
        let now = std::fs::read_to_string(dir.path().join("hook.log")).unwrap();
        assert!(
            now.ends_with("after the limit\n") && now.len() < 100,
            "{now}"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("hook.log.1"))
                .unwrap()
                .len(),
            LOG_LIMIT + 1
        );
    }

    #[test]
    fn config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hook.json");
        std::fs::write(
            &p,
            r#"{"control":"https://c:4002","ca_file":"/ca.pem","token_file":"/t","cell":"cell1"}"#,
        )
        .unwrap();
        let c = HookConfig::load(&p).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/c2c/cni"));
        assert_eq!(c.wait, Duration::from_secs(15));
        std::fs::write(&p, r#"{"control":"https://c:4002","ca_file":"/ca.pem","token_file":"/t","cell":"cell1","space":"nospace"}"#).unwrap();
        assert!(HookConfig::load(&p).unwrap_err().contains("ORG/SPACE"));
        std::fs::write(
            &p,
            r#"{"control":"https://c:4002","ca_file":"/ca.pem","token_file":"/t","cell":"Cell 1"}"#,
        )
        .unwrap();
        assert!(HookConfig::load(&p).is_err(), "cell names are checked");
        std::fs::write(
            &p,
            r#"{"control":"x","ca_file":"/ca.pem","token_file":"/t","cell":"cell1","tokn":"x"}"#,
        )
        .unwrap();
        assert!(HookConfig::load(&p).unwrap_err().contains("tokn"));
    }
}
