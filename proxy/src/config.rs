//! Flags and the optional TOML file, merged into one validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Why the configuration is not usable. The binary exits 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Something required is missing or values do not fit together.
    #[error("{0}")]
    Invalid(String),
}

/// The sidecar's command line. Every value may also come from `--config FILE`; flags win.
#[derive(Debug, Parser, Default)]
#[command(
    name = "c2c-proxy",
    version,
    about = "The c2c sidecar: terminates TLS for an app instance and forwards to the app.",
    long_about = "The c2c sidecar: terminates TLS (1.2 and 1.3) on each listener and forwards the \
decrypted bytes to the app (L4, any TCP protocol). The certificate comes from --cert-dir \
(cert.pem = leaf then chain, key.pem) and is reloaded when the directory changes, on SIGHUP and \
every --reload-interval, without a restart; a bad pair is refused and the last good one kept.\n\n\
Several listeners: repeat --listen/--upstream in pairs, or use [[listeners]] in --config.\n\
SIGTERM stops accepting, lets open connections finish for up to --drain-timeout, then exits 0.\n\
Logs go to stderr; the level comes from RUST_LOG (default: info).\n\n\
Example config file:\n  cert_dir = \"/etc/cf-instance-credentials\"\n  admin = \"127.0.0.1:61003\"\n  \
[[listeners]]\n  listen = \"0.0.0.0:61443\"\n  upstream = \"127.0.0.1:8080\"\n  \
[[listeners]]\n  listen = \"0.0.0.0:61002\"\n  upstream = \"127.0.0.1:2222\""
)]
pub struct Args {
    /// Address to accept TLS on; pairs with the --upstream at the same position [e.g. 0.0.0.0:61443]
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Plaintext address of the app that a --listen forwards to [e.g. 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub upstream: Vec<SocketAddr>,
    /// Directory holding cert.pem and key.pem; watched for changes [required, here or in --config]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Admin HTTP endpoint (/ready, /metrics, /cert) [default: off; e.g. 127.0.0.1:61003]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// TOML file with the same settings, and [[listeners]] tables with listen and upstream
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Longest a client may take to complete the TLS handshake [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Longest to wait for the app to accept a connection [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Open client connections at most, over all listeners; more wait in the kernel backlog [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections one client address may hold, so one peer cannot take every
    /// --max-connections slot; past it a new connection is closed at once [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_connections_per_source: Option<usize>,
    /// Close a connection whose client sent nothing for this long after the handshake (before
    /// its first byte the idle timeout is this short one) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub first_byte_timeout: Option<Duration>,
    /// After SIGTERM, how long open connections may run before the process exits [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Close a forwarded connection after this long with no byte in either direction, so idle
    /// clients cannot hold every --max-connections slot (Envoy's tcp_proxy default) [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Safety-net reload period, on top of the directory watch and SIGHUP [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reload_interval: Option<Duration>,
    /// Quiet time after the last change in the cert dir before reloading; a `..data` link swap
    /// (an atomically committed pair) is loaded at once [default: 20ms]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reload_debounce: Option<Duration>,
    /// Worker threads; 1 runs everything on one thread, the cheapest for a sidecar [default: 1]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// The `--config` file: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// See [`Args::cert_dir`].
    pub cert_dir: Option<PathBuf>,
    /// See [`Args::admin`].
    pub admin: Option<SocketAddr>,
    /// See [`Args::handshake_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// See [`Args::connect_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// See [`Args::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Args::max_connections_per_source`].
    pub max_connections_per_source: Option<usize>,
    /// See [`Args::first_byte_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub first_byte_timeout: Option<Duration>,
    /// See [`Args::drain_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    /// See [`Args::idle_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// See [`Args::reload_interval`].
    #[serde(default, with = "humantime_serde")]
    pub reload_interval: Option<Duration>,
    /// See [`Args::reload_debounce`].
    #[serde(default, with = "humantime_serde")]
    pub reload_debounce: Option<Duration>,
    /// See [`Args::workers`].
    pub workers: Option<usize>,
}

/// One TLS listener and the app address it forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Where TLS is accepted.
    pub listen: SocketAddr,
    /// Where plaintext goes.
    pub upstream: SocketAddr,
}

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one listener.
    pub listeners: Vec<ListenerConfig>,
    /// The watched cert dir.
    pub cert_dir: PathBuf,
    /// Admin endpoint, if any.
    pub admin: Option<SocketAddr>,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Upstream connect deadline.
    pub connect_timeout: Duration,
    /// Concurrent client connections at most.
    pub max_connections: usize,
    /// Concurrent connections from one client address at most.
    pub max_connections_per_source: usize,
    /// How long a client may send nothing after the handshake.
    pub first_byte_timeout: Duration,
    /// Drain deadline after SIGTERM.
    pub drain_timeout: Duration,
    /// A forwarded connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Safety-net reload period.
    pub reload_interval: Duration,
    /// Debounce after a cert-dir event.
    pub reload_debounce: Duration,
    /// Worker threads.
    pub workers: usize,
}

impl Config {
    /// Merges flags over the `--config` file (if any) and validates the result.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        if args.listen.len() != args.upstream.len() {
            return Err(ConfigError::Invalid(format!(
                "--listen and --upstream come in pairs: got {} --listen and {} --upstream",
                args.listen.len(),
                args.upstream.len()
            )));
        }
        let mut listeners = file.listeners;
        listeners.extend(
            args.listen
                .iter()
                .zip(&args.upstream)
                .map(|(l, u)| ListenerConfig {
                    listen: *l,
                    upstream: *u,
                }),
        );
        if listeners.is_empty() {
            return Err(ConfigError::Invalid(
                "no listener: give --listen ADDR --upstream ADDR, or [[listeners]] in --config"
                    .into(),
            ));
        }
        for (i, l) in listeners.iter().enumerate() {
            if l.listen.port() != 0 && listeners[..i].iter().any(|o| o.listen == l.listen) {
                return Err(ConfigError::Invalid(format!(
                    "listen address {} given twice",
                    l.listen
                )));
            }
        }
        let cert_dir = args.cert_dir.or(file.cert_dir).ok_or_else(|| {
            ConfigError::Invalid("no cert dir: give --cert-dir DIR or cert_dir in --config".into())
        })?;
        let cfg = Config {
            listeners,
            cert_dir,
            admin: args.admin.or(file.admin),
            handshake_timeout: args
                .handshake_timeout
                .or(file.handshake_timeout)
                .unwrap_or(Duration::from_secs(10)),
            connect_timeout: args
                .connect_timeout
                .or(file.connect_timeout)
                .unwrap_or(Duration::from_secs(5)),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
            max_connections_per_source: args
                .max_connections_per_source
                .or(file.max_connections_per_source)
                .unwrap_or(1000),
            first_byte_timeout: args
                .first_byte_timeout
                .or(file.first_byte_timeout)
                .unwrap_or(Duration::from_secs(10)),
            drain_timeout: args
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(Duration::from_secs(30)),
            idle_timeout: args
                .idle_timeout
                .or(file.idle_timeout)
                .unwrap_or(Duration::from_secs(3600)),
            reload_interval: args
                .reload_interval
                .or(file.reload_interval)
                .unwrap_or(Duration::from_secs(60)),
            reload_debounce: args
                .reload_debounce
                .or(file.reload_debounce)
                .unwrap_or(Duration::from_millis(20)),
            workers: args.workers.or(file.workers).unwrap_or(1),
        };
        for (name, d) in [
            ("handshake timeout", cfg.handshake_timeout),
            ("connect timeout", cfg.connect_timeout),
            ("idle timeout", cfg.idle_timeout),
            ("first byte timeout", cfg.first_byte_timeout),
            ("reload interval", cfg.reload_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("{name} must be more than 0")));
            }
        }
        if cfg.max_connections == 0 || cfg.workers == 0 || cfg.max_connections_per_source == 0 {
            return Err(ConfigError::Invalid(
                "max connections (also per source) and workers must be at least 1".into(),
            ));
        }
        Ok(cfg)
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("c2c-proxy").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn flags_give_a_listener_and_defaults() {
        let c = Config::from_args(args(&[
            "--listen",
            "0.0.0.0:61443",
            "--upstream",
            "127.0.0.1:8080",
            "--cert-dir",
            "/x",
        ]))
        .unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.workers, 1);
        assert_eq!(c.admin, None);
    }

    #[test]
    fn file_listeners_and_flag_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            "cert_dir = \"/certs\"\nhandshake_timeout = \"3s\"\n\
             [[listeners]]\nlisten = \"0.0.0.0:61001\"\nupstream = \"127.0.0.1:8080\"\n\
             [[listeners]]\nlisten = \"0.0.0.0:61002\"\nupstream = \"127.0.0.1:2222\"\n",
        )
        .unwrap();
        let c = Config::from_args(args(&[
            "--config",
            f.to_str().unwrap(),
            "--handshake-timeout",
            "1s",
            "--listen",
            "0.0.0.0:61443",
            "--upstream",
            "127.0.0.1:8080",
        ]))
        .unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert_eq!(c.cert_dir, PathBuf::from("/certs"));
        assert_eq!(c.handshake_timeout, Duration::from_secs(1));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let e = Config::from_args(args(&["--cert-dir", "/x"])).unwrap_err();
        assert!(e.to_string().contains("no listener"), "{e}");
        let e =
            Config::from_args(args(&["--listen", "0.0.0.0:1", "--cert-dir", "/x"])).unwrap_err();
        assert!(e.to_string().contains("pairs"), "{e}");
        let e = Config::from_args(args(&[
            "--listen",
            "0.0.0.0:1",
            "--upstream",
            "127.0.0.1:2",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("no cert dir"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "cert_dir = \"/c\"\nbogus = 1\n").unwrap();
        let e = Config::from_args(args(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { .. }) && e.to_string().contains("bogus"),
            "{e}"
        );
        std::fs::write(&f, "handshake_timeout = \"soon\"\n").unwrap();
        assert!(matches!(
            Config::from_args(args(&["--config", f.to_str().unwrap()])),
            Err(ConfigError::Parse { .. })
        ));
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Config::from_args(args(&["--config", missing.to_str().unwrap()])),
            Err(ConfigError::Read { .. })
        ));
        assert!(Args::try_parse_from(["c2c-proxy", "--listen", "nope"]).is_err());
    }
}
