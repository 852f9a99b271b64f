//! `c2c`: the platform's command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod app_cmd;
mod args;
mod asg_cmd;
mod cell_cmd;
mod certs_cmd;
mod common;
mod curl_cmd;
mod flows_cmd;
mod help;
mod policy_cmd;
mod route_cmd;
mod token_cmd;

use args::{CellCommand, CellTokenCommand, Cli, Command, ControlCommand};
use c2c_control::serve_cmd;
use c2c_platform::{demo, demo_app, instance, up};

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
            | Command::Stop { .. }
            | Command::Start { .. }
            | Command::Restart { .. }
            | Command::Supervise { .. }
            | Command::Check { .. }
            | Command::Delete { .. }
            | Command::DemoApp { .. }
            | Command::MetricsRelay { .. }
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
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
    let failed_line = says_failed(&cli.command);
    let dir = cli.state_dir;
    match run(cli.command, &dir, cli.control.as_deref()) {
        Ok(Some(code)) => code,
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => failed(&e, &dir, failed_line),
    }
}

/// Runs one verb. `Ok(Some(code))` for verbs that end with a code of their own (exec,
/// supervise).
fn run(command: Command, dir: &Path, control: Option<&str>) -> anyhow::Result<Option<ExitCode>> {
    let dir = dir.to_path_buf();
    match command {
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Control(ControlCommand::Migrate { from, to, to_file }) => {
            migrate_cmd(&dir, from, to, to_file)
        }
        Command::Control(ControlCommand::Serve(a)) => {
            init_logs();
            serve_cmd::run(&dir, *a)
        }
        Command::Cell(cmd) => cell(&dir, cmd, control),
        Command::Cells { json } => cell_cmd::list(&dir, json),
        Command::AddNetworkPolicy(a) => policy_cmd::add_policy(&dir, a),
        Command::RemoveNetworkPolicy(a) => policy_cmd::remove_policy(&dir, a),
        Command::NetworkPolicies { source, json } => policy_cmd::list_policies(&dir, source, json),
        Command::Token(t) => token_cmd::run(&dir, t),
        Command::Tokens { json } => token_cmd::list(&dir, json),
        Command::CreateApp { name, org, space } => {
            app_cmd::create_app(&dir, &name, org.as_deref().zip(space.as_deref()))
        }
        Command::Asg(a) => asg_cmd::run(&dir, a),
        Command::Apps { json } => app_cmd::list_apps(&dir, json),
        Command::App { name, json } => app_cmd::show_app(&dir, &name, json),
        Command::UpdateApp {
            name,
            client_identity,
            proxy_protocol,
            app_protocol,
        } => app_cmd::update_app(
            &dir,
            &name,
            c2c_api::types::AppSettings {
                client_identity,
                proxy_protocol,
                app_protocol,
            },
        ),
        Command::Curl(a) => curl_cmd::curl(&dir, a),
        Command::MapRoute(a) => route_cmd::route(&dir, a, false),
        Command::UnmapRoute(a) => route_cmd::route(&dir, a, true),
        Command::Routes { json } => route_cmd::list_routes(&dir, json),
        Command::Demo { dir, keep } => demo::run(&dir, keep),
        Command::Flows(a) => flows_cmd::run(&dir, a),
        Command::NetworkLogs { app, follow } => {
            c2c_platform::netlogs::show(&dir, app.as_deref(), follow)
        }
        Command::Up {
            cells,
            dns_upstream,
            log_c2c,
            identity_validity,
            database_file,
            replicas,
        } => up_cmd(
            &dir,
            cells,
            &dns_upstream,
            log_c2c,
            &up::ControlOptions {
                database_file,
                replicas,
                identity_validity,
            },
        ),
        Command::Push(a) => instance::push(&dir, &a).map(drop),
        Command::Scale { app, instances } => instance::scale(&dir, &app, instances),
        Command::Man { out } => write_man_pages(&out),
        Command::MetricsRelay { targets } => c2c_platform::metrics::relay(&dir, &targets),
        Command::Metrics { target } => {
            c2c_platform::metrics::show(&dir, &target).map(|text| print!("{text}"))
        }
        Command::Check {
            json,
            only,
            skip,
            keep,
        } => check_cmd(
            &dir,
            c2c_platform::check::Options {
                json,
                only,
                skip,
                keep,
            },
        ),
        Command::Stop { app } => c2c_platform::lifecycle::stop(&dir, &app),
        Command::Start { app } => c2c_platform::lifecycle::start(&dir, &app, false),
        Command::Restart { app } => c2c_platform::lifecycle::start(&dir, &app, true),
        Command::Supervise {
            pidfile,
            exit_file,
            command,
        } => return Ok(Some(supervise_cmd(&pidfile, &exit_file, &command))),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "c2c", &mut std::io::stdout());
            Ok(())
        }
        Command::Exec { target, command } => {
            let code = instance::exec(&dir, &target, &command)?;
            return Ok(Some(ExitCode::from(u8::try_from(code).unwrap_or(1))));
        }
        Command::Delete { app, force: _ } => instance::delete(&dir, &app),
        Command::Down => down_cmd(&dir),
        Command::DemoApp {
            name,
            index,
            listen,
            mtls_listen,
        } => demo_app::run(&name, index, listen, mtls_listen),
    }
    .map(|()| None)
}

/// `c2c cell ...`: an operator's verbs for cells.
fn cell(dir: &Path, cmd: CellCommand, control: Option<&str>) -> anyhow::Result<()> {
    match cmd {
        CellCommand::Register { name, out } => cell_cmd::register(dir, &name, &out)
            .map(|()| println!("Registered cell {name}: identity in {}", out.display())),
        CellCommand::Remove { name } => cell_cmd::remove(dir, &name).map(|()| {
            println!(
                "Removed cell {name}: its certificate is revoked, its lease and instances freed"
            )
        }),
        CellCommand::Token(CellTokenCommand::Create { ttl, name }) => {
            cell_cmd::create_join_token(dir, ttl, name.as_deref())
        }
        CellCommand::Token(CellTokenCommand::List) => cell_cmd::list_join_tokens(dir),
        CellCommand::Token(CellTokenCommand::Revoke { id }) => {
            cell_cmd::revoke_join_token(dir, &id)
        }
        CellCommand::Join(a) => cell_cmd::join(&a, control),
    }
}

/// How a verb that failed ends: its error (and the fix, where one is known), cf's `FAILED`
/// line, and the exit code (22 for `curl --fail`, 2 for a usage error, else 1).
fn failed(e: &anyhow::Error, dir: &Path, failed_line: bool) -> ExitCode {
    eprintln!("c2c: {e:#}");
    if let Some(hint) = fix_for(e, dir) {
        eprintln!("c2c: {hint}");
    }
    // A usage error (exit 2) did nothing and prints nothing on stdout, as clap's own.
    let usage = e.downcast_ref::<common::UsageError>().is_some();
    if failed_line && !usage {
        println!("FAILED");
    }
    // As cf curl --fail.
    if e.downcast_ref::<curl_cmd::CurlFailed>().is_some() {
        return ExitCode::from(22);
    }
    if usage {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}

/// `c2c control migrate`: `--from` defaults to the state dir's SQLite file.
fn migrate_cmd(
    dir: &Path,
    from: Option<String>,
    to: Option<String>,
    to_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let from = from.unwrap_or_else(|| c2c_api::layout::Layout::new(dir).db().display().to_string());
    let to = serve_cmd::database_url(to.as_deref(), to_file.as_deref(), "C2C_DATABASE")?
        .ok_or_else(|| anyhow::anyhow!("give --to URL, --to-file FILE or C2C_DATABASE"))?;
    migrate(&from, &to)
}

/// `c2c up`, then where control, replica B, the cells and the metrics are.
fn up_cmd(
    dir: &Path,
    cells: u8,
    dns_upstream: &[std::net::SocketAddr],
    log_c2c: bool,
    control: &up::ControlOptions,
) -> anyhow::Result<()> {
    let info = up::up(dir, cells, dns_upstream, log_c2c, control)?;
    println!(
        "platform up: control at https://{}:{} in netns {}",
        c2c_platform::CONTROL_IP,
        c2c_platform::CONTROL_PORT,
        info.underlay_ns
    );
    if control.replicas > 1 {
        println!(
            "  replica B at https://{}:{} (the same database)",
            up::CONTROL_B_IP,
            c2c_platform::CONTROL_PORT
        );
    }
    for c in &info.cells {
        println!(
            "  {} (netns {}, underlay {})",
            c.name, c.netns, c.underlay_ip
        );
    }
    for (target, url) in c2c_platform::metrics::urls(dir).unwrap_or_default() {
        if target == "console" {
            // As Jupyter's token URL: it logs the admin in (the token stays in the state dir).
            let token = std::fs::read_to_string(c2c_api::layout::Layout::new(dir).token())
                .unwrap_or_default();
            println!("console: {url}login?token={}", token.trim());
        } else {
            println!("metrics {target}: {url}");
        }
    }
    Ok(())
}

/// `c2c check`: a failed check is a failed command (exit 1).
fn check_cmd(dir: &Path, opts: c2c_platform::check::Options) -> anyhow::Result<()> {
    if c2c_platform::check::run(dir, &opts)? {
        Ok(())
    } else {
        Err(anyhow::anyhow!("some checks failed"))
    }
}

/// `c2c supervise`: runs the app and ends with its code.
fn supervise_cmd(pidfile: &Path, exit_file: &Path, command: &[String]) -> ExitCode {
    let Some((prog, args)) = command.split_first() else {
        eprintln!("c2c supervise: nothing to run");
        return ExitCode::from(2);
    };
    match c2c_platform::lifecycle::supervise(pidfile, exit_file, Path::new(prog), args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("c2c supervise: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `c2c down`, saying whether there was a platform to remove.
fn down_cmd(dir: &Path) -> anyhow::Result<()> {
    // Whether a platform was recorded here (down also sweeps what a lost one left).
    let had = ["platform.json", "cells", "instances", "control/control.pid"]
        .iter()
        .any(|f| dir.join(f).exists());
    up::down(dir)?;
    if had {
        println!("platform removed")
    } else {
        println!(
            "no platform at {}: nothing to remove (c2c up makes one; --state-dir or C2C_STATE_DIR names another)",
            dir.display()
        )
    }
    Ok(())
}

/// `c2c man --out DIR`: the pages clap_mangen makes from the arguments (with the grouped help's
/// examples and related verbs).
fn write_man_pages(out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clap_mangen::generate_to(help::decorate(Cli::command()), out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    let n = std::fs::read_dir(out)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("c2c"))
        .count();
    println!(
        "{n} man pages in {}: `man c2c`, `man c2c-push`",
        out.display()
    );
    Ok(())
}

/// Whether a failure ends with cf's `FAILED` line on stdout: not where stdout is a program's
/// (JSON, `curl`'s body, `exec`'s command, the daemons and the completion script).
fn says_failed(cmd: &Command) -> bool {
    use asg_cmd::AsgCommand;
    !matches!(
        cmd,
        Command::Control(_)
            | Command::DemoApp { .. }
            | Command::Supervise { .. }
            | Command::Exec { .. }
            | Command::Curl(_)
            | Command::Completion { .. }
            | Command::Check { json: true, .. }
            | Command::Apps { json: true }
            | Command::App { json: true, .. }
            | Command::NetworkPolicies { json: true, .. }
            | Command::Routes { json: true }
            | Command::Cells { json: true }
            | Command::Tokens { json: true }
            | Command::Flows(flows_cmd::FlowArgs { json: true, .. })
            | Command::Asg(AsgCommand::SecurityGroups { json: true })
            | Command::Asg(AsgCommand::SecurityGroup { json: true, .. })
    )
}

/// The arguments, or what a usage error printed and the exit code it ends with (2; 0 for
/// `--help` and `--version`). An unknown verb gets cf's words and only harmless suggestions.
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::{CommandFactory, FromArgMatches};
    let err = match help::decorate(Cli::command()).try_get_matches() {
        Ok(m) => match Cli::from_arg_matches(&m) {
            Ok(cli) => return Ok(cli),
            Err(e) => e,
        },
        Err(e) => e,
    };
    if err.kind() == ErrorKind::InvalidSubcommand {
        let verb = match err.get(ContextKind::InvalidSubcommand) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let suggested = match err.get(ContextKind::SuggestedSubcommand) {
            Some(ContextValue::Strings(v)) => v.clone(),
            Some(ContextValue::String(s)) => vec![s.clone()],
            _ => vec![],
        };
        eprintln!("{}", help::unknown_verb(&verb, &suggested));
        return Err(ExitCode::from(2));
    }
    let _ = err.print();
    Err(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)))
}

/// What to do about a failure, when the failure alone does not say.
fn fix_for(e: &anyhow::Error, dir: &std::path::Path) -> Option<String> {
    let c = e
        .chain()
        .find_map(|c| c.downcast_ref::<c2c_api::client::ClientError>())?;
    match c {
        c2c_api::client::ClientError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Some(
                concat!(
                    "the state dir's files are root's alone (0600): run as root (sudo), or ",
                    "give this user a token of its own (as the admin: `c2c token create NAME ",
                    "...`) and use it with --token-file FILE, C2C_TOKEN_FILE or C2C_TOKEN"
                )
                .to_string(),
            )
        }
        c2c_api::client::ClientError::Transport {
            cause: c2c_api::client::TransportCause::Refused,
            ..
        } => Some(
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
        ),
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
