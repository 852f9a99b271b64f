//! `c2c-agent`: the cell agent. Run it inside the cell's network namespace (one per cell).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The c2c cell agent: holds the cell's subnet lease, converges the VXLAN overlay with the other
/// cells, registers local containers and enforces network policies, waking on control's watch.
#[derive(Debug, Parser)]
#[command(name = "c2c-agent", version)]
struct Args {
    /// Cell name; must be the CN of the client certificate in --cert-dir.
    #[arg(long, env = "C2C_CELL")]
    cell: c2c_api::CellName,
    /// This cell's underlay address (the VTEP's local address; some interface must hold it).
    #[arg(long, env = "C2C_UNDERLAY_IP")]
    underlay_ip: Ipv4Addr,
    /// Control API URL, or several replicas' URLs separated by commas
    /// (`https://a:4002,https://b:4002`): the agent watches one and moves to the next when it
    /// cannot be reached; rules stay as they are meanwhile.
    #[arg(
        long,
        env = "C2C_CONTROL_URL",
        default_value = "https://127.0.0.1:4002"
    )]
    control: String,
    /// The control issuer's certificate (PEM): the only anchor trusted for control's server
    /// certificate (`c2c cell register` writes it as control-ca.pem beside the cell's cert).
    #[arg(
        long,
        env = "C2C_CONTROL_CA",
        default_value = "/var/lib/c2c/cell/tls/control-ca.pem"
    )]
    ca: PathBuf,
    /// Directory with this cell's client cert.pem and key.pem (`c2c cell register --out` or
    /// `c2c cell join --out`, whose agent.env sets every C2C_* variable).
    #[arg(long, env = "C2C_CERT_DIR", default_value = "/var/lib/c2c/cell/tls")]
    cert_dir: PathBuf,
    /// The CNI data dir (IPAM leases and the container metadata store c2c-cni writes).
    #[arg(long, default_value = "/var/lib/c2c/cni")]
    data_dir: PathBuf,
    /// Where to write the CNI network config list (`.conflist`, the network "c2c", with the
    /// leased subnet) for the runtimes: podman 4, CRI-O and kubelet read lists.
    #[arg(long, default_value = "/etc/cni/net.d/10-c2c.conflist")]
    cni_config: PathBuf,
    /// The list's cniVersion: 1.0.0 is what podman 4 (libcni 1.1) accepts; 1.1.0 for runtimes
    /// with a newer libcni, which then also run STATUS (is the cell ready?) before each ADD.
    #[arg(long, default_value = c2c_api::cni_list::DEFAULT_VERSION, value_parser = ["1.0.0", "1.1.0"])]
    cni_version: String,
    /// Nameserver for containers (repeatable), put in the CNI config; default: --dns-listen's
    /// address.
    #[arg(long)]
    dns: Vec<IpAddr>,
    /// Check this often that the rules and the VTEP are still in place (restoring them if they
    /// were changed by hand). The check lists the rule chains: ~0.2 s of CPU with 10,000 policies.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Where the cell's DNS for internal domains listens (the address is put on the cell's
    /// loopback; containers reach it through their gateway).
    #[arg(long, default_value = "169.254.0.1:53")]
    dns_listen: std::net::SocketAddr,
    /// Serve Prometheus metrics (plain HTTP, `GET /metrics`) on this address: `HOST:PORT`, or
    /// a bare `PORT` on 127.0.0.1. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = c2c_api::metrics_http::parse_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Upstream resolver for other names (repeatable, IP:PORT); without one they are refused.
    #[arg(long)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Renew the subnet lease this often (silk's default; control expires a lease after 300 s
    /// without renewal).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    renew: Duration,
    /// Log c2c traffic: the first packet of each flow a policy accepts, each packet it denies,
    /// and each packet leaving the overlay that no security group allows (CF's
    /// iptables_c2c_logging_enabled). Rate-limited to 5 lines a second per source address.
    #[arg(long)]
    log_c2c: bool,
    /// The traffic log: one JSON line per logged packet, naming both apps (security groups
    /// with "log": true log their accepts whatever --log-c2c says). Default:
    /// DATA_DIR/network.log.
    #[arg(long)]
    network_log: Option<std::path::PathBuf>,
    /// The sidecar the agent runs in each container a runtime started with the `c2c.app`
    /// annotation (`c2c-hook`). Default: `c2c-proxy` beside this program.
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
}

/// `c2c-agent probe-responder`: the app of a probe this cell hosts for `c2c check`, which the
/// agent runs in the probe's network namespace (see `c2c_shim::probe`). Not for hand use.
#[derive(Debug, Parser)]
#[command(name = "c2c-agent probe-responder")]
struct ResponderArgs {
    /// The probe's app name.
    #[arg(long)]
    app: String,
    /// Its instance index.
    #[arg(long)]
    index: u32,
    /// Its instance GUID (a probe request must carry it).
    #[arg(long)]
    guid: String,
    /// Its overlay address.
    #[arg(long)]
    ip: std::net::Ipv4Addr,
    /// A subnet probes may reach (repeatable): the overlay's cell subnets.
    #[arg(long)]
    allow: Vec<c2c_api::net::Subnet>,
    /// A cell's underlay address (repeatable): probes may reach its probe ports.
    #[arg(long)]
    underlay: Vec<std::net::Ipv4Addr>,
    /// The probe's directory (its platform root and identity).
    #[arg(long)]
    dir: std::path::PathBuf,
}

/// Gives up every capability the process holds (effective, permitted, inheritable and ambient:
/// the agent's unit hands it `CAP_NET_ADMIN` and the like through `ip netns exec`) and sets
/// no_new_privs, so that no later `execve` can gain any. A responder takes requests from the
/// underlay; it needs none of them (8080 is no privileged port). Process-wide: only for the
/// responder's own process.
///
/// The one `unsafe` of this binary (the library forbids it): two system calls nix does not
/// wrap.
fn drop_privileges() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: prctl and capset with the arguments the kernel documents; `header` and `none`
    // outlive the calls, and capset reads two `Data` (version 3's 64 capability bits).
    unsafe {
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_capset, &header as *const Header, none.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)
}

fn responder() -> ExitCode {
    let a = ResponderArgs::parse_from(std::env::args().skip(1));
    let r = c2c_shim::probe::responder::Responder {
        hello: format!("app={} index={} ip={}\n", a.app, a.index, a.ip),
        guid: a.guid,
        allow: a.allow,
        underlay: a.underlay,
        dir: a.dir,
    };
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], c2c_shim::probe::APP_PORT));
    if let Err(e) = drop_privileges() {
        eprintln!("probe responder: could not give up its capabilities: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("probe responder {}/{} on {listen}", a.app, a.index);
    match r.serve(listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe responder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("probe-responder") {
        return responder();
    }
    let args = Args::parse();
    c2c_api::logging::init();
    let cfg = c2c_shim::agent::AgentConfig {
        cell: args.cell,
        underlay_ip: args.underlay_ip,
        control_url: args.control,
        ca_file: args.ca,
        cert_dir: args.cert_dir,
        data_dir: args.data_dir.clone(),
        cni_config: args.cni_config,
        cni_version: args.cni_version,
        dns: args.dns,
        resync: args.resync,
        renew: args.renew,
        dns_listen: args.dns_listen,
        metrics_listen: args.metrics_listen,
        dns_upstreams: args.dns_upstream,
        log_c2c: args.log_c2c,
        network_log: args
            .network_log
            .unwrap_or_else(|| args.data_dir.join("network.log")),
        probe_bin: std::env::current_exe().ok(),
        sidecar_bin: args.sidecar_bin.or_else(|| {
            let beside = std::env::current_exe().ok()?.with_file_name("c2c-proxy");
            beside.exists().then_some(beside)
        }),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("c2c-agent: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        let s = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            s.cancel();
        });
        c2c_shim::agent::run(cfg, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c2c-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
