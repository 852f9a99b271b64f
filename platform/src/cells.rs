//! A cell's identity, registered with control as any cell joins: its key made here (it never
//! leaves the host), its client certificate signed by control's cell issuer.

use std::path::Path;

use anyhow::{Context, Result};
use c2c_api::layout::Layout;

/// File (beside the cell's `cert.pem`) holding the issuer its agent trusts for control.
pub const CONTROL_CA_FILE: &str = "control-ca.pem";

/// Registers cell `name` with control and writes its identity into `out`: `cert.pem` and
/// `key.pem` (a pair, written atomically) and [`CONTROL_CA_FILE`]. Registering a name again
/// replaces its certificate: the previous one is refused from then on.
pub fn register(state_dir: &Path, name: &str, out: &Path) -> Result<()> {
    let client = crate::client(state_dir)?;
    let name: c2c_api::CellName = name.parse().map_err(anyhow::Error::msg)?;
    let (key_pem, csr_pem) = c2c_certs::ca::new_key_and_csr()?;
    let signed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client.register_cell(&name, &csr_pem))?;
    c2c_certs::pair::write_pair(out, signed.cert_pem.as_bytes(), key_pem.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let issuer = Layout::new(state_dir).control_issuer();
    let pem = std::fs::read(&issuer).with_context(|| format!("reading {}", issuer.display()))?;
    c2c_certs::pair::write_file_atomic(&out.join(CONTROL_CA_FILE), &pem, 0o644)
        .with_context(|| format!("writing {}", out.join(CONTROL_CA_FILE).display()))?;
    Ok(())
}
