//! `c2c`: the platform's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod asg_cmd;
mod cell_cmd;
mod certs_cmd;
mod policy_cmd;
mod token_cmd;

use c2c_control::serve_cmd;
use c2c_platform::{demo, demo_app, instance, up};

/// c2c: container-to-container networking with policies and platform-issued TLS.
#[derive(Debug, Parser)]
#[command(
    name = "c2c",
    version,
    after_help = "Exit codes: 0 done (also when what was asked for was already so: creating what exists, \
deleting what does not, as cf); 1 failed (the reason on stderr, prefixed `c2c:`); 2 usage (an unknown \
verb or flag, a bad value: nothing was done); 22 `c2c curl --fail` got an HTTP error; a command run by \
`c2c exec` exits with that command's code. A closed output pipe (`c2c apps | head -1`) ends the \
command quietly.\n\nScripts: apps, network-policies, routes and cells take --json."
)]
struct Cli {
    /// Where control keeps its state and where every command finds the API URL, CA and token.
    #[arg(long, global = true, env = "C2C_STATE_DIR", default_value = c2c_api::layout::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Control's URL, or every replica's separated by commas (tried in turn when one does not
    /// answer), instead of STATE_DIR/control/url: for a machine that runs no control.
    #[arg(long, global = true, env = "C2C_CONTROL", value_name = "URL[,URL...]")]
    control: Option<String>,
    /// The control issuer to trust (a control host's STATE_DIR/ca/control/ca.pem, or a joined
    /// cell's control-ca.pem), instead of the state dir's.
    #[arg(long, global = true, env = "C2C_CONTROL_CA", value_name = "FILE")]
    control_ca: Option<PathBuf>,
    /// A file holding the API token (the admin's, or one from `c2c token create`), instead of
    /// STATE_DIR/control/token; C2C_TOKEN, if set, gives the token itself.
    #[arg(long, global = true, env = "C2C_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Platform CA and per-instance certificates.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// The control plane.
    #[command(subcommand)]
    Control(ControlCommand),
    /// Register or remove a cell: the identities control accepts on its cell API.
    #[command(subcommand)]
    Cell(CellCommand),
    /// List registered cells with their leases.
    Cells {
        /// Print JSON (a stable shape, names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Allow SOURCE to reach DESTINATION on a protocol and port (range).
    AddNetworkPolicy(policy_cmd::AddPolicyArgs),
    /// Remove a policy added with add-network-policy (--protocol and --port required).
    RemoveNetworkPolicy(policy_cmd::RemovePolicyArgs),
    /// List policies, all or those of one source app.
    NetworkPolicies {
        /// Source app to filter results by.
        #[arg(long)]
        source: Option<String>,
        /// Print JSON (a stable shape, names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Create an app: policies name apps, and each app gets a GUID and a 16-bit tag.
    CreateApp {
        /// App name.
        name: String,
        /// Org of its space (with -s; default: the default org).
        #[arg(short = 'o', long = "org", requires = "space")]
        org: Option<String>,
        /// Its space (with -o; default: the default space).
        #[arg(short = 's', long = "space", requires = "org")]
        space: Option<String>,
    },
    #[command(flatten)]
    Asg(asg_cmd::AsgCommand),
    /// List apps with their tags and instances.
    Apps {
        /// Print JSON (a stable shape, names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show an app: its GUID, tag and space, each instance's cell and address, and the host
    /// ports that reach it from the underlay (`curl http://CELL-IP:PORT/`).
    App {
        /// App name or GUID.
        name: String,
        /// Print JSON (a stable shape, names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Change what an app's sidecar does: require callers' instance identity (a client
    /// certificate of a live instance whose app a policy allows on tcp 61443), send the app a
    /// PROXY protocol v2 header naming the caller, offer the app's protocols (HTTP/2, gRPC) in
    /// ALPN. Running sidecars follow at once.
    UpdateApp {
        /// App name or GUID.
        name: String,
        /// `required`: refuse callers without an allowed identity; `off`: serve any caller the
        /// packet filter lets through (Cloud Foundry's behaviour, the default).
        #[arg(long, value_name = "required|off")]
        client_identity: Option<c2c_api::ClientIdentity>,
        /// `v2`: the app receives a PROXY protocol v2 header before each connection's bytes
        /// (caller's overlay address; its CN and SPIFFE ID when it presented an identity);
        /// `off`: the default.
        #[arg(long, value_name = "v2|off")]
        proxy_protocol: Option<c2c_api::ProxyProtocol>,
        /// What the app speaks on its port 8080, which the sidecar offers callers in TLS's
        /// ALPN: `http1` (the default: no ALPN offered), `http2` (`h2` only: gRPC; the app
        /// speaks HTTP/2 over cleartext with prior knowledge) or `http1,http2` (both).
        #[arg(long, value_name = "http1|http2|http1,http2")]
        app_protocol: Option<c2c_api::AppProtocol>,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), made from
    /// this CLI's own arguments. bash: `c2c completion bash > /etc/bash_completion.d/c2c`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Change how many instances an app has (cf's `scale -i`): more are started as its last
    /// push made them, the highest indexes stopped. `c2c push APP -i N` does the same.
    Scale {
        /// App name.
        app: String,
        /// The number of instances the app has after it (1-250).
        #[arg(short = 'i', long = "instances")]
        instances: u32,
    },
    /// Map an internal route HOST.DOMAIN to an app: it enters the app's certificates and DNS.
    MapRoute(policy_cmd::RouteArgs),
    /// Unmap an internal route from an app.
    UnmapRoute(policy_cmd::RouteArgs),
    /// List internal routes.
    Routes {
        /// Print JSON (a stable shape, names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Make a token for a user (admin only): `network.write` reaches the policies of the apps
    /// granted with --app and of the spaces granted with --space; `network.admin` reaches
    /// everything. Set C2C_TOKEN to use it.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// List users with tokens, their scope, their apps and spaces (admin only).
    Tokens,
    /// Raw call to the control API, as `cf curl` does.
    Curl(policy_cmd::CurlArgs),
    /// Run the whole workflow on a local platform, then take it down (needs root).
    Demo {
        /// The demo's own state dir (anything there is taken down first).
        #[arg(long = "demo-dir", default_value = "/tmp/c2c-demo")]
        dir: PathBuf,
        /// Leave the platform running at the end.
        #[arg(long)]
        keep: bool,
    },
    /// Start a local platform: control, an underlay and cells in network namespaces (needs root).
    Up {
        /// How many cells.
        #[arg(long, default_value_t = 2)]
        cells: u8,
        /// A resolver the cells' DNS relays names outside the internal domains to (repeatable;
        /// it must be reachable from the cells, i.e. on the underlay). Without one, such names
        /// are refused.
        #[arg(long = "dns-upstream", value_name = "ADDR:PORT")]
        dns_upstream: Vec<std::net::SocketAddr>,
        /// Cells log c2c traffic (accepts, denies) and egress denies; see `c2c network-logs`.
        /// Security groups with "log": true log their accepts either way.
        #[arg(long)]
        log_c2c: bool,
        /// Lifetime of instance identities (CF_INSTANCE_CERT; Cloud Foundry's default is 24h);
        /// cells renew them at 2/3 of it, in place. Applies when control (re)starts.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        identity_validity: Option<std::time::Duration>,
    },
    /// Show the local platform's traffic logs: one JSON line per logged packet, naming both
    /// apps (the cells write them; see `up --log-c2c` and security groups' "log": true).
    NetworkLogs {
        /// Only lines whose source or destination is this app.
        #[arg(long)]
        app: Option<String>,
        /// Keep printing lines as they come.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Push an app onto the local platform: containers wired by c2c-cni, sidecar and app in each.
    Push(instance::PushArgs),
    /// Run a command inside an instance's container (APP or APP/INDEX), with the platform CA as
    /// curl's and OpenSSL's trust store.
    Exec {
        /// APP or APP/INDEX.
        target: String,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete an app with its instances (CNI DEL, processes, namespaces) and policies, or one
    /// instance (APP/INDEX) while the app and its policies stay.
    Delete {
        /// APP or APP/INDEX.
        app: String,
        /// Force deletion without confirmation (there is no prompt here; accepted because cf
        /// scripts pass it: `cf delete APP -f`).
        #[arg(short = 'f', long = "force")]
        force: bool,
    },
    /// Remove the local platform: no namespace, link, rule or process of ours remains.
    Down,
    /// The built-in demo app (run by push inside a container).
    #[command(hide = true)]
    DemoApp {
        #[arg(long)]
        name: String,
        #[arg(long)]
        index: u32,
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Also serve HTTPS here, terminating TLS with the instance's own identity
        /// (CF_INSTANCE_CERT/KEY) and requiring callers' identities, verified against
        /// CF_SYSTEM_CERT_PATH: Cloud Foundry's "manual" option, without the sidecar.
        #[arg(long, value_name = "ADDR")]
        mtls_listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum CellCommand {
    /// Register a cell: makes its key here, has control sign its client certificate (CN =
    /// NAME) and writes cert.pem, key.pem and control-ca.pem into --out. Registering a name
    /// again revokes its previous certificate.
    Register {
        /// Cell name: 1-63 lower-case letters, digits or '-'.
        name: String,
        /// Directory for the cell's identity (the agent's --cert-dir).
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove a cell: its certificate is refused from now on, its lease and instances freed.
    Remove {
        /// Cell name.
        name: String,
    },
    /// Make a one-time join token for a new cell host (admin): `c2c cell join` on that host
    /// uses it once, before it expires. It pins this platform's control issuer.
    #[command(subcommand)]
    Token(CellTokenCommand),
    /// Join this host to a platform as a new cell, with a token from `c2c cell token create`:
    /// makes the cell's key here (it never leaves the host), checks control against the CA the
    /// token pins, gets the cell's certificate signed, and writes the identity and the agent's
    /// settings. Starts nothing: run c2c-agent with them next.
    Join(cell_cmd::JoinArgs),
}

#[derive(Debug, Subcommand)]
enum CellTokenCommand {
    /// Print a new join token.
    Create {
        /// How long the token may be used.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Only for this cell name, which may be registered already (the join then replaces
        /// its identity: a reinstalled host). Without it, the token joins a new name only.
        #[arg(long)]
        name: Option<String>,
    },
    /// List join tokens: id, cell name bound, expiry, and the cell that used it (never a secret).
    List,
    /// Revoke an unused join token by its id (from `c2c cell token list`), e.g. one that leaked.
    Revoke {
        /// The token's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ControlCommand {
    /// Run the control plane: state in SQLite (or PostgreSQL, shared by replicas), API over TLS.
    Serve(Box<serve_cmd::ServeArgs>),
    /// Move the platform's state into another store (normally the state dir's SQLite file into
    /// the PostgreSQL database replicas will share), with nothing lost: apps and their GUIDs
    /// and tags, instances, policies, routes, domains, leases, cells, tokens. Stop control
    /// first; the destination must be empty.
    Migrate {
        /// The store to read: a SQLite path (`sqlite:PATH` or `PATH`; default: the state dir's
        /// state.db) or a postgres:// URL.
        #[arg(long)]
        from: Option<String>,
        /// The store to fill: a postgres:// URL without a password (or a SQLite path); a URL
        /// with one goes in C2C_DATABASE or --to-file, not on the command line.
        #[arg(long)]
        to: Option<String>,
        /// A file holding the destination's URL.
        #[arg(long, value_name = "FILE")]
        to_file: Option<std::path::PathBuf>,
    },
}

/// `c2c control migrate`.
fn migrate(from: &str, to: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(from != to, "--from and --to name the same store");
    if !from.starts_with("postgres") {
        let path = from.strip_prefix("sqlite:").unwrap_or(from);
        anyhow::ensure!(
            std::path::Path::new(path).exists(),
            "--from {from}: no such SQLite file"
        );
    }
    // The overlay and lease TTL do not matter for a copy.
    let overlay = (std::net::Ipv4Addr::new(10, 255, 0, 0), 16);
    let src = c2c_control::state::State::open_any(from, overlay, 60)
        .with_context(|| format!("opening --from {from}"))?;
    let mut dst = c2c_control::state::State::open_any(to, overlay, 60)
        .with_context(|| "opening --to".to_string())?;
    let moved = c2c_control::migrate::migrate(&src, &mut dst)?;
    for (table, n) in moved {
        println!("{table:<16} {n:>8} rows");
    }
    println!("OK: start control with --database pointing at the new store");
    Ok(())
}

/// A verb whose output may go to a reader that stops early (`c2c apps | head -1`) ends quietly
/// as other CLIs do, killed by SIGPIPE, instead of panicking in `println!` (exit 134). Not for
/// the verbs that run or manage processes (control, the platform's up, demo, exec, down): they
/// keep Rust's default (SIGPIPE ignored, a failed write is an error to handle).
fn quiet_on_closed_pipe(cmd: &Command) {
    let manages_processes = matches!(
        cmd,
        Command::Control(_)
            | Command::Demo { .. }
            | Command::Up { .. }
            | Command::Down
            | Command::Exec { .. }
            | Command::Push(_)
            | Command::Scale { .. }
            | Command::Delete { .. }
            | Command::DemoApp { .. }
    );
    if !manages_processes {
        // SAFETY: restores the default disposition of one signal before any thread exists; no
        // handler of ours runs, so nothing async-signal-unsafe can happen.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    // Every client of the API reads these (c2c_api::client::Client::from_state_dir); set
    // here, before any thread exists.
    for (name, value) in [
        (
            c2c_api::client::CONTROL_ENV,
            cli.control.clone().map(PathBuf::from),
        ),
        (c2c_api::client::CONTROL_CA_ENV, cli.control_ca.clone()),
        (c2c_api::client::TOKEN_FILE_ENV, cli.token_file.clone()),
    ] {
        if let Some(v) = value {
            std::env::set_var(name, v);
        }
    }
    let dir = cli.state_dir;
    let result = match cli.command {
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Control(ControlCommand::Migrate { from, to, to_file }) => {
            let from = from.unwrap_or_else(|| {
                c2c_api::layout::Layout::new(&dir)
                    .db()
                    .display()
                    .to_string()
            });
            c2c_control::serve_cmd::database_url(to.as_deref(), to_file.as_deref(), "C2C_DATABASE")
                .and_then(|to| {
                    to.ok_or_else(|| {
                        anyhow::anyhow!("give --to URL, --to-file FILE or C2C_DATABASE")
                    })
                })
                .and_then(|to| migrate(&from, &to))
        }
        Command::Control(ControlCommand::Serve(a)) => {
            init_logs();
            serve_cmd::run(&dir, *a)
        }
        Command::Cell(CellCommand::Register { name, out }) => cell_cmd::register(&dir, &name, &out)
            .map(|()| println!("Registered cell {name}: identity in {}", out.display())),
        Command::Cell(CellCommand::Remove { name }) => cell_cmd::remove(&dir, &name).map(|()| {
            println!(
                "Removed cell {name}: its certificate is revoked, its lease and instances freed"
            )
        }),
        Command::Cell(CellCommand::Token(CellTokenCommand::Create { ttl, name })) => {
            cell_cmd::create_join_token(&dir, ttl, name.as_deref())
        }
        Command::Cell(CellCommand::Token(CellTokenCommand::List)) => {
            cell_cmd::list_join_tokens(&dir)
        }
        Command::Cell(CellCommand::Token(CellTokenCommand::Revoke { id })) => {
            cell_cmd::revoke_join_token(&dir, &id)
        }
        Command::Cell(CellCommand::Join(a)) => cell_cmd::join(&a, cli.control.as_deref()),
        Command::Cells { json } => cell_cmd::list(&dir, json),
        Command::AddNetworkPolicy(a) => policy_cmd::add_policy(&dir, a),
        Command::RemoveNetworkPolicy(a) => policy_cmd::remove_policy(&dir, a),
        Command::NetworkPolicies { source, json } => policy_cmd::list_policies(&dir, source, json),
        Command::Token(t) => token_cmd::run(&dir, t),
        Command::Tokens => token_cmd::list(&dir),
        Command::CreateApp { name, org, space } => {
            policy_cmd::create_app(&dir, &name, org.as_deref().zip(space.as_deref()))
        }
        Command::Asg(a) => asg_cmd::run(&dir, a),
        Command::Apps { json } => policy_cmd::list_apps(&dir, json),
        Command::App { name, json } => policy_cmd::show_app(&dir, &name, json),
        Command::UpdateApp {
            name,
            client_identity,
            proxy_protocol,
            app_protocol,
        } => policy_cmd::update_app(
            &dir,
            &name,
            c2c_api::types::AppSettings {
                client_identity,
                proxy_protocol,
                app_protocol,
            },
        ),
        Command::Curl(a) => policy_cmd::curl(&dir, a),
        Command::MapRoute(a) => policy_cmd::route(&dir, a, false),
        Command::UnmapRoute(a) => policy_cmd::route(&dir, a, true),
        Command::Routes { json } => policy_cmd::list_routes(&dir, json),
        Command::Demo { dir, keep } => demo::run(&dir, keep),
        Command::NetworkLogs { app, follow } => {
            c2c_platform::netlogs::show(&dir, app.as_deref(), follow)
        }
        Command::Up {
            cells,
            dns_upstream,
            log_c2c,
            identity_validity,
        } => up::up(&dir, cells, &dns_upstream, log_c2c, identity_validity).map(|info| {
            println!(
                "platform up: control at https://{}:{} in netns {}",
                c2c_platform::CONTROL_IP,
                c2c_platform::CONTROL_PORT,
                info.underlay_ns
            );
            for c in &info.cells {
                println!(
                    "  {} (netns {}, underlay {})",
                    c.name, c.netns, c.underlay_ip
                );
            }
        }),
        Command::Push(a) => instance::push(&dir, &a).map(drop),
        Command::Scale { app, instances } => instance::scale(&dir, &app, instances),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "c2c", &mut std::io::stdout());
            Ok(())
        }
        Command::Exec { target, command } => match instance::exec(&dir, &target, &command) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Command::Delete { app, force: _ } => instance::delete(&dir, &app),
        Command::Down => {
            // Whether a platform was recorded here (down also sweeps what a lost one left).
            let had = ["platform.json", "cells", "instances", "control/control.pid"]
                .iter()
                .any(|f| dir.join(f).exists());
            up::down(&dir).map(|()| {
                if had {
                    println!("platform removed")
                } else {
                    println!(
                        "no platform at {}: nothing to remove (c2c up makes one; --state-dir or C2C_STATE_DIR names another)",
                        dir.display()
                    )
                }
            })
        }
        Command::DemoApp {
            name,
            index,
            listen,
            mtls_listen,
        } => demo_app::run(&name, index, listen, mtls_listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c2c: {e:#}");
            if let Some(hint) = fix_for(&e, &dir) {
                eprintln!("c2c: {hint}");
            }
            // As cf curl --fail.
            if e.downcast_ref::<policy_cmd::CurlFailed>().is_some() {
                return ExitCode::from(22);
            }
            if e.downcast_ref::<policy_cmd::UsageError>().is_some() {
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about a failure, when the failure alone does not say.
fn fix_for(e: &anyhow::Error, dir: &std::path::Path) -> Option<String> {
    let c = e
        .chain()
        .find_map(|c| c.downcast_ref::<c2c_api::client::ClientError>())?;
    match c {
        c2c_api::client::ClientError::Transport { detail, .. }
            if detail.contains("Connection refused") || detail.contains("connection refused") =>
        {
            Some(
                if std::env::var_os(c2c_api::client::CONTROL_ENV).is_some() {
                    "no control answers there: check the URLs (--control / C2C_CONTROL) and that \
                 c2c-control runs on those hosts (systemctl status c2c-control)"
                        .to_string()
                } else {
                    format!(
                    "control is not running for {}: `c2c up` starts the local platform's again \
                     (apps, routes and policies are kept), or `c2c control serve` control alone",
                    dir.display()
                )
                },
            )
        }
        c2c_api::client::ClientError::Status { status, .. }
            if *status == c2c_api::client::StatusCode::UNAUTHORIZED =>
        {
            Some(format!(
                "control refused the token: it comes from C2C_TOKEN if set, else --token-file / \
                 C2C_TOKEN_FILE, else {}; `c2c token create` (as the admin) makes a new one",
                c2c_api::layout::Layout::new(dir).token().display()
            ))
        }
        _ => None,
    }
}

fn init_logs() {
    c2c_api::logging::init();
}
