//! A cell's identity, obtained as any cell joins: with a one-time join token, its key made
//! here (it never leaves the host), control verified against the CA the token pins, its client
//! certificate signed by control's cell issuer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use c2c_api::client::Client;
use c2c_api::CellName;

/// File (beside the cell's `cert.pem`) holding the issuer its agent trusts for control.
pub const CONTROL_CA_FILE: &str = "control-ca.pem";

/// The prefix of a join token: `c2cjoin.<secret>.<sha256 of the control issuer>`.
pub const JOIN_PREFIX: &str = "c2cjoin";

/// The two parts of a join token: (secret, pinned fingerprint).
pub fn parse_join_token(token: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [JOIN_PREFIX, secret, pin] = parts.as_slice() else {
        bail!("join token: expected {JOIN_PREFIX}.<secret>.<fingerprint>, as `c2c cell token create` prints it");
    };
    if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("join token: the fingerprint part must be 64 hex digits");
    }
    Ok((secret.to_string(), pin.to_ascii_lowercase()))
}

/// Joins as cell `name` through `client` (a [`Client::pinned`] one) with the token's `secret`,
/// and writes the identity into `out`: `cert.pem` and `key.pem` (a pair, written atomically)
/// and [`CONTROL_CA_FILE`], which must be the CA `pin` names.
pub async fn join_with(
    client: &Client,
    secret: &str,
    pin: &str,
    name: &CellName,
    out: &Path,
) -> Result<()> {
    let (key_pem, csr) = c2c_certs::ca::new_key_and_csr()?;
    let joined = client
        .join(&c2c_api::types::JoinRequest {
            secret: secret.to_string(),
            name: name.to_string(),
            csr,
        })
        .await
        .context("joining")?;
    // What control handed over must be the CA the token pins (what the TLS session was
    // verified against): the agent trusts exactly that from now on.
    let der = c2c_certs::info::first_der_from_pem(joined.control_ca_pem.as_bytes())?;
    if c2c_api::pin::sha256_hex(&der) != pin {
        bail!("control handed over a CA other than the one the token pins; refusing it");
    }
    c2c_certs::pair::write_pair(out, joined.cert_pem.as_bytes(), key_pem.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let ca = out.join(CONTROL_CA_FILE);
    c2c_certs::pair::write_file_atomic(&ca, joined.control_ca_pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", ca.display()))?;
    // The platform root, for what runs on this host and verifies apps (curl --cacert). It must
    // chain to the same platform as the control issuer the token pins.
    if let Some(root) = &joined.root_pem {
        verify_root(root, &joined.control_ca_pem)?;
        let path = out.join(PLATFORM_CA_FILE);
        c2c_certs::pair::write_file_atomic(&path, root.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The platform root `c2c cell join` writes beside the cell's identity.
pub const PLATFORM_CA_FILE: &str = "platform-ca.pem";

/// Checks that `root_pem` is the issuer of the control issuer `control_pem` (pinned by the
/// join token): control cannot hand a joining host a root of another platform.
fn verify_root(root_pem: &str, control_pem: &str) -> Result<()> {
    let root = c2c_certs::info::first_der_from_pem(root_pem.as_bytes())?;
    let control = c2c_certs::info::first_der_from_pem(control_pem.as_bytes())?;
    if !c2c_certs::info::issued_by(&control, &root) {
        bail!("control handed over a platform root that did not issue its control issuer; refusing it");
    }
    Ok(())
}

/// The fingerprint a join token of the platform at `state_dir` pins: its control issuer's.
pub fn control_pin(state_dir: &Path) -> Result<String> {
    let issuer = c2c_api::client::control_issuer_path(state_dir);
    let pem = std::fs::read(&issuer).with_context(|| format!("reading {}", issuer.display()))?;
    Ok(c2c_api::pin::sha256_hex(
        &c2c_certs::info::first_der_from_pem(&pem)?,
    ))
}

/// Registers cell `name` of the platform at `state_dir` the way every cell joins (a join token
/// for that name made with the admin token, then [`join_with`]) and writes its identity into
/// `out`. Registering a name again revokes the certificate it had.
pub fn register(state_dir: &Path, name: &str, out: &Path) -> Result<()> {
    let name: CellName = name.parse().map_err(anyhow::Error::msg)?;
    let admin = crate::client(state_dir)?;
    let pin = control_pin(state_dir)?;
    let mut pinned = Client::pinned(admin.url(), &pin)?;
    if let Some(c) = crate::connector(state_dir) {
        pinned = pinned.with_connector(c);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let token = admin
                .create_join_token(std::time::Duration::from_secs(60), Some(name.as_str()))
                .await?;
            join_with(&pinned, &token.secret, &pin, &name, out).await
        })
}
