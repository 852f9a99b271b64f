//! What offering the app's protocols in ALPN costs the sidecar (issue #29): its CPU per full
//! TLS 1.3 handshake and per keep-alive request, with the app's protocol `http1` (no ALPN: the
//! sidecar before the setting) and `http1,http2` (h2 and http/1.1 offered, clients offering
//! both, h2 agreed), rounds alternating in one run so the run-to-run spread of each mode is
//! seen beside the difference between them. CPU is the sidecar process's utime+stime
//! (/proc/PID/stat) over each window, divided by what it served.
//!
//! Usage: cargo run --release -p c2c-proxy --example alpn_cost -- PATH/TO/c2c-proxy [SECS] [ROUNDS]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_api::access::Access;
use c2c_api::AppProtocol;
use c2c_certs::{Ca, LeafRequest, SanSet, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sidecar's CPU time so far, in seconds.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime), counted from after the command name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn client(root: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root.as_bytes()).unwrap())
        .unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every handshake is a full one.
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

async fn connect(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(ServerName::try_from("appb.apps.internal").unwrap(), tcp)
        .await
        .unwrap()
}

async fn ping(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
}

/// Full handshakes (2 clients in parallel) for `secs`: how many.
async fn handshakes(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, secs: f64) -> u64 {
    let n = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = vec![];
    for _ in 0..2 {
        let (n, cfg) = (n.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut s = connect(addr, &cfg).await;
                ping(&mut s).await;
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n.load(Ordering::Relaxed)
}

/// Requests over 8 kept-alive connections for `secs`: how many.
async fn keepalive(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, secs: f64) -> u64 {
    let n = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = vec![];
    for _ in 0..8 {
        let (n, cfg) = (n.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = connect(addr, &cfg).await;
            while Instant::now() < end {
                ping(&mut s).await;
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n.load(Ordering::Relaxed)
}

/// The app: an echo server on a loopback port.
async fn echo_app() -> SocketAddr {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    up
}

/// The sidecar in front of `up`, with the certificate in `certs`; returns it once ready, with
/// the address it listens on.
fn start_sidecar(
    proxy_bin: &str,
    certs: &std::path::Path,
    up: SocketAddr,
) -> (std::process::Child, SocketAddr) {
    let mut child = std::process::Command::new(proxy_bin)
        .args(["--listen", "127.0.0.1:0", "--upstream", &up.to_string()])
        .arg("--cert-dir")
        .arg(certs)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr: Option<SocketAddr> = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.split("listen=").nth(1) {
            addr = a.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.contains(" ready ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("the sidecar's listen address"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let proxy_bin = args
        .next()
        .expect("usage: alpn_cost PATH/TO/c2c-proxy [SECS] [ROUNDS]");
    let secs: f64 = args.next().map_or(5.0, |s| s.parse().unwrap());
    let rounds: usize = args.next().map_or(3, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::generate("c2c platform CA").unwrap();
    let issuer = root.intermediate("c2c instance issuer").unwrap();
    let pair = issuer
        .issue(&LeafRequest {
            common_name: "b0".into(),
            sans: SanSet::new(["appb.apps.internal"], ["127.0.0.1".parse().unwrap()]).unwrap(),
            ttl: Duration::from_secs(3600),
            key: Default::default(),
            usage: Usage::Server,
        })
        .unwrap();
    let certs = dir.path().join("certs");
    c2c_certs::pair::write_pair(&certs, pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
    let set = |p: AppProtocol| {
        let a = Access {
            app_protocol: p,
            ..Default::default()
        };
        c2c_certs::pair::write_file_atomic(
            &certs.join(c2c_api::access::ACCESS_FILE),
            &serde_json::to_vec(&a).unwrap(),
            0o644,
        )
        .unwrap();
    };
    set(AppProtocol::Http1);

    let up = echo_app().await;
    let (mut child, addr) = start_sidecar(&proxy_bin, &certs, up);
    let pid = child.id();
    let root_pem = root.cert_pem().to_string();
    let modes: [(&str, AppProtocol, &[&[u8]]); 2] = [
        ("http1 (no ALPN)", AppProtocol::Http1, &[]),
        (
            "http1,http2 (h2 agreed)",
            AppProtocol::Both,
            &[b"h2", b"http/1.1"],
        ),
    ];
    // (mode, µs CPU per handshake, µs CPU per request) for each round.
    let mut results: Vec<(usize, f64, f64)> = vec![];
    for round in 0..rounds {
        for (m, (_, proto, alpn)) in modes.iter().enumerate() {
            set(*proto);
            let cfg = client(&root_pem, alpn);
            // The setting is in service once a client offering both agrees on what it offers.
            let probe = client(&root_pem, &[b"h2", b"http/1.1"]);
            for _ in 0..500 {
                let s = connect(addr, &probe).await;
                if s.get_ref().1.alpn_protocol() == proto.alpn().first().copied() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let c0 = cpu(pid);
            let hs = handshakes(addr, cfg.clone(), secs).await;
            let c1 = cpu(pid);
            let ka = keepalive(addr, cfg.clone(), secs).await;
            let c2 = cpu(pid);
            let (per_hs, per_req) = ((c1 - c0) * 1e6 / hs as f64, (c2 - c1) * 1e6 / ka as f64);
            eprintln!(
                "round {round} {}: {hs} handshakes, {per_hs:.1} µs CPU each; {ka} requests, {per_req:.2} µs CPU each",
                modes[m].0
            );
            results.push((m, per_hs, per_req));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("mode                       handshake µs CPU (min-max)   keep-alive request µs CPU (min-max)");
    let mut means = vec![];
    for (m, (name, _, _)) in modes.iter().enumerate() {
        let hs: Vec<f64> = results.iter().filter(|r| r.0 == m).map(|r| r.1).collect();
        let rq: Vec<f64> = results.iter().filter(|r| r.0 == m).map(|r| r.2).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let lo = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
        println!(
            "{name:<26} {:>7.1} ({:.1}-{:.1})           {:>6.2} ({:.2}-{:.2})",
            mean(&hs),
            lo(&hs),
            hi(&hs),
            mean(&rq),
            lo(&rq),
            hi(&rq)
        );
        means.push((
            mean(&hs),
            mean(&rq),
            (hi(&hs) - lo(&hs)) / mean(&hs),
            (hi(&rq) - lo(&rq)) / mean(&rq),
        ));
    }
    println!(
        "ALPN offered / not: handshake {:.3}x (spread of the reference {:.1}%), request {:.3}x (spread {:.1}%)",
        means[1].0 / means[0].0,
        means[0].2 * 100.0,
        means[1].1 / means[0].1,
        means[0].3 * 100.0
    );
}
