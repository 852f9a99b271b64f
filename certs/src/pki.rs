//! The platform's trust: one root and an issuer per role, so a certificate of one role is never
//! accepted as another.
//!
//! ```text
//! CA_DIR/ca.pem, ca.key                    root "c2c platform CA" (trusted by app clients)
//! CA_DIR/control/ca.pem, ca.key            issuer of control's server certificate
//!                                          (the only anchor the CLI and cells trust for control)
//! CA_DIR/cells/ca.pem, ca.key              issuer of cell client certificates
//!                                          (the only anchor control's cell API accepts)
//! CA_DIR/instances/ca.pem, ca.key          issuer of instance (sidecar) server certificates
//! ```
//!
//! Every issuer is an intermediate under the root with path length 0. Leaves carry one usage
//! each ([`Usage`]): control's and the instances' serverAuth only, the cells' clientAuth only.
//! An instance certificate therefore cannot open the cell API (wrong issuer, no clientAuth), and
//! no certificate a cell can obtain is trusted as control (the CLI pins the control issuer).

use std::path::{Path, PathBuf};

use crate::ca::{Ca, CaError, CA_CERT_FILE};

/// One of the platform's issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Control's API server certificate.
    Control,
    /// Cells' client certificates.
    Cells,
    /// App instances' sidecar certificates.
    Instances,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Control, Role::Cells, Role::Instances];

    /// The issuer's sub-directory of the CA dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Cells => "cells",
            Role::Instances => "instances",
        }
    }

    fn common_name(self) -> &'static str {
        match self {
            Role::Control => "c2c control issuer",
            Role::Cells => "c2c cell issuer",
            Role::Instances => "c2c instance issuer",
        }
    }
}

/// The issuer certificate (PEM file) of `role` inside `ca_dir`: what a client pins.
pub fn issuer_cert_path(ca_dir: &Path, role: Role) -> PathBuf {
    ca_dir.join(role.dir_name()).join(CA_CERT_FILE)
}

/// The root and the three issuers, loaded.
#[derive(Debug)]
pub struct Pki {
    /// The root: it signs only the issuers.
    pub root: Ca,
    /// Signs control's server certificate.
    pub control: Ca,
    /// Signs cells' client certificates.
    pub cells: Ca,
    /// Signs instances' server certificates.
    pub instances: Ca,
}

impl Pki {
    /// Loads the PKI in `ca_dir`, creating whatever is missing: the root if there is none, and
    /// each issuer under it. Returns it and whether anything was created.
    pub fn open_or_create(ca_dir: &Path) -> Result<(Self, bool), CaError> {
        let mut created = false;
        let root = if ca_dir.join(CA_CERT_FILE).exists() {
            let root = Ca::load(ca_dir)?;
            // A root made before the per-role issuers (path length 0) cannot sign them: every
            // instance chain would then fail verification in the apps' clients.
            if root.path_len() == Some(0) {
                return Err(CaError::Invalid {
                    dir: ca_dir.to_path_buf(),
                    reason: "this platform CA was made by an older c2c and may not sign the per-role issuers (path length 0); make a new platform (c2c down, then c2c up) or move the ca dir away".into(),
                });
            }
            root
        } else {
            created = true;
            Ca::init(ca_dir, false)?
        };
        let mut issuer = |role: Role| -> Result<Ca, CaError> {
            let dir = ca_dir.join(role.dir_name());
            if dir.join(CA_CERT_FILE).exists() {
                return Ca::load(&dir);
            }
            created = true;
            let ca = root.intermediate(role.common_name())?;
            ca.save(&dir)?;
            Ok(ca)
        };
        let (control, cells, instances) = (
            issuer(Role::Control)?,
            issuer(Role::Cells)?,
            issuer(Role::Instances)?,
        );
        Ok((
            Self {
                root,
                control,
                cells,
                instances,
            },
            created,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{LeafKey, LeafRequest, Usage};
    use crate::names::SanSet;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;
    use std::time::Duration;

    fn leaf(ca: &Ca, usage: Usage) -> Vec<CertificateDer<'static>> {
        let pair = ca
            .issue(&LeafRequest {
                common_name: "x".into(),
                sans: SanSet::new(["x.apps.internal"], []).unwrap(),
                ttl: Duration::from_secs(600),
                key: LeafKey::EcdsaP256,
                usage,
            })
            .unwrap();
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn roots(pem: &str) -> Arc<rustls::RootCertStore> {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
        Arc::new(r)
    }

    #[test]
    fn a_root_that_may_not_sign_issuers_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let old = Ca::generate_with_path_len("old root", 0).unwrap();
        old.save(dir.path()).unwrap();
        let e = Pki::open_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("older c2c") && e.contains("c2c down"), "{e}");
        assert!(
            !dir.path().join("cells").exists(),
            "nothing was made under it"
        );
    }

    #[test]
    fn issuers_are_made_once_and_their_leaves_verify_only_in_their_role() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, created) = Pki::open_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = Pki::open_or_create(dir.path()).unwrap();
        assert!(!created, "a second open creates nothing");
        assert_eq!(again.cells.cert_pem(), pki.cells.cert_pem());
        assert!(issuer_cert_path(dir.path(), Role::Cells).exists());

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let now = UnixTime::now();
        // A server chain from the instance issuer verifies against the root (app clients).
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(pki.root.cert_pem()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let inst = leaf(&pki.instances, Usage::Server);
        let name = ServerName::try_from("x.apps.internal").unwrap();
        use rustls::client::danger::ServerCertVerifier;
        server
            .verify_server_cert(&inst[0], &inst[1..], &name, &[], now)
            .expect("positive control: an instance chain verifies against the root");
        // ... but not against the control issuer, which is all a control client trusts.
        let control_only = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(pki.control.cert_pem()),
            provider.clone(),
        )
        .build()
        .unwrap();
        assert!(control_only
            .verify_server_cert(&inst[0], &inst[1..], &name, &[], now)
            .is_err());

        // Control's cell API trusts the cell issuer only: a cell's client chain passes, an
        // instance's (other issuer, and serverAuth only) and a server-usage cell leaf do not.
        let cells = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(pki.cells.cert_pem()),
            provider,
        )
        .build()
        .unwrap();
        let cell = leaf(&pki.cells, Usage::Client);
        cells
            .verify_client_cert(&cell[0], &cell[1..], now)
            .expect("positive control: a cell chain is accepted");
        assert!(cells.verify_client_cert(&inst[0], &inst[1..], now).is_err());
        let cell_server = leaf(&pki.cells, Usage::Server);
        assert!(cells
            .verify_client_cert(&cell_server[0], &cell_server[1..], now)
            .is_err());
    }
}
