//! The CLI's client: the shared [`c2c_api::client::Client`] set up from the state dir, so no
//! command needs the URL, CA or token spelled out (nor the namespace of the local platform's
//! control plane).

use std::path::Path;

use anyhow::{Context, Result};
use c2c_api::client::Auth;
pub use c2c_api::client::Client;

use crate::layout::Layout;

/// Reads the URL, CA and token from the state dir.
pub fn from_state_dir(dir: &Path) -> Result<Client> {
    let l = Layout::new(dir);
    let url = match std::fs::read_to_string(l.url()) {
        Ok(url) => url,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no control plane runs for state dir {0} (no {1}): start a local platform with `c2c up --state-dir {0}`, or control alone with `c2c control serve --state-dir {0}`; or point --state-dir / C2C_STATE_DIR at the platform you mean",
            dir.display(),
            l.url().display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", l.url().display())),
    };
    let token = std::fs::read_to_string(l.token())
        .with_context(|| format!("reading {}", l.token().display()))?;
    // Control is trusted through its own issuer only: no other certificate of the platform (an
    // instance's or a cell's) can stand in for control and be handed the token.
    let ca_path = c2c_certs::pki::issuer_cert_path(&l.ca_dir(), c2c_certs::Role::Control);
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("reading the control issuer {}", ca_path.display()))?;
    let client = Client::new(&url, &ca, Auth::Token(token.trim().to_string()))?;
    Ok(match std::fs::read_to_string(l.netns()) {
        Ok(ns) => client.in_netns(ns.trim()),
        Err(_) => client,
    })
}
