//! What a certificate says about itself: SANs, serial, validity and fingerprint.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::names::SanSet;

/// The parts of a leaf certificate that rotation, the sidecar's `/cert` endpoint and tests read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub sans: SanSet,
    /// Serial number, lower-case hex.
    pub serial_hex: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the DER encoding, lower-case hex.
    pub sha256_hex: String,
}

/// A certificate that could not be parsed as X.509.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct InfoError(String);

impl CertInfo {
    /// Parses a DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, InfoError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| InfoError(e.to_string()))?;
        let mut sans = SanSet::default();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => {
                        sans.dns.insert(n.to_ascii_lowercase());
                    }
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            sans.ips.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        Ok(Self {
            common_name,
            sans,
            serial_hex: hex(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            sha256_hex: hex(digest.as_ref()),
        })
    }

    /// Total lifetime in seconds (not_after - not_before).
    pub fn lifetime_secs(&self) -> i64 {
        self.not_after - self.not_before
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The DER of the first certificate in a PEM bundle (the leaf, in a cert dir's `cert.pem`).
pub fn first_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, InfoError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| InfoError("no PEM certificate found".into()))?
        .map(|c| c.to_vec())
        .map_err(|e| InfoError(e.to_string()))
}

/// Whether the certificate `child_der` is signed by the key of `issuer_der` and names it as its
/// issuer (no validity or path checks: for telling which platform a certificate belongs to).
pub fn issued_by(child_der: &[u8], issuer_der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (Ok((_, child)), Ok((_, issuer))) = (
        X509Certificate::from_der(child_der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return false;
    };
    child.issuer() == issuer.subject() && child.verify_signature(Some(issuer.public_key())).is_ok()
}

#[cfg(test)]
mod issued_by_tests {
    use super::*;

    #[test]
    fn an_issuer_is_told_from_another_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, _) = crate::Pki::open_or_create(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let (other, _) = crate::Pki::open_or_create(other.path()).unwrap();
        let der = |pem: &str| first_der_from_pem(pem.as_bytes()).unwrap();
        let root = der(pki.root.cert_pem());
        let control = der(pki.control.cert_pem());
        assert!(issued_by(&control, &root));
        assert!(!issued_by(&control, &der(other.root.cert_pem())));
        assert!(!issued_by(&der(other.control.cert_pem()), &root));
        assert!(!issued_by(&root, &control));
    }
}
