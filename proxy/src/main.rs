//! `c2c-proxy`: parses flags, builds the runtime, runs the sidecar.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    c2c_api::logging::init();
    let cfg = match c2c_proxy::Config::from_args(c2c_proxy::Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("c2c-proxy: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = if cfg.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.workers)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("c2c-proxy: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = {
            let shutdown = shutdown.clone();
            async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                tracing::info!("shutdown signal received");
                shutdown.cancel();
            }
        };
        tokio::spawn(signals);
        c2c_proxy::run(cfg, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c2c-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
