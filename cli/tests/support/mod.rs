//! Shared by the control tests: `c2c control serve` on 127.0.0.1 in a temp state dir, the CLI
//! against it, and curl as an operator or a cell would use it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Control {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Control {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts control with extra `control serve` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_limited(extra, None)
    }

    /// Starts control with extra flags and, if given, a soft open-file limit (as a service
    /// manager's default of 1,024 would set it).
    pub fn start_limited(extra: &[&str], soft_nofile: Option<u64>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra, soft_nofile)
    }

    /// Another replica of `first`'s platform: its own state dir holding copies of the
    /// platform's files (`ca/`, `control/token`), as an operator gives each replica.
    pub fn start_replica(first: &Control, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("control")).unwrap();
        let o = Command::new("cp")
            .arg("-a")
            .arg(first.dir.path().join("ca"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(o.success());
        std::fs::copy(
            first.dir.path().join("control/token"),
            dir.path().join("control/token"),
        )
        .unwrap();
        Self::start_in(dir, extra, None)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str], soft_nofile: Option<u64>) -> Self {
        let mut cmd = match soft_nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -Sn {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_c2c"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_c2c")),
        };
        let child = cmd
            .args([
                "--state-dir",
                dir.path().to_str().unwrap(),
                "control",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url_file = dir.path().join("control/url");
        let end = Instant::now() + Duration::from_secs(10);
        while !url_file.exists() {
            assert!(Instant::now() < end, "control did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = std::fs::read_to_string(url_file).unwrap();
        Self { child, dir, url }
    }

    pub fn c2c(&self, args: &[&str]) -> Output {
        self.c2c_as(None, args)
    }

    /// `c2c ARGS` with a user's token in C2C_TOKEN (or the state dir's admin token).
    pub fn c2c_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_c2c"));
        c.args(args)
            .env("C2C_STATE_DIR", self.dir.path())
            .env_remove("C2C_TOKEN");
        if let Some(t) = token {
            c.env("C2C_TOKEN", t);
        }
        c.output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.c2c(args);
        assert!(
            o.status.success(),
            "c2c {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// Registers cell `cn` (`c2c cell register`); returns its identity dir.
    pub fn cell_cert(&self, cn: &str) -> PathBuf {
        let out = self.dir.path().join(format!("cell-{cn}"));
        self.ok(&["cell", "register", cn, "--out", out.to_str().unwrap()]);
        out
    }

    /// The admin token's Authorization header.
    pub fn auth(&self) -> String {
        format!(
            "Authorization: Bearer {}",
            std::fs::read_to_string(self.dir.path().join("control/token")).unwrap()
        )
    }

    /// A call with the admin token; returns (status, body).
    pub fn admin(&self, extra: &[&str], path: &str) -> (u16, Value) {
        let auth = self.auth();
        let mut args = vec!["-H", auth.as_str()];
        args.extend_from_slice(extra);
        self.curl(&args, path)
    }

    /// The GUID of app `name`.
    pub fn app_guid(&self, name: &str) -> String {
        let (_, app) = self.admin(&[], &format!("/v1/apps/{name}"));
        app["guid"].as_str().unwrap().to_string()
    }

    /// Places instance `index` of `app` on `cell`; returns its GUID.
    pub fn place(&self, app: &str, cell: &str, index: u32) -> String {
        let body = format!(r#"{{"cell":"{cell}","index":{index}}}"#);
        let (code, p) = self.admin(
            &["-X", "POST", "-d", &body],
            &format!("/v1/apps/{app}/instances"),
        );
        assert_eq!(code, 201, "{p}");
        p["guid"].as_str().unwrap().to_string()
    }

    /// curl with the platform CA; returns (status, body).
    pub fn curl(&self, extra: &[&str], path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let mut args = vec![
            "-s",
            "--max-time",
            "20",
            "--cacert",
            self.ca().to_str().unwrap().to_owned().leak(),
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let o = Command::new("curl").args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    pub fn as_cell(&self, cert: &Path, extra: &[&str], path: &str) -> (u16, Value) {
        let c = cert.join("cert.pem");
        let k = cert.join("key.pem");
        let mut args = vec!["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.curl(&args, path)
    }
}
