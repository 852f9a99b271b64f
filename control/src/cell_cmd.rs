//! `c2c cell register|remove` and `c2c cells`: the registry of cells control accepts on its
//! cell API. A cell's key is made where the command runs and never leaves it; control signs its
//! CSR with the cell issuer and records the certificate's fingerprint.

use std::path::Path;

use anyhow::{Context, Result};
use hyper::Method;

use crate::layout::Layout;

/// File (beside the cell's `cert.pem`) holding the issuer its agent trusts for control.
pub const CONTROL_CA_FILE: &str = "control-ca.pem";

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Registers cell `name` with control and writes its identity into `out`: `cert.pem` and
/// `key.pem` (a pair, written atomically) and [`CONTROL_CA_FILE`]. Registering a name again
/// replaces its certificate: the previous one is refused from then on.
pub fn register(state_dir: &Path, name: &str, out: &Path) -> Result<()> {
    let client = crate::client::from_state_dir(state_dir)?;
    let (key_pem, csr_pem) = c2c_certs::ca::new_key_and_csr()?;
    let body = serde_json::json!({ "name": name, "csr": csr_pem });
    let answer = runtime()?.block_on(client.call(Method::POST, "/v1/cells", Some(&body)))?;
    let chain = answer["cert_pem"]
        .as_str()
        .context("control answered without a certificate")?;
    c2c_certs::pair::write_pair(out, chain.as_bytes(), key_pem.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let issuer = c2c_certs::pki::issuer_cert_path(
        &Layout::new(state_dir).ca_dir(),
        c2c_certs::Role::Control,
    );
    let pem = std::fs::read(&issuer).with_context(|| format!("reading {}", issuer.display()))?;
    c2c_certs::pair::write_file_atomic(&out.join(CONTROL_CA_FILE), &pem, 0o644)
        .with_context(|| format!("writing {}", out.join(CONTROL_CA_FILE).display()))?;
    Ok(())
}

/// Revokes cell `name`: control refuses its certificate, frees its lease and removes its
/// instances; the other cells drop their routes to it.
pub fn remove(state_dir: &Path, name: &str) -> Result<()> {
    let client = crate::client::from_state_dir(state_dir)?;
    runtime()?.block_on(client.call(
        Method::DELETE,
        &format!("/v1/cells/{}", c2c_api::path_segment(name)),
        None,
    ))?;
    Ok(())
}

/// Lists registered cells with their leases.
pub fn list(state_dir: &Path) -> Result<()> {
    let client = crate::client::from_state_dir(state_dir)?;
    let v = runtime()?.block_on(client.call(Method::GET, "/v1/cells", None))?;
    println!("{:<16} {:<18} underlay", "name", "subnet");
    for c in v["cells"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<18} {}",
            c["name"].as_str().unwrap_or("?"),
            c["lease"]["subnet"].as_str().unwrap_or("-"),
            c["lease"]["underlay_ip"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}
