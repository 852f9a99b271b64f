//! Benchmark helper: opens N TLS connections to a sidecar, completes each handshake, then
//! holds them all idle until stdin closes. Prints "open N" once they are all up.
//!
//! Usage: idle_conns ADDR N CA_PEM SERVER_NAME
//!        idle_conns backend      (a plaintext app on 127.0.0.1 that accepts and holds
//!                                 connections; prints "listening ADDR")

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 2 && args[1] == "backend" {
        return hold_backend().await;
    }
    if args.len() != 5 {
        return Err("usage: idle_conns ADDR N CA_PEM SERVER_NAME".into());
    }
    let (addr, n, ca, name) = (&args[1], args[2].parse::<usize>()?, &args[3], &args[4]);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let server_name = ServerName::try_from(name.clone())?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
        held.push(connector.connect(server_name.clone(), tcp).await?);
    }
    println!("open {}", held.len());
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    Ok(())
}

async fn hold_backend() -> Result<(), Box<dyn std::error::Error>> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", l.local_addr()?);
    let mut held = Vec::new();
    loop {
        tokio::select! {
            r = l.accept() => held.push(r?.0),
            _ = async { let mut b = Vec::new(); tokio::io::stdin().read_to_end(&mut b).await } => return Ok(()),
        }
    }
}
