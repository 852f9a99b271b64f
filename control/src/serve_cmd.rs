//! `c2c control serve`: the control plane process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use c2c_certs::ca::{LeafKey, LeafRequest};
use c2c_certs::names::SanSet;
use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{self, Ctx};
use crate::state::State;
use c2c_api::layout::Layout;

/// Flags of `c2c control serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the API (TLS). Cells must reach it; users' CLIs too.
    #[arg(long, env = "C2C_LISTEN", default_value = "127.0.0.1:4002")]
    pub listen: SocketAddr,
    /// The overlay network cells get subnets from.
    #[arg(long, default_value = "10.255.0.0/16")]
    pub overlay: String,
    /// The size of each cell's subnet (silk's subnet_prefix_length): /24 gives 256 cells of up
    /// to 253 containers in a /16; /26 gives 1,024 cells of up to 61. Existing leases keep
    /// their size; new ones never overlap them.
    #[arg(long, default_value_t = crate::state::DEFAULT_CELL_PREFIX)]
    pub subnet_prefix_length: u8,
    /// A cell that has not renewed its lease for this long loses it (silk's default: 300 s;
    /// agents renew every 30 s): its subnet leaves every cell's routes and may go to a new
    /// cell. Leases are first expired one TTL after control starts, so cells that could not
    /// renew while control was down are not expired for it.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// A placed instance its cell has not confirmed within this long (of being placed or
    /// withdrawn) is removed: a container that failed to start leaves no placement behind.
    /// First checked one lease TTL after control starts, as leases are.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub placement_ttl: Duration,
    /// Lifetime of instance certificates; cells renew them at 2/3 of it.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_ttl: Duration,
    /// Lifetime of instance identity certificates (CF_INSTANCE_CERT; Cloud Foundry's default
    /// is 24h); cells renew them at 2/3 of it, in place, with no restart.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub identity_validity: Duration,
    /// SPIFFE trust domain of instance identities: their URI SAN is
    /// spiffe://TRUST_DOMAIN/app/APP_GUID.
    #[arg(long, default_value = c2c_certs::identity::DEFAULT_TRUST_DOMAIN, value_parser = trust_domain)]
    pub trust_domain: String,
    /// Open API connections at most; past it, new connections are closed at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Open API connections from one client address at most; past it, that address's new
    /// connections are closed at once.
    #[arg(long, default_value_t = 512)]
    pub max_connections_per_source: usize,
    /// TLS handshakes in progress at most; past it, a connection waits its turn for up to 2 s,
    /// then is closed (its client tries the next replica). Keeps a reconnect storm to the pace
    /// the CPU allows.
    #[arg(long, default_value_t = 1024)]
    pub max_handshakes: usize,
    /// TLS handshakes in progress from one client address at most; past it, that address's
    /// new connections wait behind its own (within the same 2 s).
    #[arg(long, default_value_t = 16)]
    pub max_handshakes_per_source: usize,
    /// Watch streams this replica holds at most; past it, a cell is answered 503 with
    /// Retry-After and opens its stream on another replica.
    #[arg(long, default_value_t = 16384)]
    pub max_streams: usize,
    /// How long a client may take to send a request's headers (also how long a kept-alive
    /// connection may sit idle).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Each cell's watch builds its view on its own instead of sharing the revision's (the
    /// reference `bench/scale.sh` measures the shared views against).
    #[arg(long, hide = true)]
    pub per_watcher_views: bool,
    /// How long a client may take to finish its TLS handshake, once its turn came.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// How long a cell may take to read one line of its watch stream (or a heartbeat) before
    /// the stream is closed (the cell reconnects and gets a whole view). A cell holds at most
    /// two streams; a newer one closes the oldest.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub watch_write_timeout: Duration,
    /// Policies each app may be the source of when a `network.write` user adds them (Cloud
    /// Foundry's `max_policies`); `network.admin` tokens are not limited.
    #[arg(long, default_value_t = api::DEFAULT_MAX_POLICIES)]
    pub max_policies: usize,
    /// Apps a space may hold unless the admin gave it a quota of its own (`c2c
    /// set-space-quota`); binds `network.write` tokens (tenants, runtimes), not the admin.
    #[arg(long, default_value_t = crate::budgets::Limits::default().space_apps)]
    pub space_max_apps: u32,
    /// Placed instances a space's apps may have in all, unless the space has its own quota.
    #[arg(long, default_value_t = crate::budgets::Limits::default().space_instances)]
    pub space_max_instances: u32,
    /// Routes a space's apps may have mapped in all (each is in every cell's view and its
    /// app's certificates), unless the space has its own quota.
    #[arg(long, default_value_t = crate::budgets::Limits::default().space_routes)]
    pub space_max_routes: u32,
    /// Tag groups one cell may create through CF's `PUT /networking/v1/internal/tags`
    /// (freed when the cell is removed). Apps and groups share the 16-bit tag space.
    #[arg(long, default_value_t = crate::budgets::Limits::default().tag_groups_per_cell)]
    pub max_tag_groups_per_cell: u32,
    /// Tag groups (not apps) in all.
    #[arg(long, default_value_t = crate::budgets::Limits::default().tag_groups)]
    pub max_tag_groups: u32,
    /// Apps of a Cloud Controller's that an admin's policies may name by GUID before control
    /// has seen them (CF's policy-server behaviour: each gets a tag, freed with its last
    /// policy).
    #[arg(long, default_value_t = crate::budgets::Limits::default().external_apps)]
    pub max_external_apps: u32,
    /// Where the state lives: a SQLite file (default: STATE_DIR/state.db), or a PostgreSQL URL
    /// (`postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem`, libpq's
    /// TLS settings) that any number of control replicas share. A URL with a password is
    /// refused here (`ps` shows every process's arguments): give it in the environment
    /// (C2C_DATABASE) or a file (--database-file). Each replica also needs the platform's
    /// files in its state dir: `ca/` and `control/token`, copied from the first.
    #[arg(long)]
    pub database: Option<String>,
    /// A file (mode 0600) holding the database URL, password included; used before
    /// --database and C2C_DATABASE.
    #[arg(long, env = "C2C_DATABASE_FILE", value_name = "FILE")]
    pub database_file: Option<std::path::PathBuf>,
    /// A name or address cells and users reach this replica by, put in its server
    /// certificate (repeatable, or comma-separated in C2C_SAN). The listen address is in it
    /// already unless it is 0.0.0.0. The first is the URL this replica is named by in join
    /// hints (https://FIRST-SAN:PORT): give the name other hosts resolve.
    #[arg(long, env = "C2C_SAN", value_delimiter = ',')]
    pub san: Vec<String>,
    /// Serve Prometheus metrics (plain HTTP, `GET /metrics`) on this address: `HOST:PORT`, or
    /// a bare `PORT` on 127.0.0.1. Off by default; the metrics name no app, instance or user.
    #[arg(long, value_name = "ADDR", value_parser = c2c_api::metrics_http::parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the read-only web console (plain HTTP: the service map, apps, cells, security
    /// groups) on this address: `HOST:PORT`, or a bare `PORT` on 127.0.0.1. Off by default. It
    /// takes the API's tokens (`/login?token=T`); bind it where only operators reach it, or
    /// behind a TLS proxy: a token crosses it in the clear.
    #[arg(long, value_name = "ADDR", value_parser = c2c_api::metrics_http::parse_listen)]
    pub console_listen: Option<std::net::SocketAddr>,
}

/// The database URL: from `file` if given, else `argv` (refused if it holds a password: every
/// user sees a process's arguments), else the environment variable `env`.
pub fn database_url(argv: Option<&str>, file: Option<&Path>, env: &str) -> Result<Option<String>> {
    if let Some(f) = file {
        let url = std::fs::read_to_string(f)
            .with_context(|| format!("reading the database URL from {}", f.display()))?;
        let url = url.trim().to_string();
        anyhow::ensure!(!url.is_empty(), "{}: no database URL in it", f.display());
        // A password others may read is as good as shown: refused, as the hook refuses a
        // token file others can read.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f)?.permissions().mode() & 0o777;
        anyhow::ensure!(
            (redacted(&url) == url && !url.contains("password=")) || mode & 0o077 == 0,
            "{} holds a database password and its mode is {mode:o}: others may read it; chmod 600 {}",
            f.display(),
            f.display()
        );
        return Ok(Some(url));
    }
    if let Some(url) = argv {
        anyhow::ensure!(
            redacted(url) == url && !url.contains("password="),
            "the database URL on the command line holds a password, which `ps` shows to every user: give it in {env} or in a file (--database-file, mode 0600)"
        );
        return Ok(Some(url.to_string()));
    }
    Ok(std::env::var(env).ok().filter(|u| !u.trim().is_empty()))
}

/// `url` with any password replaced, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn parse_overlay(s: &str) -> Result<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .with_context(|| format!("--overlay {s}: expected A.B.C.D/N"))?;
    let ip: std::net::Ipv4Addr = ip.parse().with_context(|| format!("--overlay {s}"))?;
    let len: u8 = len.parse().with_context(|| format!("--overlay {s}"))?;
    anyhow::ensure!(
        (8..=29).contains(&len),
        "--overlay {s}: prefix must be 8-29"
    );
    Ok((ip, len))
}

fn ensure_token(path: &Path) -> Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            // Whoever made the file, only control's user may read the admin token.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
            return Ok(t.trim().to_string());
        }
    }
    let token = crate::tokens::new_secret()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok(token)
}

/// Raises the open-file limit to its hard limit: each API connection holds a descriptor, and the
/// usual soft limit of 1,024 is below the connection cap.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => info!(from = soft, to = hard, "raised the open-file limit"),
                Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
            }
        }
    }
}

/// Expires unrenewed leases and unconfirmed placements every tenth of the lease TTL (at most
/// every 10 s), starting one lease TTL after start.
async fn expire_leases(
    ctx: Arc<Ctx>,
    ttl: Duration,
    placement_ttl: Duration,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(ttl) => {}
    }
    let mut every = tokio::time::interval(
        (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(10)),
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match ctx.expire_leases().await {
            Ok(gone) if !gone.is_empty() => {
                tracing::warn!(cells = ?gone, "leases expired: not renewed within the lease TTL")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expiring leases failed"),
        }
        match ctx.expire_placements(placement_ttl).await {
            Ok(gone) if !gone.is_empty() => {
                tracing::warn!(instances = ?gone, ttl = ?placement_ttl, "placements removed: no cell confirmed them")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expiring placements failed"),
        }
    }
}

/// How many malloc arenas control runs with (glibc's `MALLOC_ARENA_MAX`) unless the
/// environment says otherwise.
pub const MALLOC_ARENAS: &str = "2";

/// glibc gives each thread that allocates an arena of its own, up to 8 per core; control's
/// work hops between its async threads and its blocking pool, so freed memory scattered over
/// many arenas stays with the process: with 1,000 parked watch streams, 19 KiB a stream against
/// 11 KiB with two arenas, fan-out unchanged (`bench/scale.sh`). glibc reads the setting once,
/// at start, so control starts itself again with it (same PID, same arguments), before any
/// thread exists; an operator's own `MALLOC_ARENA_MAX` is left as it is.
fn few_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", MALLOC_ARENAS)
        .exec();
    // Only a failed exec returns: run as we are.
    tracing::warn!(%error, "could not restart with MALLOC_ARENA_MAX={MALLOC_ARENAS}; running with glibc's default arenas");
}

/// Runs control until SIGTERM or Ctrl-C.
pub fn run(state_dir: &Path, args: ServeArgs) -> Result<()> {
    few_malloc_arenas();
    let overlay = parse_overlay(&args.overlay)?;
    let layout = Layout::new(state_dir);
    std::fs::create_dir_all(layout.root.join("control"))
        .with_context(|| format!("creating {}", layout.root.display()))?;
    let database = database_url(
        args.database.as_deref(),
        args.database_file.as_deref(),
        "C2C_DATABASE",
    )?
    .unwrap_or_else(|| layout.db().display().to_string());
    let state = State::open_any(&database, overlay, args.lease_ttl.as_secs())
        .with_context(|| format!("opening the state at {}", redacted(&database)))?;
    // A database another replica claimed is served only with that platform's keys: never a CA
    // made here for it (see `platform_claim`).
    let claimed = state
        .platform_claim()
        .context("reading the platform's claim")?;
    if claimed.is_some() && !layout.ca_dir().join(c2c_certs::ca::CA_CERT_FILE).exists() {
        anyhow::bail!(
            "the database at {} belongs to a platform and this state dir holds no platform CA ({}): \
             copy ca/ and control/token from one of its control replicas, then start again",
            redacted(&database),
            layout.ca_dir().display()
        );
    }
    let (pki, created) =
        c2c_certs::Pki::open_or_create(&layout.ca_dir()).context("loading the platform CA")?;
    if created {
        info!(dir = %layout.ca_dir().display(), "created the platform CA and its issuers (control, cells, instances)");
    }
    let tls = server_tls(&pki, &args, &layout)?;
    raise_file_limit();
    if claimed.is_some() && !layout.token().exists() {
        anyhow::bail!(
            "the database at {} belongs to a platform and this state dir holds no admin token ({}): \
             copy it from one of its control replicas, then start again",
            redacted(&database),
            layout.token().display()
        );
    }
    let token = ensure_token(&layout.token())?;
    let mut state = state;
    configure(&mut state, &args, &pki, &token)?;
    let shared = state.is_postgres();
    info!(database = %redacted(&database), shared, "state opened");
    let budget = api::Budget {
        max_connections: args.max_connections.max(1),
        max_connections_per_source: args.max_connections_per_source.max(1),
        max_handshakes: args.max_handshakes.max(1),
        max_handshakes_per_source: args.max_handshakes_per_source.max(1),
        max_streams: args.max_streams.max(1),
        header_read: args.header_timeout,
        handshake: args.handshake_timeout,
        watch_write: args.watch_write_timeout,
        ..api::Budget::default()
    };
    // The watches read their views through a connection of their own.
    let reader = State::open_any(&database, overlay, args.lease_ttl.as_secs())
        .with_context(|| format!("opening a reader on {}", redacted(&database)))?;
    let control_ca_pem = pki.control.cert_pem().to_string();
    let signers = api::Signers {
        cells: pki.cells,
        instances: pki.instances,
        root_pem: pki.root.cert_pem().to_string(),
    };
    let ctx = Arc::new(
        Ctx::new(state, token)?
            .with_signers(signers, args.cert_ttl)
            .with_identity(args.identity_validity, args.trust_domain.clone())
            .with_budget(budget)
            .with_per_watcher_views(args.per_watcher_views)
            .with_reader(reader)
            .with_max_policies(args.max_policies)
            .with_control_ca(control_ca_pem),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(args, layout, ctx, database, shared, tls))
}

/// Control's server certificate, fresh each start (it names the address control listens on
/// and `--san`), written to the state dir, and the TLS config that asks cells for theirs.
fn server_tls(
    pki: &c2c_certs::Pki,
    args: &ServeArgs,
    layout: &Layout,
) -> Result<rustls::ServerConfig> {
    // Its issuer is the control issuer, the only anchor the CLI and the cells trust for control.
    let mut ips = vec![];
    if !args.listen.ip().is_unspecified() {
        ips.push(args.listen.ip());
    }
    if !args.listen.ip().is_loopback() {
        ips.push(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut names = vec!["localhost".to_string()];
    for san in &args.san {
        match san.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(san.clone()),
        }
    }
    let sans = SanSet::new(&names, ips).context("--san")?;
    let pair = pki.control.issue(&LeafRequest {
        common_name: "c2c-control".into(),
        sans,
        ttl: Duration::from_secs(30 * 24 * 3600),
        key: LeafKey::EcdsaP256,
        usage: c2c_certs::Usage::Server,
    })?;
    c2c_certs::pair::write_pair(
        &layout.server_tls_dir(),
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
    )?;
    api::tls_config(
        pki.cells.cert_pem(),
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))
}

/// The state as this replica runs it: claimed for this platform's CA and token, with the
/// subnet size and budgets given.
fn configure(state: &mut State, args: &ServeArgs, pki: &c2c_certs::Pki, token: &str) -> Result<()> {
    let root_der = c2c_certs::info::first_der_from_pem(pki.root.cert_pem().as_bytes())
        .context("reading the platform CA")?;
    state
        .claim_platform(&crate::platform_claim::Claim {
            ca_sha256: crate::tokens::sha256_hex(&root_der),
            token_sha256: crate::tokens::sha256_hex(token.as_bytes()),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state
        .set_cell_prefix(args.subnet_prefix_length)
        .context("--subnet-prefix-length")?;
    state.set_limits(crate::budgets::Limits {
        tag_groups_per_cell: args.max_tag_groups_per_cell,
        tag_groups: args.max_tag_groups,
        space_apps: args.space_max_apps,
        space_instances: args.space_max_instances,
        space_routes: args.space_max_routes,
        external_apps: args.max_external_apps,
    });
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C: the API, the metrics listener, the replica note, the
/// follower of other replicas' writes and lease expiry.
async fn serve(
    args: ServeArgs,
    layout: Layout,
    ctx: Arc<Ctx>,
    database: String,
    shared: bool,
    tls: rustls::ServerConfig,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = local_url(addr);
    // Whole or not at all: a CLI (or a test) reading it as it appears never sees it empty.
    let tmp = layout.url().with_extension("tmp");
    std::fs::write(&tmp, &url)?;
    std::fs::rename(&tmp, layout.url())?;
    let advertised = advertised_url(&args.san, addr);
    info!(%url, advertised = advertised.as_deref().unwrap_or("(none: no --san)"), state_dir = %layout.root.display(), "control listening");
    let shutdown = CancellationToken::new();
    if let Some(addr) = args.console_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --console-listen {addr}"))?;
        tokio::spawn(crate::console::serve(l, ctx.clone(), shutdown.clone()));
    }
    if let Some(addr) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        tokio::spawn(crate::metrics_http::serve(l, ctx.clone(), shutdown.clone()));
    }
    if let Some(advertised) = advertised {
        tokio::spawn(note_replica(ctx.clone(), advertised, shutdown.clone()));
    }
    // On a shared database, watches also wake for what other replicas write.
    let follower =
        shared.then(|| crate::replicas::follow(database.clone(), ctx.clone(), shutdown.clone()));
    tokio::spawn(expire_leases(
        ctx.clone(),
        args.lease_ttl,
        args.placement_ttl,
        shutdown.clone(),
    ));
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        s2.cancel();
    });
    api::serve(listener, tls, ctx, shutdown).await;
    if let Some(f) = follower {
        let _ = tokio::task::spawn_blocking(move || f.join()).await;
    }
    info!("control stopped");
    Ok(())
}

/// Notes this replica's URL in the database every minute (see [`crate::platform_claim`]).
async fn note_replica(ctx: Arc<Ctx>, url: String, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let u = url.clone();
        if let Err(error) = ctx.with_state(move |s| s.note_replica(&u)).await {
            tracing::warn!(%error, "noting this replica's URL failed");
        }
    }
}

/// The URL other hosts reach this replica by: its first `--san` (a name or address its
/// certificate holds), else the address it listens on if that is one another host can reach.
fn advertised_url(sans: &[String], addr: std::net::SocketAddr) -> Option<String> {
    let host = match sans.first() {
        Some(s) => match s.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => s.clone(),
        },
        None if addr.ip().is_unspecified() || addr.ip().is_loopback() => return None,
        None => match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
    };
    Some(format!("https://{host}:{}", addr.port()))
}

/// The URL the CLI on this host reaches control by (`STATE_DIR/control/url`): the listen
/// address, or loopback when control listens on every address (`0.0.0.0` is no address a
/// client can connect to or verify; 127.0.0.1 is always in the server certificate then).
fn local_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("https://127.0.0.1:{}", addr.port())
    } else {
        format!("https://{addr}")
    }
}

/// A `--trust-domain` as the SPIFFE ID spec allows it.
fn trust_domain(s: &str) -> Result<String, String> {
    if c2c_certs::identity::valid_trust_domain(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')"
        ))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_advertised_url_is_the_first_san_or_a_reachable_listen_address() {
        let a = |s: &[&str], l: &str| {
            advertised_url(
                &s.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                l.parse().unwrap(),
            )
        };
        assert_eq!(
            a(&["ctl1.example", "10.0.0.1"], "0.0.0.0:4002").as_deref(),
            Some("https://ctl1.example:4002")
        );
        assert_eq!(
            a(&["2001:db8::1"], "[::]:4002").as_deref(),
            Some("https://[2001:db8::1]:4002")
        );
        assert_eq!(
            a(&[], "192.0.2.254:4002").as_deref(),
            Some("https://192.0.2.254:4002")
        );
        assert_eq!(a(&[], "0.0.0.0:4002"), None);
        assert_eq!(a(&[], "127.0.0.1:4002"), None);
    }

    #[test]
    fn the_local_url_is_one_a_client_can_connect_to_and_verify() {
        // Issue #30: `--listen 0.0.0.0:4002` wrote https://0.0.0.0:4002, and every CLI command
        // on that host failed with `certificate not valid for name "0.0.0.0"`.
        assert_eq!(
            local_url("0.0.0.0:4002".parse().unwrap()),
            "https://127.0.0.1:4002"
        );
        assert_eq!(
            local_url("[::]:4002".parse().unwrap()),
            "https://127.0.0.1:4002"
        );
        assert_eq!(
            local_url("192.0.2.254:4002".parse().unwrap()),
            "https://192.0.2.254:4002"
        );
    }

    use super::*;

    #[test]
    fn a_database_password_never_comes_from_the_command_line() {
        const UNSET: &str = "C2C_TEST_NO_SUCH_VARIABLE";
        let e = database_url(Some("postgres://c2c:SECRET@db/c2c"), None, UNSET).unwrap_err();
        assert!(e.to_string().contains("--database-file"), "{e}");
        assert!(database_url(Some("postgres://c2c@db/c2c?password=SECRET"), None, UNSET).is_err());
        // Positive controls: no password on argv; the password in a file.
        assert_eq!(
            database_url(Some("postgres://c2c@db/c2c"), None, UNSET).unwrap(),
            Some("postgres://c2c@db/c2c".into())
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("db.url");
        std::fs::write(&f, "postgres://c2c:SECRET@db/c2c\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        // Others may read it: refused, saying how to mend it.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = database_url(None, Some(&f), UNSET).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // No password in it: any mode will do.
        let plain = d.path().join("plain.url");
        std::fs::write(&plain, "postgres://c2c@db/c2c\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(database_url(None, Some(&plain), UNSET).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            database_url(Some("ignored"), Some(&f), UNSET).unwrap(),
            Some("postgres://c2c:SECRET@db/c2c".into())
        );
        assert_eq!(database_url(None, None, UNSET).unwrap(), None);
        assert!(database_url(None, Some(&d.path().join("missing")), UNSET).is_err());
    }
}
