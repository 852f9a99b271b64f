//! What root_install performs docs/install.md with: the page's `on=HOST` blocks, the hosts
//! they run on (a namespace and a root directory each), the rewriting of the page's names and
//! paths, and the units started as systemd would (included by root_install.rs).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One block of the page: the host it runs on, what of its output to keep, and the text.
pub struct Block {
    pub on: String,
    pub capture: Option<String>,
    pub env: Vec<(String, String)>,
    pub text: String,
}

/// The page's `sh on=HOST [capture=VAR] [env=NAME:VAR]` blocks, in order.
pub fn blocks(page: &str) -> Vec<Block> {
    let mut out = vec![];
    let mut cur: Option<Block> = None;
    for line in page.lines() {
        if let Some(b) = cur.as_mut() {
            if line.trim_end() == "```" {
                out.push(cur.take().unwrap());
            } else {
                b.text.push_str(line);
                b.text.push('\n');
            }
            continue;
        }
        let Some(info) = line.strip_prefix("```sh ") else {
            continue;
        };
        let mut b = Block {
            on: String::new(),
            capture: None,
            env: vec![],
            text: String::new(),
        };
        for word in info.split_whitespace() {
            match word.split_once('=') {
                Some(("on", h)) => b.on = h.to_string(),
                Some(("capture", v)) => b.capture = Some(v.to_string()),
                Some(("env", m)) => {
                    let (name, var) = m.split_once(':').expect("env=NAME:VAR");
                    b.env.push((name.to_string(), var.to_string()));
                }
                _ => panic!("unknown block tag {word:?} in {line:?}"),
            }
        }
        if !b.on.is_empty() {
            cur = Some(b);
        }
    }
    assert!(cur.is_none(), "an unterminated block");
    out
}

/// The absolute paths the page writes, each put under the host's own directory.
pub const HOST_PATHS: &[&str] = &[
    "/usr/share/containers/oci/hooks.d",
    "/etc/systemd/system",
    "/etc/cni/net.d",
    "/etc/containers",
    "/usr/local/bin",
    "/usr/local/share/man",
    "/opt/cni/bin",
    "/var/lib/c2c",
    "/etc/c2c",
];

/// A host of the install: its network namespace and its directory.
pub struct Host {
    pub name: &'static str,
    /// The page's name for it (`ctl1.example`), if other hosts name it.
    pub dns: Option<&'static str>,
    pub ip: Ipv4Addr,
    pub ns: String,
    pub root: PathBuf,
}

/// Rewrites text for `host`: longest match first, one pass (a replacement is never rewritten).
pub fn rewrite(text: &str, rules: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let best = rules
            .iter()
            .filter(|(from, _)| text[i..].starts_with(from.as_str()))
            .max_by_key(|(from, _)| from.len());
        match best {
            Some((from, to)) => {
                out.push_str(to);
                i += from.len();
            }
            None => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

pub struct Install {
    pub hosts: Vec<Host>,
    pub bin_dir: PathBuf,
    pub shims: PathBuf,
    pub pg_port: u16,
    pub captured: BTreeMap<String, String>,
    pub units: Vec<Unit>,
}

/// A unit's main process, killed (by its PID) and reaped on drop.
pub struct Unit {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Install {
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// What `host`'s text is rewritten by.
    pub fn rules(&self, host: &Host) -> Vec<(String, String)> {
        let mut r = vec![
            (
                "target/release/".to_string(),
                format!("{}/", self.bin_dir.display()),
            ),
            ("~/".to_string(), format!("{}/root/", host.root.display())),
            (
                "db.example:5432".to_string(),
                format!("192.0.2.250:{}", self.pg_port),
            ),
        ];
        for p in HOST_PATHS {
            r.push((p.to_string(), format!("{}{p}", host.root.display())));
        }
        for other in &self.hosts {
            let Some(dns) = other.dns else { continue };
            r.push((dns.to_string(), other.ip.to_string()));
            for p in HOST_PATHS {
                r.push((format!("{dns}:{p}"), format!("{}{p}", other.root.display())));
            }
        }
        r
    }

    /// Runs `text` on `host` (`sh -eu`, from the repository's root): its stdout.
    pub fn sh(&self, host: &str, text: &str, env: &[(String, String)]) -> String {
        let h = self.host(host);
        let script = rewrite(text, &self.rules(h));
        let out = Command::new("ip")
            .args(["netns", "exec", &h.ns, "sh", "-eu", "-c", &script])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env(
                "PATH",
                format!(
                    "{}:{}/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.shims.display(),
                    h.root.display()
                ),
            )
            .env("HOME", h.root.join("root"))
            .env("C2C_TEST_UNITS", h.root.join("units-started"))
            .env_remove("C2C_STATE_DIR")
            .env_remove("C2C_TOKEN")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "on {host}:\n{script}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs one block of the page, then starts the units it enabled.
    pub fn run(&mut self, b: &Block) {
        let hosts: Vec<&'static str> = match b.on.as_str() {
            "every-host" => self.hosts.iter().map(|h| h.name).collect(),
            h => vec![
                self.hosts
                    .iter()
                    .find(|x| x.name == h)
                    .expect("a host")
                    .name,
            ],
        };
        let env: Vec<(String, String)> = b
            .env
            .iter()
            .map(|(name, var)| {
                let v = self
                    .captured
                    .get(var)
                    .unwrap_or_else(|| panic!("{var} was not captured before this block"));
                (name.clone(), v.clone())
            })
            .collect();
        for h in hosts {
            let out = self.sh(h, &b.text, &env);
            if let Some(var) = &b.capture {
                let last = out.lines().last().unwrap_or_default().trim().to_string();
                assert!(!last.is_empty(), "{var}: the block printed nothing");
                self.captured.insert(var.clone(), last);
            }
            self.start_enabled(h);
        }
    }

    /// Starts each unit `systemctl enable --now` asked for on `host` since the last call.
    pub fn start_enabled(&mut self, host: &'static str) {
        let list = self.host(host).root.join("units-started");
        let names = std::fs::read_to_string(&list).unwrap_or_default();
        let _ = std::fs::remove_file(&list);
        for name in names.lines().filter(|l| !l.is_empty()) {
            let unit = self.start_unit(host, name);
            self.units.push(unit);
        }
    }

    /// Starts unit `name` (installed under the host's /etc/systemd/system) as systemd would.
    pub fn start_unit(&self, host: &str, name: &str) -> Unit {
        let h = self.host(host);
        let rules = self.rules(h);
        let file = h
            .root
            .join("etc/systemd/system")
            .join(format!("{}.service", name.trim_end_matches(".service")));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                keys.entry(k.to_string())
                    .or_default()
                    .push(rewrite(v, &rules));
            }
        }
        let one = |k: &str| keys.get(k).and_then(|v| v.last().cloned());
        let mut env: Vec<(String, String)> = vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )];
        for f in keys.get("EnvironmentFile").cloned().unwrap_or_default() {
            let (optional, f) = match f.strip_prefix('-') {
                Some(f) => (true, f.to_string()),
                None => (false, f),
            };
            match std::fs::read_to_string(&f) {
                Ok(body) => {
                    for l in body.lines().map(str::trim) {
                        if l.is_empty() || l.starts_with('#') {
                            continue;
                        }
                        let (k, v) = l.split_once('=').expect("KEY=VALUE");
                        env.push((k.to_string(), v.to_string()));
                    }
                }
                Err(e) if !optional => panic!("{name}: EnvironmentFile {f}: {e}"),
                Err(_) => {}
            }
        }
        for pre in keys.get("ExecStartPre").cloned().unwrap_or_default() {
            let cmd = pre.strip_prefix('+').expect("ExecStartPre=+ only here");
            let parts: Vec<&str> = cmd.split_whitespace().collect();
            let s = Command::new("ip")
                .args(["netns", "exec", &h.ns])
                .args(&parts)
                .status()
                .unwrap();
            assert!(s.success(), "{name}: ExecStartPre {cmd}");
        }
        let caps = |k: &str| -> String {
            let set: Vec<String> = one(k)
                .unwrap_or_default()
                .split_whitespace()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect();
            std::iter::once("-all".to_string())
                .chain(set)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut setpriv: Vec<String> = vec![];
        match one("User").as_deref() {
            None | Some("root") => {}
            // The page's `useradd c2c` stands for this user here.
            Some("c2c") => setpriv.extend(
                ["--reuid", "65534", "--regid", "65534", "--clear-groups"].map(String::from),
            ),
            Some(u) => panic!("{name}: User={u}"),
        }
        setpriv.extend([
            "--bounding-set".into(),
            caps("CapabilityBoundingSet"),
            "--inh-caps".into(),
            caps("AmbientCapabilities"),
            "--ambient-caps".into(),
            caps("AmbientCapabilities"),
        ]);
        if one("NoNewPrivileges").as_deref() == Some("yes") {
            setpriv.push("--no-new-privs".into());
        }
        let exec = one("ExecStart").expect("ExecStart");
        let log = h.root.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns, "setpriv"])
            .args(&setpriv)
            .arg("--")
            .args(exec.split_whitespace())
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(h.root.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        Unit {
            name: format!("{host}/{name}"),
            child,
            log: h.root.join(format!("{name}.err")),
        }
    }

    /// `c2c ARGS` on the operator's machine, with its settings sourced; (success, output).
    pub fn operator(&self, args: &str) -> (bool, String) {
        let h = self.host("operator");
        let script = rewrite(&format!(". ~/.c2c/env && c2c {args}"), &self.rules(h));
        let o = Command::new("ip")
            .args(["netns", "exec", &h.ns, "sh", "-c", &script])
            .env("HOME", h.root.join("root"))
            .env(
                "PATH",
                format!(
                    "{}/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    h.root.display()
                ),
            )
            .env_remove("C2C_STATE_DIR")
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    pub fn logs(&self) -> String {
        self.units
            .iter()
            .map(|u| {
                format!(
                    "--- {} ---\n{}",
                    u.name,
                    std::fs::read_to_string(&u.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        // The agents' sidecars and probes outlive an agent by design: end them by their
        // pidfiles, and a failed run's probes' namespaces by their names.
        self.units.clear();
        for h in &self.hosts {
            let cni = h.root.join("var/lib/c2c/cni");
            for kind in ["sidecars", "probes"] {
                for e in std::fs::read_dir(cni.join(kind))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    for pidfile in ["proxy.pid", "responder.pid"] {
                        if let Some(pid) = std::fs::read_to_string(e.path().join(pidfile))
                            .ok()
                            .and_then(|p| p.trim().parse::<i32>().ok())
                        {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    if kind == "probes" {
                        let ns = c2c_shim::probe::netns_name(&e.file_name().to_string_lossy());
                        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
                        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
                    }
                }
            }
        }
    }
}

/// The stand-ins for commands that manage the machine (see the page's last section).
pub fn write_shims(dir: &Path, bin_dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let shims = [
        ("useradd", "exit 0\n".to_string()),
        (
            "chown",
            "a=(); for x in \"$@\"; do a+=(\"${x//c2c:c2c/65534:65534}\"); done\nexec /bin/chown \"${a[@]}\"\n".to_string(),
        ),
        (
            "install",
            format!(
                "a=(); prev=; links=(); for x in \"$@\"; do\n\
                 if [ \"$prev\" = -o ] || [ \"$prev\" = -g ]; then [ \"$x\" = c2c ] && x=65534; fi\n\
                 case \"$x\" in {bin}/*) links+=(\"$x\");; *) a+=(\"$x\");; esac; prev=$x; done\n\
                 if [ ${{#links[@]}} -gt 0 ]; then dest=\"${{a[-1]}}\"; for l in \"${{links[@]}}\"; do ln -f \"$l\" \"$dest/\"; done; exit 0; fi\n\
                 exec /usr/bin/install \"${{a[@]}}\"\n",
                bin = bin_dir.display()
            ),
        ),
        (
            "scp",
            "a=(); for x in \"$@\"; do case \"$x\" in -*) ;; *) a+=(\"$x\");; esac; done\nexec cp -a \"${a[@]}\"\n".to_string(),
        ),
        (
            "systemctl",
            "case \"$1\" in\n daemon-reload) exit 0;;\n enable) [ \"$2\" = --now ] || { echo 'systemctl stand-in: enable --now UNIT only' >&2; exit 1; }; echo \"$3\" >> \"$C2C_TEST_UNITS\";;\n *) echo \"systemctl stand-in: $1 is not done here\" >&2; exit 1;;\nesac\n".to_string(),
        ),
    ];
    use std::os::unix::fs::PermissionsExt;
    for (name, body) in shims {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/bash\nset -eu\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A podman record of the agent's: (overlay IP, container network namespace).
pub fn record(host: &Host, id: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            host.root
                .join(format!("var/lib/c2c/cni/containers/{id}.json")),
        )
        .ok()?,
    )
    .ok()?;
    Some((
        v["ip"].as_str()?.to_string(),
        v["netns"].as_str()?.to_string(),
    ))
}
