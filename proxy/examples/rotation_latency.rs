//! Benchmark helper: how long from the final write of a new cert pair (as the cell agent does
//! it, `c2c_certs::pair::write_pair`) to the first TLS handshake served with it.
//!
//! Usage: rotation_latency PATH_TO_C2C_PROXY [ROUNDS=100]
//! Prints p50, p99 and max over ROUNDS rotations, each adding a new route name.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_certs::ca::LeafKey;
use c2c_certs::{Ca, LeafRequest, SanSet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let proxy_bin = args
        .get(1)
        .ok_or("usage: rotation_latency PATH_TO_C2C_PROXY [ROUNDS]")?;
    let rounds: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(100);
    let tmp = tempfile::tempdir()?;
    let certs = tmp.path().join("certs");
    let ca = Ca::generate("bench CA")?;
    let issue = |names: Vec<String>| {
        ca.issue(&LeafRequest {
            common_name: "bench".into(),
            sans: SanSet::new(names, []).expect("valid names"),
            ttl: Duration::from_secs(3600),
            key: LeafKey::EcdsaP256,
            usage: Default::default(),
        })
    };
    let p = issue(vec!["appb.apps.internal".into()])?;
    c2c_certs::pair::write_pair(&certs, p.cert_pem.as_bytes(), p.key_pem.as_bytes())?;

    let mut child = Command::new(proxy_bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--cert-dir",
        ])
        .arg(&certs)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut addr = String::new();
    for line in BufReader::new(child.stderr.take().ok_or("no stderr")?).lines() {
        let line = line?;
        if let Some(i) = line.find("listen=") {
            addr = line[i + 7..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
        }
        if line.contains(" ready ") {
            break;
        }
    }

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let handshake = |name: &str| -> bool {
        let Ok(mut tcp) = std::net::TcpStream::connect(&addr) else {
            return false;
        };
        let Ok(sn) = ServerName::try_from(name.to_string()) else {
            return false;
        };
        let Ok(mut conn) = rustls::ClientConnection::new(cfg.clone(), sn) else {
            return false;
        };
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                return false;
            }
        }
        true
    };

    let mut lat = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let name = format!("r{i}.apps.internal");
        let p = issue(vec!["appb.apps.internal".into(), name.clone()])?;
        c2c_certs::pair::write_pair(&certs, p.cert_pem.as_bytes(), p.key_pem.as_bytes())?;
        let t0 = Instant::now();
        while !handshake(&name) {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                return Err(format!("round {i}: new cert not served after 5 s").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        lat.push(t0.elapsed());
    }
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "cert write -> served by new handshakes over {rounds} rotations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (debounce 20 ms)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
