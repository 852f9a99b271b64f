//! Callers' identity: who may call this instance, read from the cert dir's `access.json`
//! (written by the cell agent from control's view, see [`c2c_api::access`]), and a rustls client
//! certificate verifier that asks for, checks and authorizes a caller's instance identity.
//!
//! With the app's client identity `required`, a caller must present a certificate that chains to
//! the instances issuer (the one above this sidecar's own leaf), carries clientAuth, is valid
//! now, names a live instance of the app it claims, and whose app a policy allows on tcp 61443:
//! the same policy table the packet filter enforces, so a path the filter opens without a policy
//! (a host port from the underlay, a broad security group) still needs an identity and a policy.
//! Anything else fails the handshake. With it `off` and the PROXY protocol on, a certificate is
//! asked for but optional; the app learns the caller's identity when it is a known one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use c2c_api::access::{Access, Verdict, ACCESS_FILE};
use c2c_api::{ClientIdentity, ProxyProtocol};
use c2c_certs::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The access rules in service, swapped whole when the file changes.
#[derive(Debug)]
pub struct AccessStore {
    path: PathBuf,
    current: ArcSwap<Access>,
    /// Bumped on every change of the rules in service (see [`crate::sessions`]).
    generation: std::sync::atomic::AtomicU64,
}

impl AccessStore {
    /// Reads `DIR/access.json`; none (or an unreadable one) is the default: nothing required.
    pub fn open(cert_dir: &Path) -> Self {
        let path = cert_dir.join(ACCESS_FILE);
        let store = Self {
            current: ArcSwap::from_pointee(Access::default()),
            path,
            generation: Default::default(),
        };
        store.reload();
        store
    }

    /// The rules now.
    pub fn current(&self) -> Arc<Access> {
        self.current.load_full()
    }

    /// How many times the rules in service changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Re-reads the file; returns whether anything changed. A file that does not parse keeps
    /// the rules in service (a half-written file is never seen: the agent renames it in).
    pub fn reload(&self) -> bool {
        let new = match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<Access>(&bytes) {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, path = %self.path.display(), "access file refused; keeping the rules in service");
                    return false;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Access::default(),
            Err(error) => {
                warn!(%error, path = %self.path.display(), "access file unreadable; keeping the rules in service");
                return false;
            }
        };
        let old = self.current.load();
        let same = Access {
            revision: old.revision,
            ..new.clone()
        } == **old;
        if same {
            return false;
        }
        if old.client_identity != new.client_identity
            || old.proxy_protocol != new.proxy_protocol
            || old.app_protocol != new.app_protocol
        {
            info!(client_identity = %new.client_identity, proxy_protocol = %new.proxy_protocol, app_protocol = %new.app_protocol, revision = new.revision.0, "app settings");
        }
        self.current.store(Arc::new(new));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        true
    }
}

/// Who a caller proved to be, for the app (PROXY protocol TLVs) and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What its certificate says.
    pub identity: Identity,
    /// What the access rules make of it.
    pub verdict: Verdict,
}

/// The caller of a finished handshake, if it presented an instance identity.
pub fn caller(leaf: Option<&CertificateDer<'_>>, access: &Access) -> Option<Caller> {
    let identity = Identity::from_der(leaf?)?;
    let verdict = access.verdict(&identity.instance_guid, &identity.app_guid);
    Some(Caller { identity, verdict })
}

/// Why the caller of a resumed session may not be served under `access` (`None`: it may), as of
/// `now` (seconds since the Unix epoch). Resumption skips the certificate check of a full
/// handshake, so a session made while no identity was required, or by a caller allowed then,
/// would otherwise pass after the rules changed: the same checks are made here (the chain was
/// verified when the session was made; the validity and the rules are checked now).
pub fn refuse_resumed(
    leaf: Option<&CertificateDer<'_>>,
    access: &Access,
    now: i64,
) -> Option<&'static str> {
    if access.client_identity != ClientIdentity::Required {
        return None;
    }
    let Some(leaf) = leaf else {
        return Some("no_certificate");
    };
    match c2c_certs::CertInfo::from_der(leaf) {
        Ok(i) if i.not_before <= now && now <= i.not_after => {}
        _ => return Some("expired"),
    }
    match caller(Some(leaf), access).map(|c| c.verdict) {
        Some(Verdict::Allowed) => None,
        Some(Verdict::NoPolicy) => Some("no_policy"),
        Some(Verdict::Unknown) => Some("unknown_instance"),
        None => Some("not_an_identity"),
    }
}

/// Asks for and checks callers' identity as the access rules say (see the module docs).
pub struct IdentityVerifier {
    /// Chain, usage and validity checks against the instances issuer; `None` when this
    /// sidecar's chain names no issuer (then no identity can be verified).
    inner: Option<Arc<dyn ClientCertVerifier>>,
    access: Arc<AccessStore>,
    metrics: Arc<Metrics>,
    /// Leaves whose chain `inner` accepted (by SHA-256 of the DER), with what they say: a
    /// caller presents the same identity on every connection, and its issuer's signature over
    /// it does not change, so it is checked once. Its validity is checked every time; the
    /// handshake's own signature (proof of the key) always is; the access rules always are.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

/// A leaf whose chain was verified once.
#[derive(Debug, Clone)]
struct Verified {
    not_before: i64,
    not_after: i64,
    identity: Option<Identity>,
}

/// Verified leaves kept at most; past it the cache starts over.
const VERIFIED_CACHE: usize = 4096;

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerifier").finish_non_exhaustive()
    }
}

impl IdentityVerifier {
    /// A verifier trusting `issuer` (the certificate above this sidecar's leaf) for callers.
    pub fn new(
        issuer: Option<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
        access: Arc<AccessStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inner = issuer.and_then(|issuer| {
            let mut roots = RootCertStore::empty();
            roots.add(issuer).ok()?;
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .inspect_err(|error| warn!(%error, "no verifier for callers' identity"))
                .ok()
        });
        Self {
            inner,
            access,
            metrics,
            verified: Default::default(),
        }
    }

    /// The leaf's chain checked (once per leaf, see [`IdentityVerifier::verified`]), and what
    /// it says.
    fn check_chain(
        &self,
        inner: &Arc<dyn ClientCertVerifier>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Option<Identity>, rustls::Error> {
        let mut key = [0u8; 32];
        key.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity).as_ref(),
        );
        let t = now.as_secs() as i64;
        let hit = self.verified.lock().ok().and_then(|c| c.get(&key).cloned());
        if let Some(v) = hit {
            if v.not_before <= t && t < v.not_after {
                return Ok(v.identity);
            }
        }
        inner.verify_client_cert(end_entity, intermediates, now)?;
        let info = c2c_certs::CertInfo::from_der(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let v = Verified {
            not_before: info.not_before,
            not_after: info.not_after,
            identity: Identity::from_der(end_entity),
        };
        if let Ok(mut c) = self.verified.lock() {
            if c.len() >= VERIFIED_CACHE {
                c.clear();
            }
            c.insert(key, v.clone());
        }
        Ok(v.identity)
    }

    fn refuse(&self, reason: &'static str) -> rustls::Error {
        self.metrics.client_identity_refused(reason);
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        let a = self.access.current();
        a.client_identity == ClientIdentity::Required || a.proxy_protocol == ProxyProtocol::V2
    }

    fn client_auth_mandatory(&self) -> bool {
        self.access.current().client_identity == ClientIdentity::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.inner {
            Some(v) => v.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let access = self.access.current();
        let Some(inner) = &self.inner else {
            warn!(instance = %access.instance, "caller presented a certificate, but this sidecar has no issuer to check it against");
            return Err(self.refuse("no_issuer"));
        };
        let identity = match self.check_chain(inner, end_entity, intermediates, now) {
            Ok(id) => id,
            Err(error) => {
                warn!(instance = %access.instance, %error, "caller's certificate refused");
                self.metrics.client_identity_refused("invalid_certificate");
                return Err(error);
            }
        };
        if access.client_identity != ClientIdentity::Required {
            return Ok(ClientCertVerified::assertion());
        }
        let Some(identity) = identity else {
            warn!(instance = %access.instance, "caller's certificate is no instance identity; refused");
            return Err(self.refuse("not_an_identity"));
        };
        let c = Caller {
            verdict: access.verdict(&identity.instance_guid, &identity.app_guid),
            identity,
        };
        match c.verdict {
            Verdict::Allowed => Ok(ClientCertVerified::assertion()),
            Verdict::NoPolicy => {
                warn!(instance = %access.instance, caller = %c.identity.instance_guid, caller_app = %c.identity.app_guid, "caller refused: no policy allows its app on tcp 61443");
                Err(self.refuse("no_policy"))
            }
            Verdict::Unknown => {
                warn!(instance = %access.instance, caller = %c.identity.instance_guid, caller_app = %c.identity.app_guid, "caller refused: no live instance of an app with a policy to this one");
                Err(self.refuse("unknown_instance"))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(v) => v.verify_tls12_signature(message, cert, dss),
            None => Err(self.refuse("no_issuer")),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(v) => v.verify_tls13_signature(message, cert, dss),
            None => Err(self.refuse("no_issuer")),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.inner {
            Some(v) => v.supported_verify_schemes(),
            None => vec![],
        }
    }
}
