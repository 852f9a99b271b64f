//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary directory,
//! `pg_ctl start` on a free port bound to 127.0.0.1 only (and a socket in that directory),
//! trust authentication, stopped and removed on drop. As root (CI) the server runs as the
//! `postgres` user the Debian package creates, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    netns: Option<String>,
    listen: std::net::Ipv4Addr,
    /// The server's options (`pg_ctl -o`), kept for [`PgCluster::restart`].
    opts: String,
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server installed (/usr/lib/postgresql: {e}); install the postgresql package"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl PgCluster {
    /// Starts a new cluster on 127.0.0.1.
    pub fn start() -> Result<Self, String> {
        Self::start_at(None, std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a new cluster inside network namespace `netns` (a database host of a test
    /// topology), listening on `listen` there. The test process reaches it through its socket
    /// in the cluster's directory ([`PgCluster::create_db`] does).
    pub fn start_at(netns: Option<&str>, listen: std::net::Ipv4Addr) -> Result<Self, String> {
        Self::start_with(netns, listen, None)
    }

    /// A cluster on 127.0.0.1 that takes TCP clients over TLS only (a plaintext connection is
    /// rejected by `pg_hba.conf`), serving the certificate and key given (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        Self::start_with(
            None,
            std::net::Ipv4Addr::LOCALHOST,
            Some((cert_pem, key_pem)),
        )
    }

    /// A cluster inside `netns` listening on `listen` that takes TCP clients over TLS only,
    /// serving the certificate and key given (PEM): a database host as an operator sets one up.
    pub fn start_tls_at(
        netns: &str,
        listen: std::net::Ipv4Addr,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, String> {
        Self::start_with(Some(netns), listen, Some((cert_pem, key_pem)))
    }

    /// Runs `sql` as the superuser through the cluster's socket.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .and_then(|mut c| c.batch_execute(sql))
            .map_err(|e| format!("{sql}: {}", c2c_control::error::with_causes(&e)))
    }

    fn start_with(
        netns: Option<&str>,
        listen: std::net::Ipv4Addr,
        tls: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("c2c-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let o = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "chown postgres {}: {} (is the postgresql package installed?)",
                    dir.path().display(),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        let port = free_port()?;
        let mut c = PgCluster {
            dir,
            bin,
            port,
            as_postgres,
            netns: netns.map(str::to_string),
            listen,
            opts: String::new(),
        };
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        if !listen.is_loopback() {
            // Hosts on the test's own network (a namespace's subnet) may connect.
            use std::io::Write;
            let hba = data.join("pg_hba.conf");
            std::fs::OpenOptions::new()
                .append(true)
                .open(&hba)
                .and_then(|mut f| f.write_all(b"host all all samenet trust\n"))
                .map_err(|e| format!("{}: {e}", hba.display()))?;
        }
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses={listen} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            c.dir.path().display()
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let put = |name: &str, body: &str| -> Result<(), String> {
                let f = data.join(name);
                std::fs::write(&f, body).map_err(|e| format!("{}: {e}", f.display()))?;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("{}: {e}", f.display()))?;
                if c.as_postgres {
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&f)
                        .output()
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            };
            put("server.crt", cert)?;
            put("server.key", key)?;
            // First match wins: a TCP connection without TLS is rejected before any other line.
            let hba = data.join("pg_hba.conf");
            let rest =
                std::fs::read_to_string(&hba).map_err(|e| format!("{}: {e}", hba.display()))?;
            std::fs::write(&hba, format!("hostnossl all all all reject\n{rest}"))
                .map_err(|e| format!("{}: {e}", hba.display()))?;
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        c.opts = opts;
        c.pg_start()?;
        Ok(c)
    }

    /// `pg_ctl start` with the cluster's options, waiting until it takes connections.
    fn pg_start(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-o",
                &self.opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint, every connection cut),
    /// waits `down`, and starts it again on the same port with the same options.
    pub fn restart(&self, down: std::time::Duration) -> Result<(), String> {
        self.crash()?;
        std::thread::sleep(down);
        self.pg_start()
    }

    /// `pg_ctl stop -m immediate`, as a crash would. Outside any namespace: stopping goes by
    /// the PID file and a signal, and the namespace the server listens in may be gone already.
    fn crash(&self) -> Result<(), String> {
        let data = self.data();
        self.run_in(
            None,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    /// Rows of `sql` in database `db`, each column as text (NULL as None), through the socket.
    pub fn query(&self, db: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut c = postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(postgres::NoTls)
            .map_err(|e| e.to_string())?;
        let rows = c
            .simple_query(sql)
            .map_err(|e| format!("{sql}: {}", c2c_control::error::with_causes(&e)))?;
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        self.run_in(self.netns.as_deref(), tool, args)
    }

    fn run_in(&self, netns: Option<&str>, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut argv: Vec<std::ffi::OsString> = vec![];
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns].map(Into::into));
        }
        if self.as_postgres {
            argv.extend(["runuser", "-u", "postgres", "--"].map(Into::into));
        }
        argv.push(exe.clone().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        // Somewhere the postgres user may stand.
        cmd.args(args).current_dir(self.dir.path());
        let o = cmd
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (over TCP, from where the cluster listens).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@{}:{}/{name}", self.listen, self.port)
    }

    /// The URL of database `name` through the cluster's Unix socket (reachable from any
    /// network namespace on this host: the socket is a file).
    pub fn socket_url(&self, name: &str) -> String {
        let dir: String = self
            .dir
            .path()
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("postgres://postgres@{dir}:{}/{name}", self.port)
    }

    /// Creates database `name` (through the cluster's socket, from any namespace); returns its
    /// URL.
    pub fn create_db(&self, name: &str) -> Result<String, String> {
        let mut c = postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .map_err(|e| e.to_string())?;
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| e.to_string())?;
        Ok(self.url(name))
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}
