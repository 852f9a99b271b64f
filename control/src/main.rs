//! `c2c`: the platform's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// c2c: container-to-container networking with policies and platform-issued TLS.
#[derive(Debug, Parser)]
#[command(name = "c2c", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Platform CA and per-instance certificates.
    #[command(subcommand)]
    Certs(c2c_control::certs_cmd::CertsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(cmd) => c2c_control::certs_cmd::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c2c: {e:#}");
            ExitCode::FAILURE
        }
    }
}
