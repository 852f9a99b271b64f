//! What `access.json` sets at the real `c2c-proxy` binary, with real rustls clients: callers'
//! instance identity (what it requires is what is served, every refusal is a performed attack
//! beside the legitimate caller), the app's PROXY protocol v2 header (read by `ppp`, crates.io),
//! and the app's protocols offered in ALPN, followed without a restart.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use c2c_api::access::{Access, ACCESS_FILE};
use c2c_api::{AppProtocol, ClientIdentity, ProxyProtocol};
use c2c_certs::identity::Identity;
use c2c_certs::{Ca, LeafRequest, SanSet, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "c2c instance issuer";

/// The platform's trust as control builds it: a root, the instances issuer, and the cells'
/// issuer (whose client certificates are no caller identity).
struct Platform {
    root: Ca,
    instances: Ca,
    cells: Ca,
    dir: tempfile::TempDir,
}

/// A client's certificate chain and key.
struct Cred {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Platform {
    fn new() -> Self {
        let root = Ca::generate("c2c platform CA").unwrap();
        let instances = root.intermediate(ISSUER).unwrap();
        let cells = root.intermediate("c2c cell issuer").unwrap();
        let p = Self {
            root,
            instances,
            cells,
            dir: tempfile::tempdir().unwrap(),
        };
        // appb's sidecar certificate, as control signs it: leaf + instances issuer.
        let pair = p
            .instances
            .issue(&LeafRequest {
                common_name: "b0".into(),
                sans: SanSet::new(["appb.apps.internal"], ["127.0.0.1".parse().unwrap()]).unwrap(),
                ttl: Duration::from_secs(3600),
                key: Default::default(),
                usage: Usage::Server,
            })
            .unwrap();
        c2c_certs::pair::write_pair(
            &p.cert_dir(),
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
        )
        .unwrap();
        p
    }

    fn cert_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    fn identity(&self, instance: &str, app: &str) -> Cred {
        self.identity_for(instance, app, Duration::from_secs(600))
    }

    fn identity_for(&self, instance: &str, app: &str, ttl: Duration) -> Cred {
        let (key, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
        let id = Identity::new("c2c.internal", instance, app, "space-1", "org-1");
        let pem = self
            .instances
            .sign_identity_csr(&csr, &id, "127.0.0.2".parse().unwrap(), ttl)
            .unwrap();
        cred(&pem, &key)
    }

    fn set_access(&self, access: &Access) {
        write_access(&self.cert_dir(), access);
    }
}

fn write_access(dir: &Path, access: &Access) {
    c2c_certs::pair::write_file_atomic(
        &dir.join(ACCESS_FILE),
        &serde_json::to_vec(access).unwrap(),
        0o644,
    )
    .unwrap();
}

fn cred(chain_pem: &str, key_pem: &str) -> Cred {
    Cred {
        chain: CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap(),
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
    }
}

/// appb's rules: a0 (appa) and c0 (appc) are live, and only appa has a policy on tcp 61443.
fn rules(client_identity: ClientIdentity, proxy_protocol: ProxyProtocol) -> Access {
    Access {
        revision: c2c_api::Revision(1),
        instance: "b0".into(),
        client_identity,
        proxy_protocol,
        app_protocol: Default::default(),
        callers: BTreeMap::from([("a0".into(), "appa".into()), ("c0".into(), "appc".into())]),
        allowed: BTreeSet::from(["appa".into()]),
    }
}

fn client(root_pem: &str, cred: Option<&Cred>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cred {
        Some(c) => b
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// Whether a client with `cred` gets "ping" echoed through the sidecar. A refused caller sees
/// its handshake fail or, in TLS 1.3 (where the client finishes first), an alert or EOF on
/// its first read.
async fn served(proxy: &Proxy, root_pem: &str, cred: Option<&Cred>) -> bool {
    served_by(proxy, client(root_pem, cred)).await
}

/// [`served`] with a client config the caller keeps (and with it, its TLS sessions: a second
/// connection resumes the first's).
async fn served_by(proxy: &Proxy, cfg: Arc<rustls::ClientConfig>) -> bool {
    let Ok(mut s) = tls_connect_with(proxy.addr(), "appb.apps.internal", cfg).await else {
        return false;
    };
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"ping"
}

async fn eventually_served(
    proxy: &Proxy,
    root_pem: &str,
    cred: Option<&Cred>,
    want: bool,
    what: &str,
) {
    for _ in 0..1500 {
        if served(proxy, root_pem, cred).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_identity_serves_only_a_live_instance_of_an_allowed_app() {
    let p = Platform::new();
    p.set_access(&rules(ClientIdentity::Required, ProxyProtocol::Off));
    let proxy = Proxy::simple(&p.cert_dir(), echo_backend().await, &[]);
    let root = p.root.cert_pem().to_string();

    // The legitimate caller: appa's live instance, with a policy.
    let a0 = p.identity("a0", "appa");
    assert!(
        served(&proxy, &root, Some(&a0)).await,
        "appa's identity is served"
    );

    // Attacks, each refused: no certificate; a live app without a policy on 61443; a valid
    // identity of an instance that is not live; an identity claiming another app than its
    // instance's; a cell's client certificate (another issuer); a sidecar's server certificate
    // (same issuer, no clientAuth); an identity from another platform's issuer.
    assert!(!served(&proxy, &root, None).await, "no certificate");
    assert!(
        !served(&proxy, &root, Some(&p.identity("c0", "appc"))).await,
        "no policy"
    );
    assert!(
        !served(&proxy, &root, Some(&p.identity("z9", "appa"))).await,
        "not live"
    );
    assert!(
        !served(&proxy, &root, Some(&p.identity("c0", "appa"))).await,
        "claims appa"
    );
    let cell = p
        .cells
        .issue(&LeafRequest {
            common_name: "cell1".into(),
            sans: SanSet::new(["cell1"], []).unwrap(),
            ttl: Duration::from_secs(600),
            key: Default::default(),
            usage: Usage::Client,
        })
        .unwrap();
    assert!(
        !served(&proxy, &root, Some(&cred(&cell.cert_pem, &cell.key_pem))).await,
        "cell cert"
    );
    let server = p
        .instances
        .issue(&LeafRequest {
            common_name: "a0".into(),
            sans: SanSet::new(["appa.apps.internal"], []).unwrap(),
            ttl: Duration::from_secs(600),
            key: Default::default(),
            usage: Usage::Server,
        })
        .unwrap();
    assert!(
        !served(
            &proxy,
            &root,
            Some(&cred(&server.cert_pem, &server.key_pem))
        )
        .await,
        "server cert"
    );
    let other = Ca::generate("other").unwrap().intermediate(ISSUER).unwrap();
    let (k, csr) = c2c_certs::ca::new_key_and_csr().unwrap();
    let forged = other
        .sign_identity_csr(
            &csr,
            &Identity::new("c2c.internal", "a0", "appa", "s", "o"),
            "127.0.0.2".parse().unwrap(),
            Duration::from_secs(600),
        )
        .unwrap();
    assert!(
        !served(&proxy, &root, Some(&cred(&forged, &k))).await,
        "other issuer"
    );

    let log = proxy.log();
    assert!(
        log.contains("caller refused: it presented no identity"),
        "{log}"
    );
    assert!(
        log.contains("no policy allows its app") && log.contains("c0"),
        "{log}"
    );
    assert!(
        log.contains("no live instance of an app with a policy to this one") && log.contains("z9"),
        "{log}"
    );
    assert!(proxy.metric("c2c_proxy_client_identity_refusals_total{reason=\"no_policy\"}") >= 1.0);

    // The caller's instance is deleted: the next rules no longer know it, and it is refused
    // without a restart; the sidecar's PID is the same.
    let pid = proxy.pid();
    let mut gone = rules(ClientIdentity::Required, ProxyProtocol::Off);
    gone.revision = c2c_api::Revision(2);
    gone.callers.remove("a0");
    p.set_access(&gone);
    eventually_served(&proxy, &root, Some(&a0), false, "a0 refused once deleted").await;
    assert_eq!(proxy.pid(), pid);

    // Off again: any caller the packet filter lets through is served, with or without one.
    p.set_access(&rules(ClientIdentity::Off, ProxyProtocol::Off));
    eventually_served(&proxy, &root, None, true, "no certificate served when off").await;
    assert!(served(&proxy, &root, Some(&a0)).await);
}

/// The attack: a TLS session made while the sidecar asked for no identity (or by a caller
/// allowed then) is resumed after identity is required (or the caller is no longer allowed).
/// Resumption skips the certificate check of a full handshake; a session made under other
/// rules is not resumed (the client makes a full handshake and is checked as any new caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_is_checked_like_a_new_caller() {
    let p = Platform::new();
    p.set_access(&rules(ClientIdentity::Off, ProxyProtocol::Off));
    let proxy = Proxy::simple(&p.cert_dir(), echo_backend().await, &[]);
    let root = p.root.cert_pem().to_string();
    // Clients that keep their sessions, as any TLS client library does.
    let anonymous = client(&root, None);
    let a0 = client(&root, Some(&p.identity("a0", "appa")));
    assert!(served_by(&proxy, anonymous.clone()).await);
    assert!(served_by(&proxy, a0.clone()).await);

    let mut required = rules(ClientIdentity::Required, ProxyProtocol::Off);
    required.revision = c2c_api::Revision(2);
    p.set_access(&required);
    // Proof the sidecar took the rules: a new anonymous client is refused.
    eventually_served(&proxy, &root, None, false, "identity required").await;
    assert!(
        !served_by(&proxy, anonymous.clone()).await,
        "the anonymous session resumed after identity was required"
    );
    // Positive control: the allowed caller resumes its session and is served.
    assert!(served_by(&proxy, a0.clone()).await, "a0 resumes");

    // a0's instance is deleted: a new handshake is refused, and so is its resumed session.
    let mut gone = required.clone();
    gone.revision = c2c_api::Revision(3);
    gone.callers.remove("a0");
    p.set_access(&gone);
    eventually_served(
        &proxy,
        &root,
        Some(&p.identity("a0", "appa")),
        false,
        "a0 refused once deleted",
    )
    .await;
    assert!(
        !served_by(&proxy, a0.clone()).await,
        "a0's session resumed after its instance was deleted"
    );
}

/// A backend that reads a PROXY v2 header with `ppp` and answers with what it says, one line.
async fn proxy_protocol_backend() -> std::net::SocketAddr {
    spawn_backend(|mut s| async move {
        let mut fixed = [0u8; 16];
        if s.read_exact(&mut fixed).await.is_err() {
            return;
        }
        let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let mut rest = vec![0u8; len];
        if s.read_exact(&mut rest).await.is_err() {
            return;
        }
        let mut all = fixed.to_vec();
        all.extend(rest);
        let line = match ppp::v2::Header::try_from(all.as_slice()) {
            Ok(h) => {
                let src = match h.addresses {
                    ppp::v2::Addresses::IPv4(a) => a.source_address.to_string(),
                    other => format!("{other:?}"),
                };
                let mut cn = String::new();
                let mut spiffe = String::new();
                for t in h.tlvs().flatten() {
                    if t.kind == c2c_proxy::proxy_protocol::PP2_TYPE_SSL {
                        // client (1), verify (4), then sub-TLVs.
                        let mut sub = &t.value[5..];
                        while sub.len() >= 3 {
                            let n = u16::from_be_bytes([sub[1], sub[2]]) as usize;
                            if sub[0] == c2c_proxy::proxy_protocol::PP2_SUBTYPE_SSL_CN {
                                cn = String::from_utf8_lossy(&sub[3..3 + n]).into();
                            }
                            sub = &sub[3 + n..];
                        }
                    }
                    if t.kind == c2c_proxy::proxy_protocol::PP2_TYPE_SPIFFE_ID {
                        spiffe = String::from_utf8_lossy(&t.value).into();
                    }
                }
                format!("src={src} cn={cn} spiffe={spiffe}\n")
            }
            Err(e) => format!("bad header: {e:?}\n"),
        };
        let _ = s.write_all(line.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

async fn header_seen(proxy: &Proxy, root: &str, cred: Option<&Cred>) -> String {
    let mut s = tls_connect_with(proxy.addr(), "appb.apps.internal", client(root, cred))
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .ok();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_names_the_caller_when_it_presents_a_known_identity() {
    let p = Platform::new();
    p.set_access(&rules(ClientIdentity::Off, ProxyProtocol::V2));
    let proxy = Proxy::simple(&p.cert_dir(), proxy_protocol_backend().await, &[]);
    let root = p.root.cert_pem().to_string();

    let a0 = p.identity("a0", "appa");
    assert_eq!(
        header_seen(&proxy, &root, Some(&a0)).await,
        "src=127.0.0.1 cn=a0 spiffe=spiffe://c2c.internal/app/appa\n"
    );
    // No certificate (optional here): the address only, no TLVs.
    assert_eq!(
        header_seen(&proxy, &root, None).await,
        "src=127.0.0.1 cn= spiffe=\n"
    );
    // An identity the rules do not know (not live): served (identity is not required), but the
    // app is told nothing about it.
    assert_eq!(
        header_seen(&proxy, &root, Some(&p.identity("z9", "appz"))).await,
        "src=127.0.0.1 cn= spiffe=\n"
    );
}

/// The sidecar verifies a caller's chain once per leaf; the leaf's validity is still checked on
/// every connection, so an identity that expires is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_identity_is_refused_though_its_chain_was_verified_before() {
    let p = Platform::new();
    p.set_access(&rules(ClientIdentity::Required, ProxyProtocol::Off));
    let proxy = Proxy::simple(&p.cert_dir(), echo_backend().await, &[]);
    let root = p.root.cert_pem().to_string();
    let short = p.identity_for("a0", "appa", Duration::from_secs(2));
    assert!(
        served(&proxy, &root, Some(&short)).await,
        "valid: served (and remembered)"
    );
    eventually_served(&proxy, &root, Some(&short), false, "refused once expired").await;
    // A fresh identity of the same instance is served.
    assert!(served(&proxy, &root, Some(&p.identity("a0", "appa"))).await);
}

/// The protocol a client offering `offer` in ALPN agrees on with the sidecar (`Ok(None)`: none),
/// after "ping" went through; `Err` for a refused handshake, with the error.
async fn alpn(proxy: &Proxy, root_pem: &str, offer: &[&[u8]]) -> Result<Option<Vec<u8>>, String> {
    let mut cfg = (*client(root_pem, None)).clone();
    cfg.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
    let mut s = tls_connect_with(proxy.addr(), "appb.apps.internal", Arc::new(cfg))
        .await
        .map_err(|e| e.to_string())?;
    let agreed = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(agreed)
}

/// Waits until the sidecar agrees on `want` with a client offering `offer`.
async fn eventually_alpn(proxy: &Proxy, root: &str, offer: &[&[u8]], want: Option<&[u8]>) {
    let mut last = Err(String::new());
    for _ in 0..1500 {
        last = alpn(proxy, root, offer).await;
        if last.as_ref().ok().map(|a| a.as_deref()) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("offering {offer:?}: wanted {want:?}, last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_protocols_are_offered_in_alpn_and_follow_its_setting() {
    let p = Platform::new();
    let mut access = rules(ClientIdentity::Off, ProxyProtocol::Off);
    p.set_access(&access);
    let proxy = Proxy::simple(&p.cert_dir(), echo_backend().await, &[]);
    let root = p.root.cert_pem().to_string();
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];

    // http1, the default: nothing offered, so nothing agreed, whatever the client offers.
    assert_eq!(alpn(&proxy, &root, both).await, Ok(None));
    assert_eq!(alpn(&proxy, &root, &[b"h2"]).await, Ok(None));

    // http2 (gRPC), set while the sidecar runs: h2 agreed ...
    access.app_protocol = AppProtocol::Http2;
    p.set_access(&access);
    eventually_alpn(&proxy, &root, both, Some(b"h2")).await;
    // ... and a client offering only HTTP/1.1 is refused with no_application_protocol.
    let refused = alpn(&proxy, &root, &[b"http/1.1"]).await.unwrap_err();
    assert!(
        refused.contains("NoApplicationProtocol"),
        "refused with the TLS alert: {refused}\n{}",
        proxy.log()
    );
    // A client offering no ALPN at all is served (it chose no protocol to disagree on).
    assert_eq!(alpn(&proxy, &root, &[]).await, Ok(None));

    // Both: h2 preferred, HTTP/1.1 for a client that offers only it.
    access.app_protocol = AppProtocol::Both;
    p.set_access(&access);
    eventually_alpn(&proxy, &root, &[b"http/1.1"], Some(b"http/1.1")).await;
    assert_eq!(alpn(&proxy, &root, both).await, Ok(Some(b"h2".to_vec())));

    // The sidecar counts what it agreed on and whom it refused for it.
    assert!(proxy.metric("c2c_proxy_handshakes_by_protocol_total{protocol=\"h2\"}") >= 2.0);
    assert!(proxy.metric("c2c_proxy_handshakes_by_protocol_total{protocol=\"http/1.1\"}") >= 1.0);
    assert!(
        proxy.metric("c2c_proxy_handshake_failures_total{reason=\"no_application_protocol\"}")
            >= 1.0
    );
}
