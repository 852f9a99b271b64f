//! The controls a setup runs (`c2c control serve`, one or two replicas, each in a state
//! directory of its own) and what the bench reads of them: CPU and resident memory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use c2c_integration::bin;

pub(super) struct Control {
    pub(super) child: Child,
    pub(super) dir: tempfile::TempDir,
    pub(super) url: String,
    /// `control serve`'s arguments after `--listen ADDR`.
    args: Vec<String>,
    /// Its `--metrics-listen` address (127.0.0.1:PORT).
    metrics: String,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Control {
    /// Kills it (-9) and reaps it.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Reaped: its PID may be another process's from now on.
        let pid = self.child.id();
        leftovers().processes.retain(|p| *p != pid);
    }

    /// Starts it again (after [`Control::kill`]) on the same address, state and database.
    pub(super) fn start_again(&mut self) {
        let addr = self
            .url
            .trim()
            .rsplit("://")
            .next()
            .unwrap()
            .trim_end_matches('/');
        let _ = std::fs::remove_file(self.dir.path().join("control/url"));
        let (child, url) = spawn_control(self.dir.path(), addr, &self.args);
        self.child = child;
        self.url = url;
    }
}

/// What the bench started that a panic would leave behind: the release profile aborts on a
/// panic, so no `Drop` runs (the controls, the PostgreSQL cluster and their directories were
/// left running and on disk). See [`clean_up_on_panic`].
#[derive(Default)]
pub(super) struct Leftovers {
    /// Controls running (their PIDs; a reaped one is taken off).
    processes: Vec<u32>,
    /// Directories to remove: the controls' state and the cluster's.
    pub(super) dirs: Vec<std::path::PathBuf>,
    /// The PostgreSQL cluster's directory (its postmaster's PID is in data/postmaster.pid).
    pub(super) cluster: Option<std::path::PathBuf>,
}

pub(super) fn leftovers() -> std::sync::MutexGuard<'static, Leftovers> {
    static L: std::sync::OnceLock<std::sync::Mutex<Leftovers>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// On a panic, before the abort: kills (-9) the controls this bench started and still runs,
/// stops its PostgreSQL cluster (SIGQUIT to the postmaster it started: an immediate shutdown),
/// and removes their directories.
pub(super) fn clean_up_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let l = leftovers();
        for pid in &l.processes {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(dir) = &l.cluster {
            let pid = std::fs::read_to_string(dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
                // Its files are removed only once it is gone.
                let end = Instant::now() + Duration::from_secs(10);
                while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        for dir in l.dirs.iter().chain(&l.cluster) {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("scale_bench: cleaned up after the panic (controls, PostgreSQL, directories)");
    }));
}

/// `c2c control serve` on `listen` with `args`; returns once it has written its URL.
pub(super) fn spawn_control(
    state: &std::path::Path,
    listen: &str,
    args: &[String],
) -> (Child, String) {
    let mut cmd = Command::new(bin("c2c"));
    cmd.args(c2c_integration::testbed::control_serve_args(state, listen));
    let child = cmd.args(args).stderr(Stdio::null()).spawn().unwrap();
    leftovers().processes.push(child.id());
    let url_file = state.join("control/url");
    let end = Instant::now() + Duration::from_secs(20);
    while !url_file.exists() {
        assert!(Instant::now() < end, "control did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, std::fs::read_to_string(url_file).unwrap())
}

pub(super) fn start_control(
    copy_from: Option<&Control>,
    database: Option<&str>,
    cache: bool,
    max_connections: usize,
) -> Control {
    let dir = tempfile::tempdir().unwrap();
    if let Some(first) = copy_from {
        std::fs::create_dir_all(dir.path().join("control")).unwrap();
        Command::new("cp")
            .arg("-a")
            .arg(first.dir.path().join("ca"))
            .arg(dir.path())
            .status()
            .unwrap();
        std::fs::copy(
            first.dir.path().join("control/token"),
            dir.path().join("control/token"),
        )
        .unwrap();
    }
    // Every watcher holds a connection; control closes any past its cap (4,096 by default).
    // Each cell connects from an address of its own (see `from_own_address`), so the budgets
    // per client address are control's defaults, as on a foundation. HANDSHAKES=N sets
    // `--max-handshakes` (the reference for the handshake budget: a number past N cells).
    let mut args = vec!["--max-connections".to_string(), max_connections.to_string()];
    if let Ok(n) = std::env::var("HANDSHAKES") {
        args.extend(["--max-handshakes".to_string(), n]);
    }
    // A free port for its metrics listener (the probe's socket is closed before control binds).
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    args.extend(["--metrics-listen".to_string(), metrics.clone()]);
    if let Some(db) = database {
        args.extend(["--database".to_string(), db.to_string()]);
    }
    if !cache {
        args.push("--per-watcher-views".into());
    }
    let (child, url) = spawn_control(dir.path(), "127.0.0.1:0", &args);
    leftovers().dirs.push(dir.path().to_path_buf());
    Control {
        child,
        dir,
        url,
        args,
        metrics,
    }
}

impl Control {
    /// What control shed to stay within its budgets (`c2c_control_shed_total`, by reason),
    /// from its metrics listener: "reason=N, ..." or "nothing".
    pub(super) fn shed(&self) -> String {
        let Ok(text) = c2c_integration::benchkit::scrape(&self.metrics) else {
            return "(metrics unreachable)".into();
        };
        let shed: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("c2c_control_shed_total{reason=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if shed.is_empty() {
            "nothing".into()
        } else {
            shed.join(", ")
        }
    }
}

/// A connector for a simulated cell: it connects from 127.1.X.Y, an address of its own (cell
/// `i`; Linux routes all of 127/8 to loopback), as cells on their own hosts do.
pub(super) fn from_own_address(i: usize) -> c2c_api::client::Connector {
    let source = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, 1 + (i % 250) as u8);
    std::sync::Arc::new(move |host: &str, port: u16| {
        use std::net::ToSocketAddrs;
        let to = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&std::net::SocketAddr::from((source, 0)).into())?;
        s.connect(&to.into())?;
        Ok(s.into())
    })
}

/// (CPU seconds, RSS bytes) of a process.
pub(super) fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let rss_kib = c2c_integration::benchkit::rss_kib(pid);
    (ticks as f64 / hz, rss_kib * 1024)
}

pub(super) fn usage_of(controls: &[Control]) -> (f64, u64) {
    controls
        .iter()
        .map(|c| usage(c.child.id()))
        .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// TRIM_PROBE=1: how much of the parked RSS is free memory glibc keeps (heap pages freed but
/// not returned): each control is made to call `malloc_trim(0)` (gdb attached for a moment)
/// and the per-watch figure printed again.
///
/// PARK_PAUSE=SECS: first waits that long with every stream parked, the replicas' PIDs printed
/// (for a profiler attached since their start: what a parked stream holds is what is live now).
pub(super) fn trim_probe(controls: &[Control], base: u64, parked: u64, n: usize) {
    if let Some(secs) = std::env::var("PARK_PAUSE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let pids: Vec<u32> = controls.iter().map(|c| c.child.id()).collect();
        eprintln!("PARK_PAUSE: {n} streams parked in {pids:?}; waiting {secs} s");
        std::thread::sleep(Duration::from_secs(secs));
    }
    if std::env::var("TRIM_PROBE").as_deref() != Ok("1") {
        return;
    }
    for c in controls {
        let out = std::process::Command::new("gdb")
            .args(["-p", &c.child.id().to_string(), "-batch", "-ex"])
            .arg("call (int) malloc_trim(0)")
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("TRIM_PROBE: gdb could not call malloc_trim in control");
        }
    }
    let (_, trimmed) = usage_of(controls);
    let per = |rss: u64| rss.saturating_sub(base) as f64 / 1024.0 / n as f64;
    eprintln!(
        "TRIM_PROBE: RSS per parked watch {:.1} KiB, after malloc_trim(0) {:.1} KiB",
        per(parked),
        per(trimmed)
    );
}
