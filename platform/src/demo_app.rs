//! `c2c demo-app`: the built-in app `push` runs by default, like Cloud Foundry's proxy test app:
//! `GET /` answers with the app name, instance index and overlay IP; `GET /proxy/HOST:PORT/PATH`
//! makes an outbound request from this container and returns what came back (or the error).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result};

/// Serves forever on `listen`.
pub fn run(name: &str, index: u32, listen: SocketAddr) -> Result<()> {
    let ip = std::env::var("CF_INSTANCE_INTERNAL_IP").unwrap_or_else(|_| "unknown".into());
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    eprintln!("demo app {name}/{index} listening on {listen}");
    let hello = format!("app={name} index={index} ip={ip}\n");
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let hello = hello.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &hello);
        });
    }
    Ok(())
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
