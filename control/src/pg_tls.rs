//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert` in the URL, so an operator
//! writes the URL as for `psql`:
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default, as libpq) | when the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, its chain (libpq's rule) |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and names the host |
//!
//! rust-postgres knows the first three modes only, and no `sslrootcert`: both are taken out of
//! the URL here, and the rustls client config says what is verified.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StateError;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// A database URL split into rust-postgres's config and the TLS connector its `sslmode`
/// asks for.
pub fn config(url: &str) -> Result<(postgres::Config, MakeRustlsConnect), StateError> {
    let bad = |m: String| StateError::Invalid(format!("database URL: {m}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = "prefer".to_string();
    let mut root: Option<String> = None;
    let mut rest = vec![];
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => mode = v.to_string(),
            Some(("sslrootcert", v)) => root = Some(percent_decode(v)),
            _ => rest.push(kv),
        }
    }
    let (pg_mode, verify) = match (mode.as_str(), root.is_some()) {
        ("disable", _) => (postgres::config::SslMode::Disable, Verify::Nothing),
        ("prefer" | "allow", _) => (postgres::config::SslMode::Prefer, Verify::Nothing),
        ("require", false) => (postgres::config::SslMode::Require, Verify::Nothing),
        ("require" | "verify-ca", true) => (postgres::config::SslMode::Require, Verify::Chain),
        ("verify-full", true) => (postgres::config::SslMode::Require, Verify::ChainAndName),
        ("verify-ca" | "verify-full", false) => {
            return Err(bad(format!(
            "sslmode={mode} needs sslrootcert=FILE (the CA that signed the server's certificate)"
        )))
        }
        (other, _) => {
            return Err(bad(format!(
                "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    let plain = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut cfg: postgres::Config = plain.parse().map_err(|e| bad(format!("{e}")))?;
    cfg.ssl_mode(pg_mode);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StateError::Internal(e.to_string()))?;
    let tls = match (verify, root) {
        (Verify::Nothing, _) | (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient {
                provider,
                chain: None,
            }))
            .with_no_client_auth(),
        (v, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {path}: no certificate in it")));
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            if v == Verify::ChainAndName {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Lenient {
                        provider,
                        chain: Some(webpki),
                    }))
                    .with_no_client_auth()
            }
        }
    };
    Ok((cfg, MakeRustlsConnect::new(tls)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's weaker modes: `require` and `prefer` without a root check nothing of the
/// certificate (`chain` none: encryption only); `verify-ca` checks the chain to the root but not
/// the name. Handshake signatures are always verified with the provider's algorithms.
#[derive(Debug)]
struct Lenient {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_ssl_parameters_are_taken_out_and_checked() {
        let (cfg, _) = config("postgres://c2c@db:5432/c2c?sslmode=require").unwrap();
        assert_eq!(cfg.get_ssl_mode(), postgres::config::SslMode::Require);
        let (cfg, _) = config("postgres://c2c@db/c2c").unwrap();
        assert_eq!(cfg.get_ssl_mode(), postgres::config::SslMode::Prefer);
        let (cfg, _) = config("postgres://c2c@db/c2c?sslmode=disable&application_name=x").unwrap();
        assert_eq!(cfg.get_ssl_mode(), postgres::config::SslMode::Disable);
        assert_eq!(cfg.get_application_name(), Some("x"));
        for (url, says) in [
            (
                "postgres://c2c@db/c2c?sslmode=verify-full",
                "needs sslrootcert",
            ),
            ("postgres://c2c@db/c2c?sslmode=maybe", "use disable, prefer"),
            (
                "postgres://c2c@db/c2c?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
                "/no/such/ca.pem",
            ),
        ] {
            match config(url) {
                Err(StateError::Invalid(m)) => assert!(m.contains(says), "{url}: {m}"),
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url} was taken"),
            }
        }
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
    }
}
