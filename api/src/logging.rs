//! How every c2c binary logs: to stderr, colour only on a terminal, filtered by `RUST_LOG`
//! directives (`info`, `c2c_shim=debug,warn`; default `info`). `Targets` parses the same
//! directives as `EnvFilter` without pulling a regex engine into every sidecar.

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}
