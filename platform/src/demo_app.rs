//! `c2c demo-app`: the built-in app `push` runs by default, like Cloud Foundry's proxy test app:
//! `GET /` answers with the app name, instance index and overlay IP; `GET /proxy/HOST:PORT/PATH`
//! makes an outbound request from this container and returns what came back (or the error).
//! With `--mtls-listen`, it also terminates TLS itself with its own platform identity
//! (CF_INSTANCE_CERT, CF_INSTANCE_KEY) and requires callers' identities, verified against the
//! platform root in CF_SYSTEM_CERT_PATH: Cloud Foundry's "manual" option, with no sidecar.
//! On the same port over UDP it answers each datagram with the same line, cut to the
//! datagram's length (an answer is never larger than what asked for it: no amplification).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};

/// Serves forever on `listen` (and, mutual TLS, on `mtls`).
pub fn run(name: &str, index: u32, listen: SocketAddr, mtls: Option<SocketAddr>) -> Result<()> {
    let ip = std::env::var("CF_INSTANCE_INTERNAL_IP").unwrap_or_else(|_| "unknown".into());
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    eprintln!("demo app {name}/{index} listening on {listen}");
    let hello = format!("app={name} index={index} ip={ip}\n");
    if let Some(addr) = mtls {
        let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        eprintln!("demo app {name}/{index} serving mutual TLS with its own identity on {addr}");
        let hello = hello.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let hello = hello.clone();
                std::thread::spawn(move || {
                    if let Err(e) = handle_mtls(conn, &hello) {
                        eprintln!("mutual TLS connection: {e:#}");
                    }
                });
            }
        });
    }
    let udp = UdpSocket::bind(listen).with_context(|| format!("binding {listen}/udp"))?;
    let echo = hello.clone();
    std::thread::spawn(move || c2c_api::probe::echo(&udp, &echo));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let hello = hello.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &hello);
        });
    }
    Ok(())
}

/// One datagram to `to` and its answer, or the error (see [`c2c_api::probe::datagram`]).
pub fn udp_get(to: SocketAddr) -> std::io::Result<String> {
    c2c_api::probe::datagram(to)
}

fn handle(mut conn: TcpStream, hello: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers.
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path.strip_prefix("/proxy/") {
        Some(rest) => {
            let (target, p) = rest.split_once('/').unwrap_or((rest, ""));
            match fetch(target, &format!("/{p}")) {
                Ok(b) => ("200 OK", b),
                Err(e) => (
                    "502 Bad Gateway",
                    format!("request to {target} failed: {e}\n"),
                ),
            }
        }
        None => ("200 OK", hello.to_string()),
    };
    // One write: `write!` on a socket issues a syscall per formatted piece, and the small
    // writes after the first wait out the peer's delayed ACK (Nagle).
    let response = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    conn.write_all(response.as_bytes())
}

/// The server config of one connection, from the files as they are now (a renewed identity is
/// served from the next connection on): its identity, and callers verified against every
/// certificate in CF_SYSTEM_CERT_PATH, a certificate required.
fn mtls_config() -> Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let (cert, key, system) = (
        var("CF_INSTANCE_CERT")?,
        var("CF_INSTANCE_KEY")?,
        var("CF_SYSTEM_CERT_PATH")?,
    );
    let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let mut roots = rustls::RootCertStore::empty();
    for entry in std::fs::read_dir(&system).with_context(|| format!("reading {system}"))? {
        let path = entry?.path();
        if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
        }
    }
    let provider = c2c_certs::provider();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()?;
    Ok(std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?,
    ))
}

/// One mutual-TLS request: the answer names the caller by its identity.
fn handle_mtls(conn: TcpStream, hello: &str) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let tls = rustls::ServerConnection::new(mtls_config()?)?;
    let mut s = rustls::StreamOwned::new(tls, conn);
    let mut line = String::new();
    {
        let mut reader = BufReader::new(&mut s);
        reader.read_line(&mut line)?;
        let mut h = String::new();
        while reader.read_line(&mut h)? > 2 {
            h.clear();
        }
    }
    let caller = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| c2c_certs::Identity::from_der(leaf));
    let body = match caller {
        Some(id) => format!(
            "{hello}caller={} app={} spiffe={}\n",
            id.instance_guid, id.app_guid, id.spiffe_id
        ),
        None => format!("{hello}caller=unknown\n"),
    };
    let response = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(response.as_bytes())?;
    s.conn.send_close_notify();
    let _ = s.flush();
    Ok(())
}

fn fetch(target: &str, path: &str) -> std::io::Result<String> {
    let addr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    get(addr, path)
}

/// A plain HTTP/1.0 GET of `path` from `to`; returns the body (the demo app's client, and the
/// demo's "curl" from inside a container).
pub fn get(to: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out))
}
