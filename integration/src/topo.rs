//! Root-test scaffolding: network namespaces that clean up after themselves, an underlay bridge
//! for cells, running `c2c-cni` as a runtime does, and TCP from inside namespaces.
//!
//! Everything lives in namespaces these helpers create (unique names, removed on drop, even when
//! a test fails); nothing is added to the root namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

/// Fails the test with a clear message unless it runs as root. These tests need CAP_NET_ADMIN
/// and CAP_SYS_ADMIN (namespaces); CI runs as root. `C2C_SKIP_ROOT_TESTS=1` skips them on a
/// developer machine, loudly.
pub fn require_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("C2C_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED: root test (C2C_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!("this test needs root (network namespaces); run as root or set C2C_SKIP_ROOT_TESTS=1 to skip");
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Namespaces and processes alive now, for [`clean_up_on_panic`].
static LIVE: std::sync::Mutex<(Vec<String>, Vec<u32>)> = std::sync::Mutex::new((vec![], vec![]));

fn live() -> std::sync::MutexGuard<'static, (Vec<String>, Vec<u32>)> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// For programs built with `panic = "abort"` (the release profile: benchmarks), where no drop
/// guard runs on a panic: a panic hook that kills the processes and deletes the namespaces
/// these helpers made, then lets the default hook report the panic.
pub fn clean_up_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let (namespaces, pids) = std::mem::take(&mut *live());
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for name in namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }));
}

/// A network namespace named `c2ct-<tag>-<pid>-<n>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "c2ct-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        assert!(name.len() < 64);
        run("ip", &["netns", "add", &name]);
        live().0.push(name.clone());
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec NAME CMD ARGS...`
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name, cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        live().0.retain(|n| *n != self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// An underlay: a bridge in its own namespace; cells hang off it by veth.
pub struct Underlay {
    pub ns: Netns,
}

/// A cell: a namespace on the underlay with an address there.
pub struct Cell {
    pub ns: Netns,
    pub underlay_ip: Ipv4Addr,
}

impl Default for Underlay {
    fn default() -> Self {
        Self::new()
    }
}

impl Underlay {
    pub fn new() -> Self {
        let ns = Netns::new("u");
        // A fixed MAC: otherwise the bridge takes its lowest port's, which changes as cells
        // join, and cells that resolved the old one lose the bridge's address for seconds.
        ns.ip(&[
            "link",
            "add",
            "br0",
            "address",
            "02:c2:c0:00:00:fe",
            "type",
            "bridge",
        ]);
        ns.ip(&["link", "set", "br0", "up"]);
        Self { ns }
    }

    /// Cell `n` (1-based) at 192.0.2.n on the underlay.
    pub fn cell(&self, n: u8) -> Cell {
        let ns = Netns::new(&format!("cell{n}"));
        let port = format!("u-c{n}");
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"]);
        let ip = Ipv4Addr::new(192, 0, 2, n);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        Cell {
            ns,
            underlay_ip: ip,
        }
    }
}

/// A CNI network config for a cell holding `subnet`, storing under `data_dir`.
pub fn conf(subnet: &str, data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "c2c", "type": "c2c-cni",
        "subnet": subnet, "data_dir": data_dir, "dns": ["169.254.0.2"],
        "runtimeConfig": {"app_guid": "app-guid-1", "instance_index": 0}
    })
    .to_string()
}

/// What one plugin run printed.
pub struct CniOut {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

/// The `c2c-cni` command for `cell`, with CNI_* from `env`, ready to spawn.
pub fn cni_command(cell: &Netns, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &cell.name])
        .arg(crate::bin("c2c-cni"));
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", "/opt/cni/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `c2c-cni` in `cell` as a runtime does (env + config on stdin).
pub fn cni(cell: &Netns, env: &[(&str, &str)], conf: &str) -> CniOut {
    let child = cni_command(cell, env).spawn().unwrap();
    finish(child, conf)
}

/// Feeds `conf` to a spawned plugin and collects its output.
pub fn finish(mut child: std::process::Child, conf: &str) -> CniOut {
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    CniOut {
        ok: out.status.success(),
        json: if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// ADD of container `id` into namespace `ctr`; panics unless it succeeds. Returns its IP.
pub fn add(cell: &Netns, ctr: &Netns, id: &str, conf: &str) -> Ipv4Addr {
    let path = ctr.path();
    let out = cni(
        cell,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", path.to_str().unwrap()),
        ],
        conf,
    );
    assert!(out.ok, "ADD {id} failed: {} {}", out.json, out.stderr);
    result_ip(&out.json)
}

/// The container IP of an ADD result.
pub fn result_ip(json: &Value) -> Ipv4Addr {
    json["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .parse()
        .unwrap()
}

/// Runs `work` on a thread inside namespace `ns`, returning at once.
pub fn spawn_in<T: Send + 'static>(
    ns: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        work()
    })
}

/// A TCP server inside `ns` on `addr` that answers each connection with
/// `"<tag> saw <peer ip>"`. Returns once it listens.
pub fn serve(ns: &Netns, addr: SocketAddr, tag: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(&ns.path(), move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().unwrap().ip();
            let _ = s.write_all(format!("{tag} saw {peer}").as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server did not start");
}

/// Connects from inside `ns` to `addr` and reads the answer.
pub fn fetch(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    spawn_in(&ns.path(), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .unwrap()
}

pub use c2c_testkit::wait::{eventually, wait_until};

/// A UDP server inside `ns` on `addr` answering each datagram with `"<tag> saw <peer ip>"`.
pub fn serve_udp(ns: &Netns, addr: SocketAddr, tag: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(&ns.path(), move || {
        let s = std::net::UdpSocket::bind(addr).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{tag} saw {}", peer.ip()).as_bytes(), peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("udp server did not start");
}

/// Sends one datagram from inside `ns` to `addr` and waits up to a second for the answer.
pub fn ask_udp(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    spawn_in(&ns.path(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send(b"ping")?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .join()
    .unwrap()
}

/// A process this test started, killed (by its PID) and reaped on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd args...` inside `ns` (`ip netns exec` execs in place: the PID is the
    /// program's), its stderr going to `log`.
    pub fn start_in(ns: &Netns, cmd: &Path, args: &[&str], log: PathBuf) -> Self {
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        live().1.push(child.id());
        Self { child, log }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let id = self.child.id();
        live().1.retain(|p| *p != id);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
