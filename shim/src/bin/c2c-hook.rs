//! `c2c-hook`: the OCI hook that makes a container started with the `c2c.app` annotation an
//! instance of its app (see `c2c_shim::hook`). The runtime runs `attach` at createRuntime and
//! `detach` at poststop with the container's OCI state on stdin; `install` writes the hooks
//! directory entries that make podman or CRI-O do so.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use c2c_shim::hook::{self, HookConfig, OciState};
use clap::{Parser, Subcommand};

/// The c2c OCI hook: containers a runtime starts with `--annotation c2c.app=APP` (and
/// `--network c2c`) become instances of APP, with a certificate, a sidecar on 61443, the cell
/// DNS and policies by app; `podman rm` removes all of it.
#[derive(Debug, Parser)]
#[command(name = "c2c-hook", version)]
struct Args {
    /// The hook's config on this host (JSON): control, ca_file, token_file (the runtime's
    /// credential, from `c2c token create`), cell, data_dir, optional space and wait.
    #[arg(long, default_value = "/etc/c2c/hook.json")]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// createRuntime: place the container (OCI state on stdin) as an instance of its app and
    /// hand it to the cell agent; returns once its certificate is issued.
    Attach,
    /// poststop: remove the container's placement, sidecar and directory.
    Detach,
    /// Write the hooks directory entries (podman: /usr/share/containers/oci/hooks.d or
    /// containers.conf's hooks_dir) that run this program for annotated containers.
    Install {
        /// The runtime's hooks directory.
        #[arg(long, default_value = "/usr/share/containers/oci/hooks.d")]
        hooks_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The runtime shows this when the container fails to start.
            eprintln!("c2c-hook: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let cfg = HookConfig::load(&args.config)?;
    let stage = match args.command {
        Cmd::Install { hooks_dir } => {
            cfg.check_token_file()?;
            let me =
                std::env::current_exe().map_err(|e| format!("finding this program's path: {e}"))?;
            let config = std::fs::canonicalize(&args.config)
                .map_err(|e| format!("{}: {e}", args.config.display()))?;
            std::fs::create_dir_all(&hooks_dir)
                .map_err(|e| format!("creating {}: {e}", hooks_dir.display()))?;
            for (name, json) in hook::hook_files(&me, &config) {
                let path = hooks_dir.join(name);
                std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default())
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
            return Ok(());
        }
        s => s,
    };
    let mut raw = vec![];
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the OCI state on stdin: {e}"))?;
    let state = OciState::parse(&raw)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        match stage {
            Cmd::Attach => hook::attach(&cfg, &state).await,
            _ => hook::detach(&cfg, &state).await,
        }
    })
}
