//! Instance identity: the certificate every app instance holds to prove who it is (Cloud
//! Foundry's "App and Container Identity Assurance"), and how a sidecar reads one back.
//!
//! The leaf is Diego's: subject CN = the instance GUID and three OUs, `organization:<org guid>`,
//! `space:<space guid>`, `app:<app guid>`; SAN DNS = the instance GUID, SAN IP = its overlay
//! address; usages serverAuth and clientAuth. Beyond CF, a URI SAN carries a SPIFFE ID naming
//! the app, `spiffe://<trust domain>/app/<app guid>`, so SPIFFE-aware libraries can authorize by
//! it. Signed by the instances issuer from a CSR: the key is made on the cell and never leaves it.
//!
//! rcgen keeps one value per attribute type in a subject, and Diego's subject has three OUs. The
//! second and third are written under two placeholder attribute types whose OIDs encode to the
//! same length as the OU's (2.5.4.12 and 2.5.4.13), their bytes in the subject are rewritten to
//! the OU's OID (2.5.4.11), and the to-be-signed part is signed again with the issuer's key. The
//! lengths do not move, so the result is a well-formed certificate; the tests parse it with
//! x509-parser and openssl and verify its chain with webpki.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{DistinguishedName, DnType, SanType, SigningKey};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::ca::{leaf_params, Ca, CaError, Usage};
use crate::names::SanSet;

/// The certificate file of an identity dir (CF's `/etc/cf-instance-credentials/instance.crt`):
/// the leaf, then its issuer.
pub const CERT_FILE: &str = "instance.crt";
/// The key file of an identity dir (mode 0600).
pub const KEY_FILE: &str = "instance.key";
/// The root's file in a system-certificates dir (CF_SYSTEM_CERT_PATH).
pub const ROOT_FILE: &str = "c2c-platform-ca.pem";
/// Where a container with its own filesystem finds its identity, as in Cloud Foundry.
pub const CONTAINER_IDENTITY_DIR: &str = "/etc/cf-instance-credentials";
/// Where a container with its own filesystem finds the platform root, as in Cloud Foundry.
pub const CONTAINER_SYSTEM_CERTS_DIR: &str = "/etc/cf-system-certificates";

/// The SPIFFE trust domain when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "c2c.internal";

/// CF's default validity for instance identity: 24 hours.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

const OU_OID: [u8; 3] = [0x55, 0x04, 0x0b];
/// Placeholder attribute types for the second and third OU (title, description): same length.
const PLACEHOLDERS: [[u64; 4]; 2] = [[2, 5, 4, 12], [2, 5, 4, 13]];

/// Who an instance is, as its identity certificate says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The instance GUID (subject CN, DNS SAN).
    pub instance_guid: String,
    /// Its app's GUID (`OU=app:`).
    pub app_guid: String,
    /// Its space's GUID (`OU=space:`).
    pub space_guid: String,
    /// Its org's GUID (`OU=organization:`).
    pub org_guid: String,
    /// The URI SAN, `spiffe://<trust domain>/app/<app guid>`.
    pub spiffe_id: String,
}

impl Identity {
    /// The identity of an instance, with the SPIFFE ID in `trust_domain`.
    pub fn new(
        trust_domain: &str,
        instance_guid: &str,
        app_guid: &str,
        space_guid: &str,
        org_guid: &str,
    ) -> Self {
        Self {
            instance_guid: instance_guid.into(),
            app_guid: app_guid.into(),
            space_guid: space_guid.into(),
            org_guid: org_guid.into(),
            spiffe_id: spiffe_id(trust_domain, app_guid),
        }
    }

    /// Reads the identity a leaf certificate (DER) carries; `None` if it is not an instance
    /// identity (no `app:` OU, no CN). Nothing here checks the signature or validity: call it
    /// on a certificate a verifier accepted.
    pub fn from_der(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut id = Identity {
            instance_guid: String::new(),
            app_guid: String::new(),
            space_guid: String::new(),
            org_guid: String::new(),
            spiffe_id: String::new(),
        };
        for attr in cert.subject().iter_attributes() {
            let Ok(v) = attr.as_str() else { continue };
            if attr.attr_type().as_bytes() == OU_OID {
                if let Some(g) = v.strip_prefix("app:") {
                    id.app_guid = g.into();
                } else if let Some(g) = v.strip_prefix("space:") {
                    id.space_guid = g.into();
                } else if let Some(g) = v.strip_prefix("organization:") {
                    id.org_guid = g.into();
                }
            }
        }
        id.instance_guid = cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .into();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    if u.starts_with("spiffe://") {
                        id.spiffe_id = (*u).into();
                    }
                }
            }
        }
        (!id.app_guid.is_empty() && !id.instance_guid.is_empty()).then_some(id)
    }
}

/// The SPIFFE ID of an app: `spiffe://<trust domain>/app/<app guid>`.
pub fn spiffe_id(trust_domain: &str, app_guid: &str) -> String {
    format!("spiffe://{trust_domain}/app/{app_guid}")
}

/// Whether `s` is a usable SPIFFE trust domain: lower-case letters, digits, `.`, `-`, `_`,
/// 1-255 characters (the SPIFFE ID spec's rule).
pub fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Ca {
    /// Signs an identity certificate for `id` at overlay address `ip` from a CSR (only its
    /// public key is used), valid for `ttl`. Returns the chain (leaf, then this issuer), PEM.
    pub fn sign_identity_csr(
        &self,
        csr_pem: &str,
        id: &Identity,
        ip: IpAddr,
        ttl: Duration,
    ) -> Result<String, CaError> {
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let sans = SanSet::new([id.instance_guid.as_str()], [ip]).map_err(CaError::Names)?;
        let mut params = leaf_params(&id.instance_guid, &sans, ttl, Usage::ServerAndClient)?;
        params
            .subject_alt_names
            .push(SanType::URI(id.spiffe_id.as_str().try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationalUnitName,
            format!("organization:{}", id.org_guid),
        );
        dn.push(
            DnType::CustomDnType(PLACEHOLDERS[0].to_vec()),
            format!("space:{}", id.space_guid),
        );
        dn.push(
            DnType::CustomDnType(PLACEHOLDERS[1].to_vec()),
            format!("app:{}", id.app_guid),
        );
        dn.push(DnType::CommonName, id.instance_guid.as_str());
        params.distinguished_name = dn;
        let signed = rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(self.issuer())?;
        let der = three_ous(signed.der(), self.issuer().key())?;
        let leaf = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Ok(format!("{leaf}{}", self.cert_pem()))
    }
}

/// Rewrites the placeholder attribute types in the subject of `der` to the OU's and signs the
/// to-be-signed part again with `key` (the issuer's, same algorithm).
fn three_ous(der: &[u8], key: &impl SigningKey) -> Result<Vec<u8>, CaError> {
    let bad = |why: &str| CaError::Encoding(format!("identity certificate: {why}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(&e.to_string()))?;
    let subject = cert.subject().as_raw();
    let start = subject.as_ptr() as usize - der.as_ptr() as usize;
    let range = start..start + subject.len();
    let (outer_hdr, _) = tlv(der, 0).ok_or_else(|| bad("outer"))?;
    let (tbs_hdr, tbs_len) = tlv(der, outer_hdr).ok_or_else(|| bad("tbs"))?;
    let tbs_end = outer_hdr + tbs_hdr + tbs_len;
    let (alg_hdr, alg_len) = tlv(der, tbs_end).ok_or_else(|| bad("algorithm"))?;
    let alg = &der[tbs_end..tbs_end + alg_hdr + alg_len];
    let mut tbs = der[outer_hdr..tbs_end].to_vec();
    let mut rewritten = 0;
    for p in PLACEHOLDERS {
        let from = [0x06, 0x03, 0x55, 0x04, p[3] as u8];
        let to = [0x06, 0x03, OU_OID[0], OU_OID[1], OU_OID[2]];
        let local = (range.start - outer_hdr)..(range.end - outer_hdr);
        if let Some(at) = tbs[local.clone()].windows(5).position(|w| w == from) {
            tbs[local.start + at..local.start + at + 5].copy_from_slice(&to);
            rewritten += 1;
        }
    }
    if rewritten != PLACEHOLDERS.len() {
        return Err(bad("placeholder attributes not found"));
    }
    let sig = key.sign(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    let mut body = tbs;
    body.extend_from_slice(alg);
    body.extend(der_tlv(0x03, &bits));
    Ok(der_tlv(0x30, &body))
}

/// The header length and content length of the DER element at `at`.
fn tlv(der: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *der.get(at + 1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *der.get(at + 2 + i)? as usize;
    }
    Some((2 + n, len))
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::new_key_and_csr;
    use rustls::pki_types::{pem::PemObject, CertificateDer, UnixTime};

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn sample() -> Identity {
        Identity::new(
            "c2c.internal",
            "6e3c0ea3-5cbe-4a37-a8a2-5a0d9e4b8f01",
            "0b1e2a8e-1111-4c8e-9b0e-1f2a3b4c5d6e",
            "5pace000-2222-4c8e-9b0e-1f2a3b4c5d6e",
            "0r9a0000-3333-4c8e-9b0e-1f2a3b4c5d6e",
        )
    }

    #[test]
    fn the_leaf_is_diegos_with_three_ous_and_a_spiffe_id_and_its_chain_verifies() {
        let root = Ca::generate("root").unwrap();
        let issuer = root.intermediate("c2c instance issuer").unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let id = sample();
        let pem = issuer
            .sign_identity_csr(
                &csr,
                &id,
                "10.255.1.2".parse().unwrap(),
                Duration::from_secs(3600),
            )
            .unwrap();
        let certs = chain(&pem);
        assert_eq!(certs.len(), 2, "leaf then issuer");
        let (_, x) = X509Certificate::from_der(&certs[0]).unwrap();
        let ous: Vec<String> = x
            .subject()
            .iter_organizational_unit()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            ous,
            [
                format!("organization:{}", id.org_guid),
                format!("space:{}", id.space_guid),
                format!("app:{}", id.app_guid),
            ]
        );
        assert_eq!(Identity::from_der(&certs[0]), Some(id.clone()));
        let info = crate::CertInfo::from_der(&certs[0]).unwrap();
        assert!(info.sans.dns.contains(&id.instance_guid));
        assert!(info
            .sans
            .ips
            .contains(&"10.255.1.2".parse::<IpAddr>().unwrap()));

        // The re-signed leaf verifies under the issuer, for client and server use.
        let anchor = webpki::anchor_from_trusted_cert(&certs[1]).unwrap();
        let ee = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
        let algs = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all;
        for usage in [
            webpki::KeyUsage::client_auth(),
            webpki::KeyUsage::server_auth(),
        ] {
            ee.verify_for_usage(
                algs,
                std::slice::from_ref(&anchor),
                &[],
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .unwrap();
        }
    }

    #[test]
    fn a_route_certificate_is_no_identity() {
        let ca = Ca::generate("t").unwrap();
        let (_k, csr) = new_key_and_csr().unwrap();
        let pem = ca
            .sign_csr(
                &csr,
                "inst",
                &SanSet::new(["appb.apps.internal"], []).unwrap(),
                Duration::from_secs(60),
                Usage::Server,
            )
            .unwrap();
        assert_eq!(Identity::from_der(&chain(&pem)[0]), None);
    }

    #[test]
    fn trust_domains_follow_the_spiffe_rule() {
        assert!(valid_trust_domain("c2c.internal"));
        assert!(valid_trust_domain("prod-1.example.org"));
        for bad in ["", "C2C", "a/b", "a b", "spiffe://x"] {
            assert!(!valid_trust_domain(bad), "{bad:?}");
        }
    }
}
