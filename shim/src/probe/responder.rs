//! The probe responder: the app of a probe the cell agent hosts (see [`c2c_api::probe`]), run
//! by the agent in the probe's network namespace as `c2c-agent probe-responder`. On 8080 it
//! answers `GET /` with its app, index and address (TCP) and each datagram with the same line,
//! cut to the datagram's length (UDP: never an answer larger than what asked for it). To a
//! request carrying its own instance GUID it makes one probe from inside the namespace:
//! `/tcp/HOST:PORT`, `/udp/HOST:PORT`, `/dns/NAME`, `/tls/IP:PORT/NAME` and
//! `/tls-id/IP:PORT/NAME` (see [`c2c_api::probe`]). A probe goes only to the addresses
//! `--allow` names (the overlay's cell subnets): a probe is no relay into the underlay or out
//! of the platform. At most [`MAX_CONNS`] connections are served at once; the rest are closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use c2c_api::net::Subnet;
use c2c_api::probe::{Outcome, GUID_HEADER};

/// Connections served at once.
pub const MAX_CONNS: usize = 32;
/// How long one probe waits for a connection or an answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the responder runs with.
#[derive(Debug, Clone)]
pub struct Responder {
    /// `app=NAME index=I ip=IP`, the line it answers with.
    pub hello: String,
    /// Its instance GUID, which a probe request must carry.
    pub guid: String,
    /// Where probes may go.
    pub allow: Vec<Subnet>,
    /// The cells' underlay addresses: probes may go to their probe ports only (the host-port
    /// check: a container must not get around policy through a host port).
    pub underlay: Vec<std::net::Ipv4Addr>,
    /// The probe's directory: `system-certs/` (the platform root a TLS probe verifies
    /// against) and `identity/` (the identity `/tls-id/` presents).
    pub dir: std::path::PathBuf,
}

impl Responder {
    /// Serves on `listen` (TCP and UDP) until the process ends.
    pub fn serve(self, listen: SocketAddr) -> std::io::Result<()> {
        let tcp = TcpListener::bind(listen)?;
        let udp = UdpSocket::bind(listen)?;
        let hello = self.hello.clone();
        std::thread::spawn(move || c2c_api::probe::echo(&udp, &hello));
        let me = Arc::new(self);
        let open = Arc::new(AtomicUsize::new(0));
        for conn in tcp.incoming() {
            let Ok(conn) = conn else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                open.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let (me, open) = (me.clone(), open.clone());
            std::thread::spawn(move || {
                let _ = me.handle(conn);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(())
    }

    fn handle(&self, mut conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(conn.try_clone()?.take(8192));
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut guid = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case(GUID_HEADER) {
                    guid = Some(v.trim().to_string());
                }
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match self.answer(path, guid.as_deref()) {
            Ok(body) => ("200 OK", body),
            Err((status, why)) => (status, format!("{why}\n")),
        };
        write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// The body for `path`, or a status and why.
    fn answer(&self, path: &str, guid: Option<&str>) -> Result<String, (&'static str, String)> {
        if path == "/" {
            return Ok(self.hello.clone());
        }
        let (kind, arg) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .filter(|(k, _)| matches!(*k, "tcp" | "udp" | "dns" | "tls" | "tls-id"))
            .ok_or(("404 Not Found", format!("no such path {path:?}")))?;
        if guid != Some(self.guid.as_str()) {
            return Err((
                "403 Forbidden",
                format!("a probe request carries this probe's instance GUID in {GUID_HEADER}"),
            ));
        }
        // A TLS probe's argument is IP:PORT/NAME (NAME: what it verifies the certificate for).
        let (arg, sni) = match kind {
            "tls" | "tls-id" => arg.split_once('/').ok_or((
                "404 Not Found",
                format!("/{kind}/IP:PORT/NAME, not {path:?}"),
            ))?,
            _ => (arg, ""),
        };
        let outcome = match kind {
            "dns" => resolve(arg),
            _ => match self.target(arg) {
                Ok(to) if kind == "tcp" => tcp(to),
                Ok(to) if kind == "udp" => udp(to),
                Ok(to) => self.tls(to, sni, kind == "tls-id"),
                Err(e) => return Err(("403 Forbidden", e)),
            },
        };
        serde_json::to_string(&outcome).map_err(|e| ("500 Internal Server Error", e.to_string()))
    }

    /// `HOST:PORT` resolved, if every address it names is one probes may reach.
    fn target(&self, arg: &str) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = arg
            .to_socket_addrs()
            .map_err(|e| format!("{arg}: {e}"))?
            .collect();
        let first = *addrs.first().ok_or(format!("{arg}: no address"))?;
        match addrs.iter().find(|a| !self.allowed(**a)) {
            Some(a) => Err(format!(
                "{a} is not an overlay address (nor a cell's probe port): a probe reaches instances only"
            )),
            None => Ok(first),
        }
    }

    /// TLS to `to`, verified for `name` against the platform root, presenting the probe's
    /// own identity when `with_id`: the answer to `GET /` and the names served.
    fn tls(&self, to: SocketAddr, name: &str, with_id: bool) -> Outcome {
        let mut names = vec![];
        let mut o = outcome((|| {
            let cfg = self.tls_client(with_id)?;
            let server = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(std::io::Error::other)?;
            let conn = rustls::ClientConnection::new(cfg, server).map_err(std::io::Error::other)?;
            let tcp = TcpStream::connect_timeout(&to, PROBE_TIMEOUT)?;
            tcp.set_read_timeout(Some(PROBE_TIMEOUT))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            write!(tls, "GET / HTTP/1.0\r\nHost: {name}\r\n\r\n")?;
            let mut got = String::new();
            // A close without close_notify after the answer is fine for a probe.
            let read = (&mut tls).take(4096).read_to_string(&mut got);
            if let Some(leaf) = tls.conn.peer_certificates().and_then(|c| c.first()) {
                if let Ok(info) = c2c_certs::CertInfo::from_der(leaf) {
                    let cn = info.common_name.unwrap_or_default();
                    names = info.sans.dns.into_iter().filter(|n| *n != cn).collect();
                }
            }
            if got.is_empty() {
                read?;
                return Err(std::io::Error::other("no answer over TLS"));
            }
            Ok(got
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or(got))
        })());
        o.names = names;
        o
    }

    fn tls_client(&self, with_id: bool) -> std::io::Result<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let root = std::fs::read(
            self.dir
                .join("system-certs")
                .join(c2c_certs::identity::ROOT_FILE),
        )?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&root) {
            roots
                .add(c.map_err(std::io::Error::other)?)
                .map_err(std::io::Error::other)?;
        }
        let b = rustls::ClientConfig::builder_with_provider(c2c_certs::provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots);
        Ok(Arc::new(if with_id {
            let id = self.dir.join("identity");
            let chain = std::fs::read(id.join(c2c_certs::identity::CERT_FILE))?;
            let key = std::fs::read(id.join(c2c_certs::identity::KEY_FILE))?;
            b.with_client_auth_cert(
                CertificateDer::pem_slice_iter(&chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(std::io::Error::other)?,
                PrivateKeyDer::from_pem_slice(&key).map_err(std::io::Error::other)?,
            )
            .map_err(std::io::Error::other)?
        } else {
            b.with_no_client_auth()
        }))
    }

    fn allowed(&self, to: SocketAddr) -> bool {
        match to.ip() {
            IpAddr::V4(v4) => {
                self.allow.iter().any(|s| s.contains(v4))
                    || (self.underlay.contains(&v4) && c2c_api::probe::PORTS.contains(&to.port()))
            }
            IpAddr::V6(_) => false,
        }
    }
}

fn outcome(r: std::io::Result<String>) -> Outcome {
    match r {
        Ok(answer) => Outcome {
            ok: true,
            answer,
            error: String::new(),
            names: vec![],
        },
        Err(e) => Outcome {
            ok: false,
            answer: String::new(),
            names: vec![],
            error: match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused".into(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => e.to_string(),
            },
        },
    }
}

/// A connection and `GET /`: the answer's body.
fn tcp(to: SocketAddr) -> Outcome {
    outcome((|| {
        let mut s = TcpStream::connect_timeout(&to, PROBE_TIMEOUT)?;
        s.set_read_timeout(Some(PROBE_TIMEOUT))?;
        write!(s, "GET / HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
        let mut got = String::new();
        s.take(4096).read_to_string(&mut got)?;
        Ok(got
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(got))
    })())
}

/// One datagram and its answer.
fn udp(to: SocketAddr) -> Outcome {
    outcome(c2c_api::probe::datagram(to))
}

/// The addresses `name` resolves to through the namespace's resolver (the cell's DNS).
fn resolve(name: &str) -> Outcome {
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            outcome(Ok(ips.join(",")))
        }
        Err(e) => {
            let text = e.to_string();
            let mut o = outcome(Err(e));
            if text.contains("not known") || text.contains("No address") {
                o.error = "no such name".into();
            }
            o
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> Responder {
        Responder {
            hello: "app=p index=0 ip=10.255.0.2\n".into(),
            guid: "g-1".into(),
            allow: vec!["10.255.0.0/24".parse().unwrap()],
            underlay: vec![std::net::Ipv4Addr::LOCALHOST],
            dir: "/nonexistent".into(),
        }
    }

    #[test]
    fn a_probe_request_needs_the_guid_and_an_overlay_target() {
        let r = responder();
        assert_eq!(r.answer("/", None).unwrap(), r.hello);
        // Without the GUID, or with another one: refused.
        for g in [None, Some("g-2")] {
            assert_eq!(
                r.answer("/tcp/10.255.0.3:8080", g).unwrap_err().0,
                "403 Forbidden"
            );
        }
        // The underlay, loopback (but a cell's probe port), another range: refused even with
        // the GUID.
        for to in [
            "192.0.2.1:22",
            "127.0.0.1:4002",
            "10.255.1.3:8080",
            "[::1]:80",
        ] {
            let e = r.answer(&format!("/tcp/{to}"), Some("g-1")).unwrap_err();
            assert_eq!(e.0, "403 Forbidden", "{to}: {}", e.1);
        }
        assert_eq!(
            r.answer("/x/y", Some("g-1")).unwrap_err().0,
            "404 Not Found"
        );
        let e = r
            .answer("/tls/192.0.2.1:443/a.example", Some("g-1"))
            .unwrap_err();
        assert_eq!(e.0, "403 Forbidden", "{}", e.1);
        // A cell's probe port is probed (here a loopback "cell": nothing leaves the machine).
        let o: Outcome =
            serde_json::from_str(&r.answer("/tcp/127.0.0.1:61107", Some("g-1")).unwrap()).unwrap();
        assert!(!o.ok, "{o:?}");
        // Positive control: an overlay address is probed (nothing listens: refused or no
        // answer, but an outcome, not a refusal of the request).
        let o: Outcome =
            serde_json::from_str(&r.answer("/udp/10.255.0.3:9", Some("g-1")).unwrap()).unwrap();
        assert!(!o.ok);
    }
}
