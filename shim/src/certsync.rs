//! Certificates a cell's agent keeps current for its instances: the sidecar's route
//! certificate (its SANs follow the instance's routes), the instance identity
//! (`CF_INSTANCE_CERT`), and the access file the sidecar authorizes callers by. Keys are made
//! here; control signs only for instances it placed on this cell.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use c2c_api::client::Client;
use c2c_api::CellView;
use tracing::{debug, info, warn};

use crate::store::ContainerRecord;

/// When the soonest of this cell's instance certificates and identities expires (Unix
/// seconds, as the last check found them; 0: none), for the agent's metrics.
pub static SOONEST_EXPIRY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// How often certificates and identities are checked for age between views.
pub(crate) const CERT_CHECK: Duration = Duration::from_secs(2);

/// Why an instance's certificate must be issued now, if it must (pure apart from reading the
/// cert dir): no certificate yet, SANs that differ from what the instance's routes call for, or
/// 2/3 of its life gone.
pub fn cert_reason(
    cert_dir: &Path,
    desired: &c2c_certs::SanSet,
    now_unix: i64,
) -> Option<&'static str> {
    pair_reason(
        cert_dir,
        (c2c_certs::pair::CERT_FILE, c2c_certs::pair::KEY_FILE),
        desired,
        now_unix,
    )
    .0
}

/// [`cert_reason`] for the pair named `files` in `dir`, with when the certificate there
/// expires (Unix seconds), if there is one: one read serves both.
fn pair_reason(
    dir: &Path,
    (cert_file, key_file): (&str, &str),
    desired: &c2c_certs::SanSet,
    now_unix: i64,
) -> (Option<&'static str>, Option<i64>) {
    let current = c2c_certs::pair::read_pair_named(dir, cert_file, key_file)
        .ok()
        .and_then(|(cert, _)| c2c_certs::info::first_der_from_pem(&cert).ok())
        .and_then(|der| c2c_certs::CertInfo::from_der(&der).ok());
    match current {
        None => (Some("missing"), None),
        Some(info) => (
            c2c_certs::needs_reissue(&info, desired, now_unix).map(|r| match r {
                c2c_certs::ReissueReason::SansChanged => "routes changed",
                c2c_certs::ReissueReason::Aging => "aging",
            }),
            Some(info.not_after),
        ),
    }
}

/// Keeps each local instance's certificate matching its app's routes: a new key and CSR here
/// (the key never leaves the cell), signed by control, written atomically into the cert dir
/// where the sidecar picks it up.
pub(crate) async fn sync_certs(
    client: &Client,
    cell: &str,
    view: &CellView,
    records: &[ContainerRecord],
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut soonest: Option<i64> = None;
    for rec in records {
        let Some(dir) = rec.cert_dir.as_deref().map(PathBuf::from) else {
            continue;
        };
        let Some(guid) = rec.instance_guid.clone() else {
            continue;
        };
        // Not confirmed yet: the next view will have it.
        let Some(inst) = view
            .instances
            .iter()
            .find(|i| i.guid == guid && i.cell == cell && i.ip == rec.ip)
        else {
            continue;
        };
        let names = c2c_api::instance_names(&view.routes, inst);
        let Ok(desired) = c2c_certs::SanSet::new(&names, [IpAddr::V4(inst.ip)]) else {
            warn!(instance = %guid, ?names, "route names are not valid DNS names; skipping");
            continue;
        };
        sync_access(&dir, view, inst).await;
        let identity_expiry = sync_identity(client, cell, &dir, inst, now).await;
        let (reason, cert_expiry) = pair_reason(
            &dir,
            (c2c_certs::pair::CERT_FILE, c2c_certs::pair::KEY_FILE),
            &desired,
            now,
        );
        // As this pass found them (a certificate re-issued now counts at the next).
        for at in [identity_expiry, cert_expiry].into_iter().flatten() {
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
        }
        let Some(reason) = reason else {
            continue;
        };
        let started = Instant::now();
        let (key_pem, csr_pem) = match c2c_certs::ca::new_key_and_csr() {
            Ok(x) => x,
            Err(error) => {
                warn!(%error, "making a key and CSR failed");
                continue;
            }
        };
        let cert_pem = match client.sign_instance(cell, &guid, &csr_pem).await {
            Ok(signed) => signed.cert_pem,
            Err(error) => {
                warn!(%error, instance = %guid, "certificate signing failed");
                continue;
            }
        };
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || {
            c2c_certs::pair::write_pair(&d, cert_pem.as_bytes(), key_pem.as_bytes())
        })
        .await
        {
            Ok(Ok(())) => {
                info!(instance = %guid, dir = %dir.display(), reason, names = ?names, elapsed_ms = started.elapsed().as_millis() as u64, "certificate issued")
            }
            Ok(Err(error)) => warn!(%error, dir = %dir.display(), "writing the certificate failed"),
            Err(error) => warn!(%error, "certificate task failed"),
        }
    }
    SOONEST_EXPIRY.store(soonest.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// Keeps an instance's identity (CF_INSTANCE_CERT: `instance.crt`, `instance.key`) current in
/// the identity dir beside its sidecar's cert dir, and the platform root in the
/// system-certificates dir: a key made here, a CSR, control's signature, an atomic write in
/// place (the app and the sidecar keep running), re-issued at 2/3 of its life. Returns when the
/// identity this check found expires, if there was one.
async fn sync_identity(
    client: &Client,
    cell: &str,
    cert_dir: &Path,
    inst: &c2c_api::Instance,
    now: i64,
) -> Option<i64> {
    use c2c_certs::identity::{CERT_FILE, KEY_FILE, ROOT_FILE};
    let dir = c2c_api::layout::identity_dir(cert_dir);
    let Ok(desired) = c2c_certs::SanSet::new([inst.guid.as_str()], [IpAddr::V4(inst.ip)]) else {
        warn!(instance = %inst.guid, "instance GUID is not a DNS name; no identity");
        return None;
    };
    let (reason, expiry) = pair_reason(&dir, (CERT_FILE, KEY_FILE), &desired, now);
    let Some(reason) = reason else {
        return expiry;
    };
    let (key_pem, csr_pem) = match c2c_certs::ca::new_key_and_csr() {
        Ok(x) => x,
        Err(error) => {
            warn!(%error, "making a key and CSR failed");
            return expiry;
        }
    };
    let signed = match client.sign_identity(cell, &inst.guid, &csr_pem).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, instance = %inst.guid, "identity signing failed");
            return expiry;
        }
    };
    let system = c2c_api::layout::system_certs_dir(cert_dir);
    let (d, s) = (dir.clone(), system.clone());
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(root) = signed.root_pem {
            std::fs::create_dir_all(&s)?;
            let path = s.join(ROOT_FILE);
            if std::fs::read(&path).ok().as_deref() != Some(root.as_bytes()) {
                c2c_certs::pair::write_file_atomic(&path, root.as_bytes(), 0o644)?;
            }
        }
        c2c_certs::pair::write_pair_named(
            &d,
            (CERT_FILE, KEY_FILE),
            signed.cert_pem.as_bytes(),
            key_pem.as_bytes(),
        )
    })
    .await;
    match written {
        Ok(Ok(())) => {
            info!(instance = %inst.guid, dir = %dir.display(), reason, "identity issued")
        }
        Ok(Err(error)) => warn!(%error, dir = %dir.display(), "writing the identity failed"),
        Err(error) => warn!(%error, "identity task failed"),
    }
    expiry
}

/// Writes what the sidecar of `inst` needs to decide on callers ([`c2c_api::access`]) into its
/// cert dir, when it changed: the sidecar reloads it as it does its certificate.
async fn sync_access(cert_dir: &Path, view: &CellView, inst: &c2c_api::Instance) {
    let access = c2c_api::access::Access::for_instance(view, inst);
    let path = cert_dir.join(c2c_api::access::ACCESS_FILE);
    let Ok(bytes) = serde_json::to_vec_pretty(&access) else {
        return;
    };
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        // The revision alone moving is no news to the sidecar.
        let old = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<c2c_api::access::Access>(&b).ok());
        if old.is_some_and(|o| {
            c2c_api::access::Access {
                revision: access.revision,
                ..o
            } == access
        }) {
            return Ok(false);
        }
        if let Some(parent) = path.parent().filter(|p| p.exists()) {
            c2c_certs::pair::write_file_atomic(
                &parent.join(c2c_api::access::ACCESS_FILE),
                &bytes,
                0o644,
            )?;
            return Ok(true);
        }
        Ok(false)
    })
    .await;
    match written {
        Ok(Ok(true)) => debug!(instance = %inst.guid, "access written"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            warn!(%error, dir = %cert_dir.display(), "writing the access file failed")
        }
        Err(error) => warn!(%error, "access task failed"),
    }
}
