//! The command line's arguments: every verb, its flags and its help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{asg_cmd, cell_cmd, certs_cmd, curl_cmd, flows_cmd, policy_cmd, route_cmd, token_cmd};
use c2c_control::serve_cmd;
use c2c_platform::instance;

/// c2c: container-to-container networking with policies and platform-issued TLS.
#[derive(Debug, Parser)]
#[command(
    name = "c2c",
    version,
    after_help = "Exit codes: 0 done (also when what was asked for was already so: creating what exists, \
deleting what does not, as cf); 1 failed (the reason on stderr, prefixed `c2c:`); 2 usage (an unknown \
verb or flag, a bad value: nothing was done); 22 `c2c curl --fail` got an HTTP error; a command run by \
`c2c exec` exits with that command's code. A closed output pipe (`c2c apps | head -1`) ends the \
command quietly.\n\nScripts: every list and show verb (apps, app, network-policies, routes, cells, security-groups, security-group, tokens) takes --json."
)]
pub(crate) struct Cli {
    /// Where control keeps its state and where every command finds the API URL, CA and token.
    #[arg(long, global = true, help_heading = "Global options", env = "C2C_STATE_DIR", default_value = c2c_api::layout::DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,
    /// Control's URL, or every replica's separated by commas (tried in turn when one does not
    /// answer), instead of STATE_DIR/control/url: for a machine that runs no control.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "C2C_CONTROL",
        value_name = "URL[,URL...]"
    )]
    pub(crate) control: Option<String>,
    /// The control issuer to trust (a control host's STATE_DIR/ca/control/ca.pem, or a joined
    /// cell's control-ca.pem), instead of the state dir's.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "C2C_CONTROL_CA",
        value_name = "FILE"
    )]
    pub(crate) control_ca: Option<PathBuf>,
    /// A file holding the API token (the admin's, or one from `c2c token create`), instead of
    /// STATE_DIR/control/token; C2C_TOKEN, if set, gives the token itself.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "C2C_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub(crate) token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Write a man page for c2c and one for each verb (c2c.1, c2c-push.1, ...) into DIR:
    /// `c2c man --out /usr/local/share/man/man1`, then `man c2c-push`.
    Man {
        /// The directory (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
    /// Stop an app pushed here: its instances' processes end; their addresses, placements,
    /// routes and host ports stay, and `c2c apps` shows them as stopped.
    Stop {
        /// App name.
        app: String,
    },
    /// Start an app's stopped or crashed instances again, as its last push made them (running
    /// ones are left alone).
    Start {
        /// App name.
        app: String,
    },
    /// Stop and start every instance of an app (its sidecars too): what a changed command or a
    /// crashed instance needs.
    Restart {
        /// App name.
        app: String,
    },
    /// Runs an app under its instance's supervisor: records its PID and how it ended (used
    /// by push and start inside the container's namespace).
    #[command(hide = true)]
    Supervise {
        /// Where to write the app's PID.
        #[arg(long)]
        pidfile: PathBuf,
        /// Where to write how it ended (exit code or signal, and when).
        #[arg(long)]
        exit_file: PathBuf,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Map an internal route HOST.DOMAIN to an app: it enters the app's certificates and DNS.
    MapRoute(route_cmd::RouteArgs),
    /// Unmap an internal route from an app.
    UnmapRoute(route_cmd::RouteArgs),
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
    Tokens {
        /// Print JSON (a stable shape, app names beside GUIDs) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Raw call to the control API, as `cf curl` does.
    Curl(curl_cmd::CurlArgs),
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
        /// A file (mode 0600) holding a PostgreSQL URL: control keeps the platform's state in
        /// that database instead of SQLite in the state dir (`c2c down` leaves the database
        /// as it is: give the next `up` a fresh one).
        #[arg(long, value_name = "FILE")]
        database_file: Option<std::path::PathBuf>,
        /// Control replicas on that database (1 or 2): replica B listens at 192.0.2.253 on the
        /// underlay; the CLI and the cells go on to it when A does not answer.
        #[arg(long, default_value_t = 1, requires = "database_file")]
        replicas: u8,
    },
    /// Show recent flows between apps and out of them, across every cell, as the cells' traffic
    /// logs recorded them (as `hubble observe`): allowed and denied, with both apps, the cell
    /// and the verdict. Only logged traffic is a flow: the cells log it with `up --log-c2c`
    /// (c2c-accept, c2c-deny, egress-deny) and security groups' "log": true (asg-accept), at
    /// most 5 lines a second per source and 100 per cell. A user sees flows of its own apps.
    Flows(flows_cmd::FlowArgs),
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
    /// Prove by traffic that the local platform enforces what it says (needs root: it enters
    /// the probes' namespaces). Places two probe apps in a space of their own,
    /// c2c-check/probes (c2c-check-a on the first cell, c2c-check-b on the first two), and
    /// checks default deny (TCP and UDP) within and across cells, that a policy opens exactly
    /// its protocol and port one way on every cell (and how long each cell took), host ports,
    /// security-group egress (a group of its own, c2c-check-egress, bound to the probe space
    /// only), the cells' DNS, TLS on 61443 against the platform CA, a route mapped to a running
    /// sidecar, client identity, and that removing the policy closes the path; then removes
    /// what it made (also on failure or Ctrl-C; the empty probe space stays). It acts with the
    /// state dir's token. The admin's does everything; a token scoped to c2c-check/probes
    /// (`c2c token create NAME --space c2c-check/probes`, once an admin made the space) does
    /// all but `egress`, which creates a security group: skip it (`--skip egress`). It never
    /// touches another space's apps, or a group of that name it did not make. Exits 1 if any
    /// check fails, with the reason on its line.
    ///
    /// On a multi-host platform (no local one here; control URLs and a token, as
    /// docs/install.md sets them), each cell's agent hosts the probes instead (instances placed
    /// with runtime probe:PORT), and the check drives them through their host ports: it needs
    /// control and the cells' ports 61100-61107/tcp, not root. There egress is reported as
    /// skipped (it needs a server outside the platform); the rest run.
    Check {
        /// Print one JSON object: {"ok", "ms", "checks": [{"name", "ok", "ms", "reason", "detail"}]}.
        #[arg(long)]
        json: bool,
        /// Run only these checks (comma-separated; the probes are always placed).
        #[arg(long, value_delimiter = ',', value_name = "CHECK,...")]
        only: Vec<String>,
        /// Skip these checks (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "CHECK,...")]
        skip: Vec<String>,
        /// Leave the probe apps in place (a later check reuses them).
        #[arg(long)]
        keep: bool,
    },
    /// Print the local platform's Prometheus metrics: control's (the default), replica B's, or
    /// a cell agent's, read from inside the namespace that serves them (none listens on the
    /// host; see docs/metrics.md for the metrics and a multi-host platform's listeners).
    Metrics {
        /// `control`, `replica-b`, or a cell's name (`cell1`).
        #[arg(default_value = "control")]
        target: String,
    },
    /// Carries 127.0.0.1 ports on the host to the platform's metrics listeners (started by up).
    #[command(hide = true)]
    MetricsRelay {
        /// `control`, `replica-b`, cell names.
        #[arg(required = true)]
        targets: Vec<String>,
    },
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
pub(crate) enum CellCommand {
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
pub(crate) enum CellTokenCommand {
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
pub(crate) enum ControlCommand {
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
