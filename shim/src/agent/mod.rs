//! The cell agent: holds the cell's subnet lease, keeps the VTEP converged with every other
//! cell, registers the cell's containers (from the CNI metadata store) with control, and
//! enforces policies. It wakes on control's watch (a long poll that returns as soon as the state
//! changes), on a container coming or going (inotify on the store), and on a resync timer that
//! puts back rules flushed by hand. The process runs inside the cell's network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c2c_api::client::{Auth, Client, ClientError};
use c2c_api::{CellName, Revision};
use tokio::sync::Notify;
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod perform;

use perform::{perform_all, Io};

use crate::core::{AgentCore, Event};
use crate::inputs::{egress_rules, local_instances};
use crate::ipam::Subnet;
use crate::netlink::Netlink;
use crate::store::{ContainerRecord, Store};
use crate::vtep::{self, VtepConfig};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Cell name (the CN of its client certificate).
    pub cell: CellName,
    /// The cell's underlay address (its VTEP's local address).
    pub underlay_ip: Ipv4Addr,
    /// Control API URL, `https://HOST:PORT`.
    pub control_url: String,
    /// The platform CA (PEM file).
    pub ca_file: PathBuf,
    /// The cell's client cert dir (`cert.pem`, `key.pem`) from the platform CA.
    pub cert_dir: PathBuf,
    /// The CNI data dir (IPAM and the container metadata store).
    pub data_dir: PathBuf,
    /// Where to write the CNI network config list for the runtime (with the leased subnet).
    pub cni_config: PathBuf,
    /// The list's `cniVersion` ([`c2c_api::cni_list::DEFAULT_VERSION`] unless the runtime
    /// reads newer lists).
    pub cni_version: String,
    /// Nameservers to put in the CNI config.
    pub dns: Vec<IpAddr>,
    /// Re-apply everything this often even when nothing changed.
    pub resync: Duration,
    /// Renew the lease this often.
    pub renew: Duration,
    /// Where the cell's DNS listens (an address on the cell's loopback that every container
    /// reaches through its gateway).
    pub dns_listen: std::net::SocketAddr,
    /// Resolvers for names outside the internal domains (none: such queries are refused).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Log c2c accepts (first packet of each flow) and denies, and egress denies.
    pub log_c2c: bool,
    /// Where logged traffic goes, one JSON line per packet (security groups' `"log": true`
    /// accepts always; the rest with `log_c2c`).
    pub network_log: PathBuf,
    /// `c2c-proxy`, run as the sidecar of containers whose records ask for one (`c2c-hook`);
    /// `None`: such containers get none (logged).
    pub sidecar_bin: Option<PathBuf>,
    /// `c2c-agent` itself, which runs the responder of each probe the cell hosts for
    /// `c2c check` (see [`crate::probe`]); `None`: no probes are hosted (logged).
    pub probe_bin: Option<PathBuf>,
    /// Serve Prometheus metrics here (`None`: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The agent could not start or hit a fatal error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the CNI config failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The control API client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The lease holds a subnet we cannot use.
    #[error("control leased an unusable subnet {0}")]
    BadLease(String),
    /// The VTEP could not be set up.
    #[error(transparent)]
    Vtep(#[from] vtep::VtepError),
    /// Netlink could not be opened.
    #[error("opening netlink: {0}")]
    Netlink(std::io::Error),
    /// The metrics listener could not start.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The DNS server could not start.
    #[error("dns: {0}")]
    Dns(String),
    /// The store watch could not be set up.
    #[error("watching {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|source| AgentError::Read {
        path: path.into(),
        source,
    })
}

/// The CNI network config list a runtime reads on this cell ([`c2c_api::cni_list`]): one
/// plugin, `c2c-cni`, with the lease.
pub fn cni_config(
    version: &str,
    subnet: Subnet,
    data_dir: &Path,
    dns: &[IpAddr],
) -> serde_json::Value {
    c2c_api::cni_list::network_list(
        version,
        serde_json::json!({
            "type": "c2c-cni",
            // Runtimes pass `-p` host ports only to plugins that declare the capability.
            "capabilities": {"portMappings": true},
            "subnet": subnet.to_string(),
            "data_dir": data_dir,
            // The spec's shape, which libcni's NetConf (podman, CRI-O) parses.
            "dns": {"nameservers": dns},
        }),
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let err = |source| AgentError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // The one atomic write of the tree: a synced temp file, then a rename.
    c2c_certs::pair::write_file_atomic(path, bytes, 0o644).map_err(err)
}

/// Runs the agent until `shutdown`. Rules stay in place when it stops, so enforcement outlives
/// a restart.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let client = control_client(&cfg)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    if let Some(addr) = cfg.metrics_listen {
        serve_metrics(addr, metrics.clone(), shutdown.clone()).await?;
    }
    let Some(lease) =
        crate::control_link::acquire_lease(&client, &cfg.cell, cfg.underlay_ip, &shutdown).await?
    else {
        return Ok(());
    };
    let subnet: Subnet = lease.subnet;
    info!(cell = %cfg.cell, %subnet, underlay_ip = %cfg.underlay_ip, "lease acquired");
    // The CNI config is written once the cell enforces (after the first rules apply, below):
    // a runtime that waits for it never wires a container into a cell without rules.
    let cni_conf = cell_cni_config(&cfg, subnet);
    let (nl, vcfg) = vtep_ready(&cfg, subnet).await?;
    let zone_tx = start_dns(&cfg, &nl).await?;
    // Containers coming and going wake the loop.
    let store = Store::new(&cfg.data_dir);
    let local_change = Arc::new(Notify::new());
    let _watcher = watch_store(&cfg.data_dir.join("containers"), local_change.clone())?;

    // The decisions are the core's (see `crate::core`); this loop turns the world into its
    // events and its actions into the world.
    let mut core = AgentCore::new(&cfg.cell, subnet).with_log_c2c(cfg.log_c2c);
    let directory = start_traffic_log(&cfg, &client, &metrics, &shutdown);
    let mut directory_from = DirectoryFrom::default();
    // Control's views, from a streamed watch kept open by a task of its own.
    let mut views =
        crate::control_link::spawn_watch(client.clone(), cfg.cell.clone(), shutdown.clone());
    let (mut resync, mut certs_due, mut renew) = timers(&cfg).await;
    let retry = Arc::new(Notify::new());
    // The store as it is now (an agent restarted on a cell with containers), and again on each
    // resync (an inotify event can be lost); in between, inotify says when to read it.
    if let Some(recs) = read_store(store.clone()).await {
        core.on(Event::Store(recs));
    }
    // Sidecars of containers a runtime started (c2c-hook), each supervised by a task.
    let mut sidecars = crate::sidecars::Sidecars::new(cfg.sidecar_bin.clone());
    sidecars.reconcile(core.records());
    let sweeper = std::sync::Arc::new(std::sync::Mutex::new(crate::sidecars::Sweeper::default()));
    let probes = probe_host(&cfg, &cni_conf);
    let kernel = std::sync::Mutex::new(None);
    let (checks, mut checked) = perform::checks();
    let io = Io {
        cfg: &cfg,
        client: &client,
        nl: &nl,
        vcfg: &vcfg,
        zone_tx: &zone_tx,
        cni_conf: &cni_conf,
        retry: &retry,
        metrics: &metrics,
        kernel: &kernel,
        checks: &checks,
    };
    loop {
        // None: the agent stops (shut down, or the watch ended with it).
        let event = tokio::select! {
            _ = shutdown.cancelled() => None,
            v = views.recv() => v.map(|v| {
                debug!(revision = v.revision.0, "view");
                Event::View(v)
            }),
            _ = local_change.notified() => {
                debug!("container store changed");
                let Some(recs) = read_store(store.clone()).await else { continue };
                Some(Event::Store(recs))
            }
            _ = resync.tick() => {
                if let Some(recs) = read_store(store.clone()).await {
                    // Taken in silently: the resync event below reconciles with it.
                    core.set_records(recs);
                }
                Some(Event::Resync)
            }
            _ = retry.notified() => Some(Event::Resync),
            Some(c) = checked.recv() => Some(perform::checked(c, &core, &kernel)),
            _ = certs_due.tick() => {
                // Certificates and identities age between views: a short validity
                // (`--identity-validity 30s`) is renewed in time, not at the next resync.
                sync_certs(&client, &cfg.cell, &core).await;
                continue;
            }
            _ = renew.tick() => {
                renew_lease(&client, &cfg, subnet, &metrics).await;
                continue;
            }

        };
        let Some(event) = event else {
            info!("agent stopping; rules stay in place");
            return Ok(());
        };
        let started = Instant::now();
        // One span per cycle: with control's span per request, the revision follows a policy
        // from the API call to the rules in the kernel.
        let span = tracing::info_span!(
            "cycle",
            event = event.kind(),
            revision = tracing::field::Empty
        );
        let store_event = matches!(event, Event::Store(_));
        let pending = span.in_scope(|| core.on(event));
        sidecars.reconcile(core.records());
        probes.reconcile(core.view(), core.records());
        sweep_sidecar_dirs(&cfg.data_dir, &sweeper);
        directory_from.publish(&cfg.cell, &core, store_event, &directory);
        span.record("revision", core.revision().0);
        // Actions answered by an event are performed in turn; their events may bring more.
        perform_all(pending, &io, &mut core, started, &span).await;
        // Every action of this view performed: the cell is at its revision (its rules were
        // applied at it, or had nothing to change).
        metrics.revision.set(core.revision().0 as i64);
    }
}

/// The CNI store's records, read off the runtime threads; `None` (logged) if it cannot be read.
async fn read_store(store: Store) -> Option<Vec<ContainerRecord>> {
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok((recs, bad))) => {
            for e in bad {
                warn!(error = %e, "skipping unreadable container record");
            }
            Some(recs)
        }
        Ok(Err(error)) => {
            warn!(%error, "reading the container store failed");
            None
        }
        Err(error) => {
            warn!(%error, "store task failed");
            None
        }
    }
}

/// Puts the DNS address on the cell's loopback (so it exists before any container) and
/// starts DNS on a thread and runtime of its own: building and applying a 10,000-policy
/// ruleset on the agent's loop never delays an answer. Returns where to publish the zone.
async fn start_dns(
    cfg: &AgentConfig,
    nl: &Netlink,
) -> Result<tokio::sync::watch::Sender<Arc<crate::dns::Zone>>, AgentError> {
    let (zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(crate::dns::Zone::default()));
    let lo = nl
        .index("lo")
        .await
        .map_err(|e| AgentError::Dns(e.to_string()))?;
    if let (IpAddr::V4(ip), Some(lo)) = (cfg.dns_listen.ip(), lo) {
        if !ip.is_unspecified() {
            nl.add_address(lo, IpAddr::V4(ip), 32, "lo")
                .await
                .map_err(|e| AgentError::Dns(e.to_string()))?;
        }
    }
    crate::dns::spawn(
        cfg.dns_listen,
        zone_rx,
        cfg.dns_upstreams.clone(),
        crate::dns::Budget::default(),
    )
    .map_err(AgentError::Dns)?;
    info!(listen = %cfg.dns_listen, upstreams = ?cfg.dns_upstreams, "dns ready (udp and tcp, own thread)");
    Ok(zone_tx)
}

/// Watches the CNI store dir: `changed` is notified when a container record comes or goes.
fn watch_store(dir: &Path, changed: Arc<Notify>) -> Result<notify::RecommendedWatcher, AgentError> {
    use notify::Watcher;
    let err = |source| AgentError::Watch {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| e.kind.is_create() || e.kind.is_remove() || e.kind.is_modify()) {
            changed.notify_one();
        }
    })
    .map_err(err)?;
    w.watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(w)
}

/// The client of control, on the cell's identity.
fn control_client(cfg: &AgentConfig) -> Result<Client, AgentError> {
    let ca = read(&cfg.ca_file)?;
    let auth = Auth::ClientCert {
        cert_pem: read(&cfg.cert_dir.join("cert.pem"))?,
        key_pem: read(&cfg.cert_dir.join("key.pem"))?,
    };
    Ok(Client::new(&cfg.control_url, &ca, auth)?)
}

/// The metrics listener on `addr`, served until shutdown.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Metrics(format!("binding --metrics-listen {addr}: {e}")))?;
    tokio::spawn(crate::metrics::serve(l, metrics, shutdown));
    Ok(())
}

/// The CNI config runtimes on this cell use: its subnet, and the cell's DNS (or `--dns`).
fn cell_cni_config(cfg: &AgentConfig, subnet: Subnet) -> String {
    cni_config(&cfg.cni_version, subnet, &cfg.data_dir, &container_dns(cfg)).to_string()
}

/// The host of the probes this cell's view names (see [`crate::probe`]).
fn probe_host(cfg: &AgentConfig, cni_conf: &str) -> crate::probe::Host {
    crate::probe::Host::new(
        cfg.probe_bin.clone(),
        cfg.data_dir.clone(),
        cni_conf.to_string(),
        container_dns(cfg),
    )
}

/// The containers' nameservers: `--dns`, or the cell DNS.
fn container_dns(cfg: &AgentConfig) -> Vec<IpAddr> {
    if cfg.dns.is_empty() {
        vec![cfg.dns_listen.ip()]
    } else {
        cfg.dns.clone()
    }
}

/// The cell's VTEP, made or checked.
async fn vtep_ready(
    cfg: &AgentConfig,
    subnet: Subnet,
) -> Result<(Netlink, VtepConfig), AgentError> {
    let nl = Netlink::open().map_err(AgentError::Netlink)?;
    let vcfg = VtepConfig::new(cfg.underlay_ip, subnet);
    let v = vtep::ensure(&nl, &vcfg).await?;
    info!(vtep = %vcfg.name, mtu = v.mtu, created = v.created, "vtep ready");
    Ok((nl, vcfg))
}

/// The traffic log: the kernel's NFLOG group read on a thread of its own, each line naming
/// apps from the newest view (the directory returned, which the loop keeps current) and
/// recorded as a flow, which a task of its own reports to control (a slow control never holds
/// up the rules).
fn start_traffic_log(
    cfg: &AgentConfig,
    client: &Client,
    metrics: &Arc<crate::metrics::Metrics>,
    shutdown: &CancellationToken,
) -> crate::netlog::SharedDirectory {
    let flows = crate::flows::SharedFlows::default();
    crate::flows::spawn_reporter(
        client.clone(),
        cfg.cell.to_string(),
        flows.clone(),
        {
            let metrics = metrics.clone();
            move || metrics.revision.get()
        },
        shutdown.clone(),
    );
    let directory: crate::netlog::SharedDirectory = Arc::default();
    if let Err(error) = crate::netlog::spawn(cfg.network_log.clone(), directory.clone(), flows) {
        warn!(%error, path = %cfg.network_log.display(), "traffic log unavailable (nfnetlink_log?); rules still log nothing else");
    }
    directory
}

/// The loop's timers: resync, certificate checks (late ticks delayed, not bunched) and lease
/// renewal (its first, immediate tick taken: the lease was just acquired).
async fn timers(cfg: &AgentConfig) -> (Interval, Interval, Interval) {
    let resync = tokio::time::interval(cfg.resync);
    let mut certs_due = tokio::time::interval(crate::certsync::CERT_CHECK);
    certs_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(cfg.renew);
    renew.tick().await;
    (resync, certs_due, renew)
}

/// The route certificates and identities of this cell's containers, as the core's view has
/// them (nothing before the first view).
async fn sync_certs(client: &Client, cell: &c2c_api::CellName, core: &AgentCore) {
    if let Some(v) = core.view() {
        crate::certsync::sync_certs(client, cell, v, core.records()).await;
    }
}

/// Renews the cell's lease; one that expired while the cell could not renew is taken again,
/// asking for the subnet the containers here have their addresses in.
async fn renew_lease(
    client: &Client,
    cfg: &AgentConfig,
    subnet: Subnet,
    metrics: &crate::metrics::Metrics,
) {
    match client.renew_lease(&cfg.cell).await {
        Ok(_) => {}
        Err(error) if error.is_not_found() => {
            warn!(%error, "lease gone (expired?); acquiring it again");
            match client
                .acquire_lease_preferring(&cfg.cell, cfg.underlay_ip, Some(subnet))
                .await
            {
                Ok(l) if l.subnet == subnet => info!(%subnet, "lease acquired again"),
                Ok(l) => {
                    error!(held = %subnet, got = %l.subnet, "control gave another subnet: this cell's containers keep addresses of the old one; restart the agent after moving them")
                }
                Err(error) => warn!(%error, "acquiring the lease again failed"),
            }
        }
        Err(error) => {
            metrics.lease_renewal_failures.inc();
            warn!(%error, "lease renewal failed");
        }
    }
}

/// What the traffic log's directory was last built from.
#[derive(Default)]
struct DirectoryFrom {
    apps: Vec<c2c_api::App>,
    instances: Vec<c2c_api::Instance>,
    egress: c2c_api::asg::Egress,
    records: Vec<ContainerRecord>,
    built: bool,
    /// The revision last looked at.
    revision: Revision,
}

impl DirectoryFrom {
    fn of(v: &c2c_api::CellView, records: &[ContainerRecord]) -> Self {
        DirectoryFrom {
            apps: v.apps.clone(),
            instances: v.instances.clone(),
            egress: v.egress.clone(),
            records: records.to_vec(),
            built: true,
            revision: v.revision,
        }
    }

    /// Publishes the directory of the core's view and records, looked at only for a new
    /// revision or a store change, and built again only when what it is built from changed
    /// (20,000 apps' names are not copied at every policy change).
    fn publish(
        &mut self,
        cell: &c2c_api::CellName,
        core: &AgentCore,
        store_event: bool,
        directory: &crate::netlog::SharedDirectory,
    ) {
        let Some(v) = core.view() else { return };
        if v.revision == self.revision && !store_event {
            return;
        }
        let records = core.records();
        if !self.is(v, records) {
            publish_directory(cell, v, records, directory);
            *self = DirectoryFrom::of(v, records);
        }
        self.revision = v.revision;
    }

    /// Whether a directory built from `v` and `records` would be the one built last.
    fn is(&self, v: &c2c_api::CellView, records: &[ContainerRecord]) -> bool {
        self.built
            && self.records == records
            && self.egress == v.egress
            && self.instances == v.instances
            && self.apps == v.apps
    }
}

/// The traffic log's directory from view `v`: only what a log line names, apps by address and
/// tag and the groups' rules (not the whole rule inputs, which the core already built for
/// this cycle).
fn publish_directory(
    cell: &c2c_api::CellName,
    v: &c2c_api::CellView,
    records: &[ContainerRecord],
    directory: &crate::netlog::SharedDirectory,
) {
    let locals = local_instances(cell, v, records);
    let d = crate::netlog::Directory::new(v, egress_rules(&locals, v));
    if let Ok(mut w) = directory.write() {
        *w = Arc::new(d);
    }
}

/// A [`crate::sidecars::Sweeper`] pass off the runtime's threads (each cycle: every event and
/// every resync), logging what it removed.
fn sweep_sidecar_dirs(
    data_dir: &std::path::Path,
    sweeper: &std::sync::Arc<std::sync::Mutex<crate::sidecars::Sweeper>>,
) {
    let (data_dir, sweeper) = (data_dir.to_path_buf(), sweeper.clone());
    tokio::task::spawn_blocking(move || {
        let Ok(mut s) = sweeper.try_lock() else {
            return; // the previous pass still runs
        };
        let now = std::time::Instant::now();
        for id in s.sweep(&data_dir, now, crate::sidecars::ORPHAN_GRACE) {
            info!(container = %id, "removed the sidecar directory of a container with no CNI record");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::*;
    use crate::rules::Local;
    use c2c_api::Instance;
    use c2c_api::{App, Policy};
    use c2c_api::{CellView, Lease};

    fn rec(id: &str, ip: &str, app: Option<&str>) -> ContainerRecord {
        ContainerRecord {
            container_id: id.into(),
            ip: ip.parse().unwrap(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            host_veth: "s-x".into(),
            app_guid: app.map(Into::into),
            instance_guid: app.map(|_| id.into()),
            instance_index: Some(0),
            cert_dir: None,
            port_mappings: vec![],
            sidecar: false,
        }
    }

    fn view() -> CellView {
        CellView {
            revision: c2c_api::Revision(7),
            egress: Default::default(),
            probes: vec![],
            unchanged: vec![],
            leases: vec![
                Lease {
                    cell: "cell1".parse().unwrap(),
                    underlay_ip: "192.0.2.1".parse().unwrap(),
                    subnet: "10.255.1.0/24".parse().unwrap(),
                    renewed_at: 0,
                },
                Lease {
                    cell: "cell2".parse().unwrap(),
                    underlay_ip: "192.0.2.2".parse().unwrap(),
                    subnet: "10.255.2.0/24".parse().unwrap(),
                    renewed_at: 0,
                },
            ],
            apps: vec![App {
                guid: "ga".into(),
                name: "a".into(),
                tag: 1,
                space: String::new(),
                client_identity: Default::default(),
                proxy_protocol: Default::default(),
                app_protocol: Default::default(),
            }],
            instances: vec![
                Instance {
                    guid: "c-old".into(),
                    app_guid: "ga".into(),
                    index: 0,
                    cell: "cell1".parse().unwrap(),
                    ip: "10.255.1.9".parse().unwrap(),
                },
                Instance {
                    guid: "c1".into(),
                    app_guid: "ga".into(),
                    index: 0,
                    cell: "cell1".parse().unwrap(),
                    ip: "10.255.1.1".parse().unwrap(),
                },
                Instance {
                    guid: "far".into(),
                    app_guid: "ga".into(),
                    index: 1,
                    cell: "cell2".parse().unwrap(),
                    ip: "10.255.2.1".parse().unwrap(),
                },
            ],
            policies: vec![Policy {
                source: "ga".into(),
                destination: "ga".into(),
                protocol: c2c_api::net::Protocol::Tcp,
                ports: c2c_api::net::PortRange::new(1, 2).unwrap(),
            }],
            routes: vec![],
            domains: vec![],
        }
    }

    #[test]
    fn registrations_follow_the_store() {
        let recs = [
            rec("c1", "10.255.1.1", Some("ga")),
            rec("c2", "10.255.1.2", Some("ga")),
            rec("infra", "10.255.1.3", None),
        ];
        let (reg, dereg) = registration_changes(&"cell1".parse().unwrap(), &view(), &recs);
        assert_eq!(
            reg.iter().map(|i| i.guid.as_str()).collect::<Vec<_>>(),
            ["c2"],
            "c1 is already known, infra is no app"
        );
        assert_eq!(dereg, ["c-old"], "only this cell's vanished instance goes");
    }

    #[test]
    fn remotes_are_the_other_cells_and_rules_get_tags() {
        let r = remotes(&"cell1".parse().unwrap(), &view().leases);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].underlay_ip, "192.0.2.2".parse::<Ipv4Addr>().unwrap());
        let (cell, locals, tags, allows) = rule_inputs(
            &"cell1".parse().unwrap(),
            "10.255.1.0/24".parse().unwrap(),
            &view(),
            &[
                rec("c1", "10.255.1.1", Some("ga")),
                rec("infra", "10.255.1.3", None),
                // The runtime says app ga, but control never confirmed this one: no tag.
                rec("c9", "10.255.1.4", Some("ga")),
            ],
        );
        assert_eq!(
            locals,
            [Local {
                ip: "10.255.1.1".parse().unwrap(),
                app_guid: "ga".into()
            }]
        );
        assert_eq!(
            cell.containers.len(),
            3,
            "every wired container is a source"
        );
        assert_eq!(cell.peers, ["192.0.2.2".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(tags["ga"], 1);
        assert_eq!(allows.len(), 1);
    }

    #[test]
    fn cni_config_carries_the_lease() {
        let c = cni_config(
            "1.0.0",
            "10.255.7.0/24".parse().unwrap(),
            Path::new("/d"),
            &["10.255.7.0".parse().unwrap()],
        );
        // As a runtime hands it to the plugin.
        let c = c2c_api::cni_list::plugin_config(&c).unwrap();
        let parsed = crate::cni::parse_config(c.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.subnet.to_string(), "10.255.7.0/24");
        assert_eq!(parsed.conf.data_dir, Path::new("/d"));
    }
}
