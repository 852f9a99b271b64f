//! Trust on a pinned fingerprint, for a host joining a platform it has no CA file of yet (as
//! kubeadm's join pins the cluster CA's hash): the server's chain must contain a certificate
//! whose SHA-256 is the pin (control's issuer), and the leaf must verify against that
//! certificate as the only anchor, for the name connected to.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};

/// SHA-256 of `der`, lower-case hex.
pub fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies a server against the issuer in its own chain whose fingerprint is pinned.
#[derive(Debug)]
pub struct PinnedIssuer {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl PinnedIssuer {
    /// Pins `sha256_hex` (64 hex digits, case-insensitive).
    pub fn new(sha256_hex: &str, provider: Arc<CryptoProvider>) -> Self {
        PinnedIssuer {
            pin: sha256_hex.to_ascii_lowercase(),
            provider,
        }
    }
}

impl ServerCertVerifier for PinnedIssuer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let issuer = intermediates
            .iter()
            .find(|c| sha256_hex(c) == self.pin)
            .ok_or_else(|| {
                Error::General(format!(
                    "control's certificate chain holds no CA with the fingerprint in the join token ({}); refusing it",
                    self.pin
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(issuer.clone().into_owned())
            .map_err(|e| Error::General(e.to_string()))?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| Error::General(e.to_string()))?
        .verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
