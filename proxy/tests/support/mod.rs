//! Test harness: test PKI made at test time, the real `c2c-proxy` binary as a child process,
//! small backends, and a real rustls client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c2c_certs::ca::LeafKey;
use c2c_certs::{Ca, IssuedPair, LeafRequest, SanSet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// Waits for `check` to hold, polling; panics with `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// A CA and a cert dir it issues into.
pub struct Pki {
    pub ca: Ca,
    pub tmp: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: Ca::generate("test CA").unwrap(),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.tmp.path().join("certs")
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_string()
    }

    pub fn issue_with(&self, names: &[&str], ttl: Duration, key: LeafKey) -> IssuedPair {
        self.ca
            .issue(&LeafRequest {
                common_name: "instance-0".into(),
                sans: SanSet::new(names.iter().copied(), ["127.0.0.1".parse().unwrap()]).unwrap(),
                ttl,
                key,
                usage: Default::default(),
            })
            .unwrap()
    }

    pub fn issue(&self, names: &[&str]) -> IssuedPair {
        self.issue_with(names, Duration::from_secs(3600), LeafKey::EcdsaP256)
    }

    /// Issues and writes atomically, as the cell agent does.
    pub fn rotate(&self, names: &[&str]) -> IssuedPair {
        let p = self.issue(names);
        c2c_certs::pair::write_pair(
            &self.cert_dir(),
            p.cert_pem.as_bytes(),
            p.key_pem.as_bytes(),
        )
        .unwrap();
        p
    }
}

/// The SHA-256 fingerprint of a pair's leaf, as the admin endpoint reports it.
pub fn leaf_fingerprint(pair: &IssuedPair) -> String {
    let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
    c2c_certs::CertInfo::from_der(&der).unwrap().sha256_hex
}

/// A running `c2c-proxy`, killed (by its PID) on drop.
pub struct Proxy {
    pub child: Child,
    pub listens: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<String>>,
}

pub fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_c2c-proxy")
}

impl Proxy {
    /// Starts the proxy with `args` and waits for its "ready" line.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(proxy_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut listens = Vec::new();
                let mut admin = None;
                let mut sent = false;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    if let Some(a) = field(&line, "listen=") {
                        listens.push(a.parse::<SocketAddr>().unwrap());
                    }
                    if let Some(a) = field(&line, "admin=") {
                        admin = Some(a.parse::<SocketAddr>().unwrap());
                    }
                    if !sent && line.contains(" ready ") {
                        let _ = tx.send((listens.clone(), admin));
                        sent = true;
                    }
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((listens, admin)) => Self {
                child,
                listens,
                admin,
                log,
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "proxy did not become ready ({status}):\n{}",
                    log.lock().unwrap()
                );
            }
        }
    }

    /// Starts with one listener on an ephemeral port and an admin endpoint.
    pub fn simple(cert_dir: &Path, upstream: SocketAddr, extra: &[&str]) -> Self {
        let up = upstream.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up,
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    pub fn addr(&self) -> SocketAddr {
        self.listens[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration, what: &str) -> std::process::ExitStatus {
        let mut status = None;
        eventually(timeout, what, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// GET on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("admin endpoint"), path)
    }

    /// The value of a metric line that starts with `prefix` (name plus labels), or 0.
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The fingerprint of the cert the admin endpoint says is in service.
    pub fn served_fingerprint(&self) -> String {
        let (_, body) = self.admin_get("/cert");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["sha256_fingerprint"].as_str().unwrap().to_string()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

/// A plain HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = StdTcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// A backend on 127.0.0.1 that runs `serve` on each accepted connection.
pub async fn spawn_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// An echo backend: echoes what it reads; on EOF it half-closes back.
pub async fn echo_backend() -> SocketAddr {
    spawn_backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// A backend that reads until EOF, then answers with what it got, reversed, and closes: it
/// only answers if the client's half-close reached it.
pub async fn reverse_after_eof_backend() -> SocketAddr {
    spawn_backend(|mut s| async move {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).await.is_ok() {
            got.reverse();
            let _ = s.write_all(&got).await;
            let _ = s.shutdown().await;
        }
    })
    .await
}

/// Waits until a TLS 1.3 handshake verifying `name` succeeds (`want_ok`) or fails.
pub async fn eventually_handshake(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
    want_ok: bool,
    what: &str,
) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if tls_connect(addr, name, ca_pem).await.is_ok() == want_ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A port nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A rustls client trusting only `ca_pem`.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// TLS 1.3 connect verifying `name` against `ca_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_with(
        addr,
        name,
        client_config(ca_pem, &[&rustls::version::TLS13]),
    )
    .await
}

pub async fn tls_connect_with(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(server_name, tcp)
        .await
}

/// [`tls_connect`] from the local address `from` (another loopback address: another peer).
pub async fn tls_connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    let tcp = sock.connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(client_config(ca_pem, &[&rustls::version::TLS13]))
        .connect(server_name, tcp)
        .await
}

/// Writes `msg` and reads the same number of bytes back.
pub async fn roundtrip<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    buf
}

/// The SHA-256 of the leaf a TLS client was served.
pub fn peer_fingerprint(s: &TlsStream<TcpStream>) -> String {
    let certs = s.get_ref().1.peer_certificates().unwrap();
    c2c_certs::CertInfo::from_der(&certs[0]).unwrap().sha256_hex
}
