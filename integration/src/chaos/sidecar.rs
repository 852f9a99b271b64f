//! The soak's sidecar: dst's instance on cell2 is handed to cell2's agent as `c2c-hook` hands
//! a podman container over (its CNI record marked for a sidecar, a certificate directory under
//! the cell's data dir), so the agent has its certificate issued and runs and supervises its
//! `c2c-proxy`. src sends TLS probes to it on 61443 (a policy for that port stays in place the
//! whole soak), verified against the platform CA by the route's name; the fault driver kills
//! the sidecar with SIGKILL and the agent must start it again.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::testbed::Platform;
use crate::topo::*;

use super::invariants::TlsProbe;

/// The name dst's certificate holds (its route), which the probes verify.
pub(super) const ROUTE: &str = "dst";
const NAME: &str = "dst.apps.internal";

/// dst's sidecar on cell2.
pub(super) struct Sidecar {
    record: PathBuf,
    dir: PathBuf,
    pub(super) to: SocketAddr,
    ca: Vec<u8>,
}

impl Sidecar {
    /// Hands dst's instance in `ns` (container `id`, at `ip` on cell2) to cell2's agent for a
    /// sidecar in front of a server on the container's 127.0.0.1:8080, and waits until src
    /// (in `a`) is served through it.
    pub(super) fn start(p: &Platform, a: &Netns, ns: &Netns, id: &str, ip: Ipv4Addr) -> Self {
        let data = p.dir.path().join("cell2-cni");
        let record = data.join("containers").join(format!("{id}.json"));
        let dir = data.join("sidecars").join(id);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join("certs"))
                .unwrap();
        }
        serve(ns, "127.0.0.1:8080".parse().unwrap(), "dst-sidecar");
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).expect("dst's CNI record")).unwrap();
        rec["cert_dir"] = dir.join("certs").display().to_string().into();
        rec["sidecar"] = true.into();
        write_record(&record, &rec);
        let ca = std::fs::read(p.dir.path().join("cell2-tls/platform-ca.pem")).unwrap();
        let s = Sidecar {
            record,
            dir,
            to: SocketAddr::new(ip.into(), 61443),
            ca,
        };
        let cfg = crate::cli::tls_client(&s.ca);
        let (to, path) = (s.to, a.path());
        wait_until("TLS to dst's sidecar", Duration::from_secs(30), || {
            let cfg = cfg.clone();
            spawn_in(&path, move || tls_probe(&cfg, to).is_ok())
                .join()
                .unwrap()
        });
        s
    }

    /// Kills the sidecar with SIGKILL (the PID its pidfile names, if it is a c2c-proxy).
    pub(super) fn kill9(&self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("proxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains("c2c-proxy")
            .then_some(nix::unistd::Pid::from_raw(pid))
    }
}

/// Takes the sidecar back as `c2c-hook`'s poststop does (the record no longer asks for one: the
/// agent stops it), so nothing of it outlives the soak, also when the soak fails (this drops
/// before the platform and its agents).
impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(raw) = std::fs::read(&self.record) {
            let mut rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            rec["sidecar"] = false.into();
            write_record(&self.record, &rec);
        }
        let gone = eventually(Duration::from_secs(15), || {
            (!self.dir.join("proxy.pid").exists()).then_some(())
        });
        if gone.is_none() {
            // The agent did not stop it (it may have died): ended by its PID, as ours.
            eprintln!("cell2's agent did not stop dst's sidecar: ended by its PID");
            self.kill9();
        }
    }
}

fn write_record(path: &Path, rec: &serde_json::Value) {
    let tmp = path.with_extension("json.soak-tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One TLS request from this thread's namespace to the sidecar at `to`, verified against the
/// platform CA for [`NAME`]: Ok if the app behind it answered, else the step that failed.
pub(super) fn tls_probe(
    cfg: &Arc<rustls::ClientConfig>,
    to: SocketAddr,
) -> Result<(), &'static str> {
    let tcp = match TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
        Ok(tcp) => tcp,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err("connect timed out"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err("connect refused")
        }
        Err(_) => return Err("connect failed"),
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(1)));
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let Ok(conn) = rustls::ClientConnection::new(cfg.clone(), name) else {
        return Err("client config");
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return Err("handshake or request failed");
    }
    let mut buf = vec![];
    // The app closes without close_notify's counterpart from us; what arrived counts.
    let _ = s.read_to_end(&mut buf);
    if String::from_utf8_lossy(&buf).contains("dst-sidecar saw") {
        Ok(())
    } else if buf.is_empty() {
        Err("no answer")
    } else {
        Err("an answer not from the app")
    }
}

/// TLS probes from src's namespace to the sidecar, every 100 ms until `stop`.
pub(super) fn spawn_prober(
    a: &Netns,
    s: &Sidecar,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<TlsProbe>>>,
) -> std::thread::JoinHandle<()> {
    let cfg = crate::cli::tls_client(&s.ca);
    let to = s.to;
    spawn_in(&a.path(), move || {
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let failed = tls_probe(&cfg, to).err();
            probes.lock().unwrap().push(TlsProbe {
                at,
                failed,
                took: at.elapsed(),
            });
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}
