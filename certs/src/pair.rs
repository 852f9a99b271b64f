//! A container's cert directory: `cert.pem` (leaf, then chain) and `key.pem`, written atomically
//! as a pair and loaded with every check the sidecar needs before serving it.
//!
//! Layout written by [`write_pair`] (the Kubernetes secret-volume scheme, which every file
//! watcher already copes with):
//!
//! ```text
//! DIR/..data      -> ..gen-<id>          symlink, swapped by rename(2): the commit point
//! DIR/..gen-<id>/cert.pem, key.pem       one directory per generation, never modified
//! DIR/cert.pem    -> ..data/cert.pem     stable names for tools such as curl and openssl
//! DIR/key.pem     -> ..data/key.pem
//! ```
//!
//! [`read_pair`] resolves `..data` once and reads both files from that one generation, so it
//! sees either the whole old pair or the whole new pair. A directory holding plain `cert.pem` and
//! `key.pem` files (written by anything else) is read as it is.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::info::CertInfo;

/// The certificate chain file in a cert dir.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file in a cert dir.
pub const KEY_FILE: &str = "key.pem";
/// The symlink naming the current generation; swapping it commits a pair.
pub const DATA_LINK: &str = "..data";
const GEN_PREFIX: &str = "..gen-";
const TMP_PREFIX: &str = "..tmp-";

/// Why a cert dir could not be loaded. [`PairError::reason`] gives a short label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `..data` points outside the directory (an absolute path, or one with `/` or `..`): a
    /// pair is only ever read from a generation inside the cert dir, so whoever can write a
    /// link there cannot make the sidecar read (and serve) files from elsewhere.
    #[error("{link} points outside its directory ({target}); refusing to follow it")]
    LinkOutside {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// `cert.pem` holds no PEM certificate (empty, half-written or not PEM).
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// `key.pem` holds no usable PEM private key (PKCS#8, SEC1 and PKCS#1 are accepted).
    #[error("{path} holds no PEM private key: {detail}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The key parsed but its algorithm is not supported for TLS signing.
    #[error("private key is not supported: {0}")]
    UnsupportedKey(String),
    /// The leaf certificate could not be parsed.
    #[error("leaf certificate is not valid X.509: {0}")]
    BadCertificate(String),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// The leaf is not valid yet.
    #[error("leaf certificate is not valid until {not_before} (unix time)")]
    NotYetValid {
        /// Start of validity, unix seconds.
        not_before: i64,
    },
    /// The leaf has expired.
    #[error("leaf certificate expired at {not_after} (unix time)")]
    Expired {
        /// End of validity, unix seconds.
        not_after: i64,
    },
}

impl PairError {
    /// A short, stable label for metrics (`reason="key_mismatch"`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::LinkOutside { .. } => "link_outside",
            Self::NoCertificate(_) => "no_certificate",
            Self::BadKey { .. } => "bad_key",
            Self::UnsupportedKey(_) => "unsupported_key",
            Self::BadCertificate(_) => "bad_certificate",
            Self::KeyMismatch => "key_mismatch",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
        }
    }
}

/// A cert dir's pair, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    /// The chain and signing key, for a rustls certificate resolver.
    pub certified: Arc<CertifiedKey>,
    /// What the leaf says about itself.
    pub info: CertInfo,
    /// SHA-256 over both files' bytes: tells a reload whether anything changed.
    pub content_digest: [u8; 32],
}

/// The raw bytes of `cert.pem` and `key.pem`, read from one generation (see the module docs).
pub fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), PairError> {
    read_pair_named(dir, CERT_FILE, KEY_FILE)
}

/// As [`read_pair`], for a pair under other file names (an instance identity's
/// `instance.crt` and `instance.key`).
pub fn read_pair_named(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<(Vec<u8>, Vec<u8>), PairError> {
    let link = dir.join(DATA_LINK);
    let base = match fs::read_link(&link) {
        // One plain component (`..gen-<id>`), as write_pair makes it: nothing else is followed.
        Ok(target) if single_component(&target) => dir.join(target),
        Ok(target) => return Err(PairError::LinkOutside { link, target }),
        Err(_) => dir.to_path_buf(),
    };
    let read = |name: &str| {
        let path = base.join(name);
        fs::read(&path).map_err(|source| PairError::Io { path, source })
    };
    Ok((read(cert_file)?, read(key_file)?))
}

fn single_component(p: &Path) -> bool {
    let mut parts = p.components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

/// Reads and checks the pair in `dir`: both files parse, the key belongs to the leaf, and the
/// leaf is valid at `now_unix`. Nothing is returned unless every check passes.
pub fn load(dir: &Path, provider: &CryptoProvider, now_unix: i64) -> Result<LoadedPair, PairError> {
    let (cert_bytes, key_bytes) = read_pair(dir)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| PairError::NoCertificate(dir.join(CERT_FILE)))?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate(dir.join(CERT_FILE)));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| PairError::BadKey {
        path: dir.join(KEY_FILE),
        detail: e.to_string(),
    })?;
    let info =
        CertInfo::from_der(&chain[0]).map_err(|e| PairError::BadCertificate(e.to_string()))?;
    let chain = without_trust_anchor(chain);
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PairError::UnsupportedKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(PairError::KeyMismatch),
    }
    if now_unix < info.not_before {
        return Err(PairError::NotYetValid {
            not_before: info.not_before,
        });
    }
    if now_unix >= info.not_after {
        return Err(PairError::Expired {
            not_after: info.not_after,
        });
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&cert_bytes);
    ctx.update(&key_bytes);
    let mut content_digest = [0u8; 32];
    content_digest.copy_from_slice(ctx.finish().as_ref());
    Ok(LoadedPair {
        certified: Arc::new(certified),
        info,
        content_digest,
    })
}

/// Drops a self-signed root from the end of a served chain: a client can only verify against a
/// root it already trusts, so sending it costs every handshake bytes and parsing for nothing
/// (RFC 8446 4.4.2 lets a server omit it). The file keeps it for tools that read the chain.
fn without_trust_anchor(mut chain: Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
    if chain.len() > 1 {
        let self_signed = chain.last().is_some_and(|c| {
            x509_parser::parse_x509_certificate(c)
                .map(|(_, x)| x.subject().as_raw() == x.issuer().as_raw())
                .unwrap_or(false)
        });
        if self_signed {
            chain.pop();
        }
    }
    chain
}

/// Writes a new generation of `cert.pem` + `key.pem` (0600) into `dir` and makes it current
/// with one rename. Readers using [`read_pair`] never see a mixed pair. Keeps the previous
/// generation (a reader may be part-way through it) and removes older ones.
///
/// One writer per directory at a time (the cell agent owns each instance's dir).
pub fn write_pair(dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> io::Result<()> {
    write_pair_named(dir, (CERT_FILE, KEY_FILE), cert_pem, key_pem)
}

/// As [`write_pair`], under other file names (an instance identity's `instance.crt` and
/// `instance.key`).
pub fn write_pair_named(
    dir: &Path,
    (cert_file, key_file): (&str, &str),
    cert_pem: &[u8],
    key_pem: &[u8],
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let id = unique_id();
    let tmp = dir.join(format!("{TMP_PREFIX}{id}"));
    let gen_name = format!("{GEN_PREFIX}{id}");
    fs::create_dir(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    write_synced(&tmp.join(cert_file), cert_pem, 0o644)?;
    write_synced(&tmp.join(key_file), key_pem, 0o600)?;
    fs::rename(&tmp, dir.join(&gen_name))?;

    let previous = fs::read_link(dir.join(DATA_LINK)).ok();
    replace_symlink(dir, DATA_LINK, Path::new(&gen_name))?;
    for name in [cert_file, key_file] {
        let want = Path::new(DATA_LINK).join(name);
        if fs::read_link(dir.join(name)).ok().as_deref() != Some(want.as_path()) {
            replace_symlink(dir, name, &want)?;
        }
    }
    fs::File::open(dir)?.sync_all()?;

    let keep: [Option<OsString>; 2] = [
        Some(OsString::from(&gen_name)),
        previous.map(|p| p.into_os_string()),
    ];
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let s = name.to_string_lossy();
        let stale_gen = s.starts_with(GEN_PREFIX) && !keep.iter().flatten().any(|k| *k == name);
        if stale_gen || s.starts_with(TMP_PREFIX) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, with the given mode.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", unique_id()));
    write_synced(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn replace_symlink(dir: &Path, name: &str, target: &Path) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}link-{}", unique_id()));
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Ca, LeafKey, LeafRequest};
    use crate::names::SanSet;
    use std::time::Duration;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn issue(ca: &Ca, name: &str) -> crate::ca::IssuedPair {
        ca.issue(&LeafRequest {
            common_name: "i".into(),
            sans: SanSet::new([name], []).unwrap(),
            ttl: Duration::from_secs(3600),
            key: LeafKey::EcdsaP256,
            usage: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn write_then_load_and_rewrite() {
        let ca = Ca::generate("t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p1 = issue(&ca, "one.apps.internal");
        write_pair(dir.path(), p1.cert_pem.as_bytes(), p1.key_pem.as_bytes()).unwrap();
        let l1 = load(dir.path(), &provider(), now()).unwrap();
        assert!(l1.info.sans.dns.contains("one.apps.internal"));
        // The file holds leaf + CA; the served chain is the leaf alone (the root is the client's).
        assert_eq!(l1.certified.cert.len(), 1);
        // Plain readers see the stable names.
        assert_eq!(
            fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            p1.cert_pem
        );
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        for i in 0..5 {
            let p = issue(&ca, &format!("n{i}.apps.internal"));
            write_pair(dir.path(), p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap();
        }
        let l2 = load(dir.path(), &provider(), now()).unwrap();
        assert!(l2.info.sans.dns.contains("n4.apps.internal"));
        assert_ne!(l1.content_digest, l2.content_digest);
        let gens = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(GEN_PREFIX))
            .count();
        assert_eq!(gens, 2, "current and previous generation only");
    }

    #[test]
    fn plain_files_are_read_as_they_are() {
        let ca = Ca::generate("t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = issue(&ca, "plain.apps.internal");
        fs::write(dir.path().join(CERT_FILE), &p.cert_pem).unwrap();
        fs::write(dir.path().join(KEY_FILE), &p.key_pem).unwrap();
        assert!(load(dir.path(), &provider(), now()).is_ok());
    }

    #[test]
    fn a_data_link_out_of_the_dir_is_not_followed() {
        let ca = Ca::generate("t").unwrap();
        // A valid pair elsewhere, that someone with write access to the cert dir links to.
        let elsewhere = tempfile::tempdir().unwrap();
        let p = issue(&ca, "stolen.apps.internal");
        fs::write(elsewhere.path().join(CERT_FILE), &p.cert_pem).unwrap();
        fs::write(elsewhere.path().join(KEY_FILE), &p.key_pem).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Positive control: the same pair written the normal way loads.
        write_pair(dir.path(), p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap();
        assert!(load(dir.path(), &provider(), now()).is_ok());
        for target in [
            elsewhere.path().to_path_buf(),
            PathBuf::from("../").join(elsewhere.path().file_name().unwrap()),
        ] {
            fs::remove_file(dir.path().join(DATA_LINK)).unwrap();
            std::os::unix::fs::symlink(&target, dir.path().join(DATA_LINK)).unwrap();
            let err = load(dir.path(), &provider(), now()).unwrap_err();
            assert_eq!(err.reason(), "link_outside", "{target:?}: {err}");
        }
    }

    #[test]
    fn each_bad_pair_is_refused_with_its_reason() {
        let ca = Ca::generate("t").unwrap();
        let a = issue(&ca, "a.apps.internal");
        let b = issue(&ca, "b.apps.internal");
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, i64)> = vec![
            (
                "key_mismatch",
                a.cert_pem.clone().into(),
                b.key_pem.clone().into(),
                now(),
            ),
            (
                "no_certificate",
                Vec::new(),
                a.key_pem.clone().into(),
                now(),
            ),
            (
                "no_certificate",
                a.cert_pem.as_bytes()[..a.cert_pem.len() / 3].to_vec(),
                a.key_pem.clone().into(),
                now(),
            ),
            (
                "bad_key",
                a.cert_pem.clone().into(),
                b"not a key".to_vec(),
                now(),
            ),
            (
                "expired",
                a.cert_pem.clone().into(),
                a.key_pem.clone().into(),
                now() + 7200,
            ),
            (
                "not_yet_valid",
                a.cert_pem.clone().into(),
                a.key_pem.clone().into(),
                now() - 3600,
            ),
        ];
        for (want, cert, key, at) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(CERT_FILE), cert).unwrap();
            fs::write(dir.path().join(KEY_FILE), key).unwrap();
            let err = load(dir.path(), &provider(), at).unwrap_err();
            assert_eq!(err.reason(), want, "{err}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            load(empty.path(), &provider(), now()).unwrap_err().reason(),
            "io"
        );
    }

    /// The pair is atomic: a reader loading in a tight loop while hundreds of pairs are written
    /// never gets a cert with another generation's key.
    #[test]
    fn concurrent_reader_never_sees_a_mixed_pair() {
        let ca = Ca::generate("t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = issue(&ca, "g0.apps.internal");
        write_pair(
            dir.path(),
            first.cert_pem.as_bytes(),
            first.key_pem.as_bytes(),
        )
        .unwrap();
        let pairs: Vec<_> = (1..=300)
            .map(|i| issue(&ca, &format!("g{i}.apps.internal")))
            .collect();

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let dir = dir.path().to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let provider = provider();
                let (mut ok, mut read_errors, mut mismatched) = (0u32, 0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    // Raw bytes, checked here independently of `load`'s own checks.
                    let Ok((cert, key)) = read_pair(&dir) else {
                        read_errors += 1;
                        continue;
                    };
                    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
                    let signer = provider.key_provider.load_private_key(key).unwrap();
                    match CertifiedKey::new(chain, signer).keys_match() {
                        Ok(()) => ok += 1,
                        Err(_) => mismatched += 1,
                    }
                }
                (ok, read_errors, mismatched)
            })
        };
        for p in &pairs {
            write_pair(dir.path(), p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let (ok, _read_errors, mismatched) = reader.join().unwrap();
        assert_eq!(mismatched, 0, "a mixed pair was read");
        assert!(
            ok > 100,
            "reader made too few reads ({ok}) to prove anything"
        );
        let last = load(dir.path(), &provider(), now()).unwrap();
        assert!(last.info.sans.dns.contains("g300.apps.internal"));
    }
}
