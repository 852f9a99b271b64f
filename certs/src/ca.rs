//! The platform CA: created once (`c2c certs ca init`), then used to sign per-instance leaves.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
    PKCS_RSA_SHA256,
};
use time::OffsetDateTime;

use crate::names::SanSet;
use crate::pair::write_file_atomic;

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a CA made by [`Ca::generate`] is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far `not_before` is back-dated, so peers with a slightly slow clock accept a fresh cert.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA already exists where `init` was asked to create one, and `force` was not given.
    #[error("a CA already exists in {0} (use --force to replace it)")]
    Exists(PathBuf),
    /// Reading or writing a CA file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CA files could not be parsed, or the key does not belong to the certificate.
    #[error("CA in {dir} is not usable: {reason}")]
    Invalid {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A leaf request names nothing to certify.
    #[error("a certificate needs at least one DNS name or IP address")]
    NoNames,
    /// The TTL is zero or too long to represent.
    #[error("certificate TTL {0:?} is not usable")]
    BadTtl(Duration),
    /// The certificate signing request could not be parsed or its signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(rcgen::Error),
    /// rcgen refused to build or sign the certificate.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
    /// A name to certify is not valid.
    #[error(transparent)]
    Names(#[from] crate::names::NameError),
    /// A certificate came out in a shape it should not have (a bug, not an input error).
    #[error("encoding failed: {0}")]
    Encoding(String),
}

/// The kind of key a leaf gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeafKey {
    /// ECDSA P-256: small, and the fastest TLS server handshake in rustls. The default.
    #[default]
    EcdsaP256,
    /// RSA 2048, for clients that cannot do ECDSA.
    Rsa2048,
}

/// What a leaf may be used for (its extended key usage). Each role of the platform gets only
/// the usage it needs, so a certificate of one role is never accepted as another: an instance's
/// sidecar certificate cannot authenticate a TLS client, a cell's cannot serve TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth only: sidecars and control's API. The default.
    #[default]
    Server,
    /// clientAuth only: cells calling control.
    Client,
    /// Both, for a certificate deliberately given a client role too (`c2c certs issue
    /// --client-auth`).
    ServerAndClient,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// Subject CN: the instance id (Diego uses the instance GUID).
    pub common_name: String,
    /// DNS names (internal routes) and IPs.
    pub sans: SanSet,
    /// Validity from now (not_before is back-dated by [`BACKDATE`] on top).
    pub ttl: Duration,
    /// Key algorithm of the new leaf key.
    pub key: LeafKey,
    /// What the leaf may be used for.
    pub usage: Usage,
}

/// A freshly issued leaf: the chain (leaf, then CA) and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedPair {
    /// Leaf certificate followed by the CA certificate.
    pub cert_pem: String,
    /// PKCS#8 private key of the leaf.
    pub key_pem: String,
}

/// A loaded CA: its certificate and the key that signs with it.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Makes a new self-signed ECDSA P-256 root CA in memory, valid for [`CA_VALIDITY`]. It may
    /// sign one level of intermediates (the platform's per-role issuers, see [`crate::pki`]).
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        Self::generate_with_path_len(common_name, 1)
    }

    /// A self-signed root that may sign `path_len` levels of intermediate CAs.
    pub fn generate_with_path_len(common_name: &str, path_len: u8) -> Result<Self, CaError> {
        let params = ca_params(common_name, path_len)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Makes a new intermediate CA signed by this one (which must be a root made by
    /// [`Ca::generate`]): it signs leaves only (path length 0). Its [`Ca::cert_pem`] is the
    /// intermediate alone, so the chains it issues are leaf + intermediate, and a client that
    /// trusts the root verifies them.
    pub fn intermediate(&self, common_name: &str) -> Result<Self, CaError> {
        let params = ca_params(common_name, 0)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes this CA into `dir` (`ca.key` mode 0600 first, then `ca.pem`), each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        fs::create_dir_all(dir).map_err(|source| CaError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        // Key first: a reader that finds ca.pem can count on ca.key being there.
        for (path, body, mode) in [
            (dir.join(CA_KEY_FILE), &self.key_pem, 0o600),
            (dir.join(CA_CERT_FILE), &self.cert_pem, 0o644),
        ] {
            write_file_atomic(&path, body.as_bytes(), mode).map_err(|source| CaError::Io {
                op: "writing",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Creates a CA in `dir` (`ca.pem`, and `ca.key` with mode 0600). Refuses to replace an
    /// existing one unless `force`.
    pub fn init(dir: &Path, force: bool) -> Result<Self, CaError> {
        if !force && (dir.join(CA_CERT_FILE).exists() || dir.join(CA_KEY_FILE).exists()) {
            return Err(CaError::Exists(dir.to_path_buf()));
        }
        let ca = Self::generate("c2c platform CA")?;
        ca.save(dir)?;
        Ok(ca)
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| CaError::Io {
                op: "reading",
                path,
                source,
            })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let invalid = |reason: String| CaError::Invalid {
            dir: dir.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(format!("ca.key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| invalid(format!("ca.pem: {e}")))?;
        // The key must be the one the certificate names, or every leaf would fail verification.
        use rustls::pki_types::pem::PemObject;
        let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("ca.pem: {e}")))?;
        let info = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(format!("ca.pem: {e}")))?
            .1;
        if info.public_key().subject_public_key.data.as_ref() != issuer.key().public_key_raw() {
            return Err(invalid("ca.key does not belong to ca.pem".into()));
        }
        Ok(Self {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// The certificate's path length constraint, if it has one.
    pub fn path_len(&self) -> Option<u32> {
        use rustls::pki_types::pem::PemObject;
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        let bc = cert.basic_constraints().ok()??;
        bc.value.path_len_constraint
    }

    /// The issuer (certificate parameters and key) that signs leaves.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA certificate, PEM: the trust root clients need.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf: CN = request's common name, SANs = its names and IPs, EKU as the request's
    /// [`Usage`], a random serial, not_before back-dated, a fresh key.
    pub fn issue(&self, req: &LeafRequest) -> Result<IssuedPair, CaError> {
        let params = leaf_params(&req.common_name, &req.sans, req.ttl, req.usage)?;
        let key = match req.key {
            LeafKey::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            LeafKey::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
        };
        let leaf = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedPair {
            cert_pem: format!("{}{}", leaf.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate signing request (PEM) for a key held elsewhere: only the CSR's public
    /// key is used (after its signature is checked); the subject, names and validity are the
    /// CA's decision, never the requester's. Returns the chain (leaf, then CA), PEM.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        sans: &SanSet,
        ttl: Duration,
        usage: Usage,
    ) -> Result<String, CaError> {
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let signed = rcgen::CertificateSigningRequestParams {
            params: leaf_params(common_name, sans, ttl, usage)?,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(format!("{}{}", signed.pem(), self.cert_pem))
    }
}

/// A fresh ECDSA P-256 key and a CSR for it: `(key_pem, csr_pem)`. The CSR names nothing; the
/// CA decides the names.
pub fn new_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The parameters of a CA certificate that may sign `path_len` more levels of CAs.
fn ca_params(common_name: &str, path_len: u8) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "c2c");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = path_len == 0;
    params.serial_number = Some(random_serial());
    let (nb, na) = validity(CA_VALIDITY)?;
    params.not_before = nb;
    params.not_after = na;
    Ok(params)
}

/// The parameters every leaf gets.
pub(crate) fn leaf_params(
    common_name: &str,
    sans: &SanSet,
    ttl: Duration,
    usage: Usage,
) -> Result<CertificateParams, CaError> {
    if sans.is_empty() {
        return Err(CaError::NoNames);
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for name in &sans.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    for ip in &sans.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let (nb, na) = validity(ttl)?;
    params.not_before = nb;
    params.not_after = na;
    Ok(params)
}

/// A random 128-bit serial with the top bit clear (positive, RFC 5280's 20-octet limit).
/// rcgen's default serial is a hash of the public key, which repeats whenever a key is reused.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc's DRBG only fails if the process cannot get entropy at all; fall back to the clock
    // mixed with a counter rather than panic, which still never repeats within a process.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        bytes[..8].copy_from_slice(&now.to_be_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40; // keep 16 octets: no leading zero to be stripped
    SerialNumber::from_slice(&bytes)
}

fn validity(ttl: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    let now = OffsetDateTime::now_utc();
    let ttl_t = time::Duration::try_from(ttl).map_err(|_| CaError::BadTtl(ttl))?;
    if ttl.is_zero() {
        return Err(CaError::BadTtl(ttl));
    }
    let not_after = now.checked_add(ttl_t).ok_or(CaError::BadTtl(ttl))?;
    let not_before = now - time::Duration::try_from(BACKDATE).unwrap_or(time::Duration::ZERO);
    Ok((not_before, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::CertInfo;
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    fn leaf_req(names: &[&str]) -> LeafRequest {
        LeafRequest {
            common_name: "instance-1".into(),
            sans: SanSet::new(names.iter().copied(), ["10.255.1.2".parse().unwrap()]).unwrap(),
            ttl: Duration::from_secs(3600),
            key: LeafKey::EcdsaP256,
            usage: Usage::Server,
        }
    }

    #[test]
    fn csr_signing_takes_only_the_key_and_decides_the_names() {
        let ca = Ca::generate("test ca").unwrap();
        let (key_pem, csr_pem) = new_key_and_csr().unwrap();
        let sans = SanSet::new(["appb.apps.internal"], ["10.255.1.2".parse().unwrap()]).unwrap();
        let chain = ca
            .sign_csr(
                &csr_pem,
                "inst-guid",
                &sans,
                Duration::from_secs(3600),
                Usage::Server,
            )
            .unwrap();
        let der = crate::info::first_der_from_pem(chain.as_bytes()).unwrap();
        let info = CertInfo::from_der(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("inst-guid"));
        assert_eq!(info.sans, sans);
        // The pair loads: the cert carries the CSR's key.
        let dir = tempfile::tempdir().unwrap();
        crate::pair::write_pair(dir.path(), chain.as_bytes(), key_pem.as_bytes()).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        crate::pair::load(dir.path(), &provider, info.not_before + 10).unwrap();
        assert!(matches!(
            ca.sign_csr(
                "not a csr",
                "x",
                &sans,
                Duration::from_secs(60),
                Usage::Server
            ),
            Err(CaError::BadCsr(_))
        ));
    }

    #[test]
    fn issues_leaf_with_requested_sans_and_chain() {
        let ca = Ca::generate("test CA").unwrap();
        let pair = ca.issue(&leaf_req(&["appb.apps.internal"])).unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf then CA");
        let info = CertInfo::from_der(&chain[0]).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("instance-1"));
        assert!(info.sans.dns.contains("appb.apps.internal"));
        assert!(info.sans.ips.contains(&"10.255.1.2".parse().unwrap()));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(info.not_before <= now - 240, "not_before is back-dated");
        assert!((info.not_after - now - 3600).abs() < 10);
    }

    #[test]
    fn serials_differ_between_issues() {
        let ca = Ca::generate("test CA").unwrap();
        let serial = |p: &IssuedPair| {
            let der = CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).unwrap();
            CertInfo::from_der(&der).unwrap().serial_hex
        };
        let a = serial(&ca.issue(&leaf_req(&["a.apps.internal"])).unwrap());
        let b = serial(&ca.issue(&leaf_req(&["a.apps.internal"])).unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn refuses_empty_sans_and_zero_ttl() {
        let ca = Ca::generate("test CA").unwrap();
        let mut req = leaf_req(&[]);
        req.sans = SanSet::default();
        assert!(matches!(ca.issue(&req), Err(CaError::NoNames)));
        let mut req = leaf_req(&["a.b"]);
        req.ttl = Duration::ZERO;
        assert!(matches!(ca.issue(&req), Err(CaError::BadTtl(_))));
    }

    #[test]
    fn init_refuses_overwrite_and_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), false).unwrap();
        assert!(matches!(
            Ca::init(dir.path(), false),
            Err(CaError::Exists(_))
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        // --force replaces it with a different CA.
        let replaced = Ca::init(dir.path(), true).unwrap();
        assert_ne!(replaced.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn load_refuses_key_of_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        Ca::init(dir.path(), false).unwrap();
        let other = Ca::generate("other").unwrap();
        fs::write(dir.path().join(CA_KEY_FILE), &other.key_pem).unwrap();
        let err = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        fs::write(dir.path().join(CA_KEY_FILE), "garbage").unwrap();
        assert!(matches!(Ca::load(dir.path()), Err(CaError::Invalid { .. })));
    }
}
