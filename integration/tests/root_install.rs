//! ROOT TEST: docs/install.md, performed. One database host, two control hosts and two cell
//! hosts (network namespaces on one underlay) and an operator's machine; each `on=HOST` block
//! of the page runs as written in its host's namespace, with the page's host names turned into
//! addresses and the absolute paths it writes put under a directory of that host (the page's
//! last section says exactly what is rewritten and what stands in for `systemctl`, `useradd`,
//! `chown`, `install -o` and `scp`). Units run as systemd would start them: their environment
//! file, `ExecStartPre=+`, and `ExecStart` under `setpriv` with exactly the unit's user,
//! capability sets and no_new_privs, so the agent has the capabilities its unit gives and no
//! more. Then podman instances through the hook on both cells, a policy enforced across cells,
//! TLS verified with the platform root from inside the container; then control host 1 goes
//! silent (its namespace drops every packet: no reset) and the CLI, a cell that watched it and
//! a policy added through host 2 carry on. Run as root (CI does); `C2C_SKIP_ROOT_TESTS=1` skips
//! it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use c2c_integration::podman::{tls_get, Podman};
use c2c_integration::topo::*;

/// One block of the page: the host it runs on, what of its output to keep, and the text.
struct Block {
    on: String,
    capture: Option<String>,
    env: Vec<(String, String)>,
    text: String,
}

/// The page's `sh on=HOST [capture=VAR] [env=NAME:VAR]` blocks, in order.
fn blocks(page: &str) -> Vec<Block> {
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
const HOST_PATHS: &[&str] = &[
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
struct Host {
    name: &'static str,
    /// The page's name for it (`ctl1.example`), if other hosts name it.
    dns: Option<&'static str>,
    ip: Ipv4Addr,
    ns: String,
    root: PathBuf,
}

/// Rewrites text for `host`: longest match first, one pass (a replacement is never rewritten).
fn rewrite(text: &str, rules: &[(String, String)]) -> String {
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

struct Install {
    hosts: Vec<Host>,
    bin_dir: PathBuf,
    shims: PathBuf,
    pg_port: u16,
    captured: BTreeMap<String, String>,
    units: Vec<Unit>,
}

/// A unit's main process, killed (by its PID) and reaped on drop.
struct Unit {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Install {
    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// What `host`'s text is rewritten by.
    fn rules(&self, host: &Host) -> Vec<(String, String)> {
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
    fn sh(&self, host: &str, text: &str, env: &[(String, String)]) -> String {
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
    fn run(&mut self, b: &Block) {
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
    fn start_enabled(&mut self, host: &'static str) {
        let list = self.host(host).root.join("units-started");
        let names = std::fs::read_to_string(&list).unwrap_or_default();
        let _ = std::fs::remove_file(&list);
        for name in names.lines().filter(|l| !l.is_empty()) {
            let unit = self.start_unit(host, name);
            self.units.push(unit);
        }
    }

    /// Starts unit `name` (installed under the host's /etc/systemd/system) as systemd would.
    fn start_unit(&self, host: &str, name: &str) -> Unit {
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
    fn operator(&self, args: &str) -> (bool, String) {
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

    fn logs(&self) -> String {
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
fn write_shims(dir: &Path, bin_dir: &Path) {
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
fn record(host: &Host, id: &str) -> Option<(String, String)> {
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

#[test]
fn root_the_install_page_brings_up_a_platform_that_survives_a_silent_control_host() {
    if !require_root() {
        return;
    }
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/install.md"))
        .unwrap();
    let blocks = blocks(&page);
    assert!(blocks.len() >= 10, "the page's blocks: {}", blocks.len());

    // The machines.
    let work = tempfile::tempdir().unwrap();
    // Control runs as `nobody` here: it must reach its directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let underlay = Underlay::new();
    for a in ["192.0.2.250/24", "192.0.2.240/24"] {
        underlay.ns.ip(&["addr", "add", a, "dev", "br0"]);
    }
    let ctl1 = underlay.cell(254);
    let ctl2 = underlay.cell(253);
    let cell1 = underlay.cell(1);
    let cell2 = underlay.cell(2);
    let host = |name, dns, ip, ns: &Netns| {
        let root = work.path().join(name);
        // What a fresh Debian host with systemd has already.
        for d in ["root", "etc/systemd/system"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        Host {
            name,
            dns,
            ip,
            ns: ns.name.clone(),
            root,
        }
    };
    let hosts = vec![
        host(
            "ctl1",
            Some("ctl1.example"),
            Ipv4Addr::new(192, 0, 2, 254),
            &ctl1.ns,
        ),
        host(
            "ctl2",
            Some("ctl2.example"),
            Ipv4Addr::new(192, 0, 2, 253),
            &ctl2.ns,
        ),
        host("cell1", None, Ipv4Addr::new(192, 0, 2, 1), &cell1.ns),
        host("cell2", None, Ipv4Addr::new(192, 0, 2, 2), &cell2.ns),
        host(
            "operator",
            None,
            Ipv4Addr::new(192, 0, 2, 240),
            &underlay.ns,
        ),
    ];

    // The database host (section 2 needs the distribution's service manager): a cluster of
    // this test's that takes TLS only, with the role and database that section makes.
    let dir = tempfile::tempdir().unwrap();
    let (pki, _) = c2c_certs::Pki::open_or_create(dir.path()).unwrap();
    let db_cert = pki
        .control
        .issue(&c2c_certs::LeafRequest {
            common_name: "db.example".into(),
            sans: c2c_certs::SanSet::new(["db.example"], ["192.0.2.250".parse().unwrap()]).unwrap(),
            ttl: Duration::from_secs(3600),
            key: c2c_certs::ca::LeafKey::EcdsaP256,
            usage: c2c_certs::Usage::Server,
        })
        .unwrap();
    let pg = c2c_testkit::pg_cluster::PgCluster::start_tls_at(
        &underlay.ns.name,
        Ipv4Addr::new(192, 0, 2, 250),
        &db_cert.cert_pem,
        &db_cert.key_pem,
    )
    .expect("start PostgreSQL");
    pg.execute("CREATE ROLE c2c LOGIN PASSWORD 'SECRET'")
        .unwrap();
    pg.execute("CREATE DATABASE c2c OWNER c2c").unwrap();

    let bin_dir = c2c_integration::bin("c2c").parent().unwrap().to_path_buf();
    let shims = work.path().join("shims");
    write_shims(&shims, &bin_dir);
    let mut install = Install {
        hosts,
        bin_dir,
        shims,
        pg_port: pg.port(),
        captured: BTreeMap::new(),
        units: vec![],
    };

    // The page, block by block; a control host's unit is waited for before the next host
    // copies its files, a cell's agent before instances are started.
    for b in &blocks {
        install.run(b);
        if b.on.starts_with("ctl") {
            let url = install.host(&b.on).root.join("var/lib/c2c/control/url");
            wait_until(&format!("{} serves", b.on), Duration::from_secs(20), || {
                url.exists()
            });
        }
        if b.on.starts_with("cell") && b.text.contains("c2c-agent") {
            let conf = install
                .host(&b.on)
                .root
                .join("etc/cni/net.d/10-c2c.conflist");
            let logs = || install.logs();
            if eventually(Duration::from_secs(20), || conf.exists().then_some(())).is_none() {
                panic!("{}'s agent wrote no network list:\n{}", b.on, logs());
            }
        }
    }
    // Section 1 put the man pages where man looks for them.
    for h in ["ctl1", "cell1"] {
        let page = install
            .host(h)
            .root
            .join("usr/local/share/man/man1/c2c-add-network-policy.1");
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH c2c-add-network-policy 1"), "{text}");
        assert!(
            text.contains("See also: remove\\-network\\-policy"),
            "{text}"
        );
    }
    let (ok, cells) = install.operator("cells");
    assert!(ok, "{cells}");
    for c in ["cell1", "cell2"] {
        assert!(
            cells
                .lines()
                .any(|l| l.starts_with(c) && l.contains("healthy")),
            "{cells}"
        );
    }

    // Section 7 ran `c2c check`, its probes hosted by the agents. Again, keeping them, as JSON.
    let (ok, out) = install.operator(
        "check --json --keep --only deny-same-cell,host-ports,dns,tls,route-hot,identity",
    );
    assert!(ok, "{out}\n{}", install.logs());
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "probes",
            "deny-same-cell",
            "host-ports",
            "dns",
            "tls",
            "route-hot",
            "identity"
        ],
        "{out}"
    );
    // The attack: anyone on the underlay reaches a probe's host port. Without the probe's own
    // GUID it makes no probe (here: at control's API); the positive control is its hello, and
    // the check above, which carried the GUID.
    let ask = |path: &str| {
        let path = path.to_string();
        c2c_platform::in_netns(&install.host("operator").ns, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("192.0.2.1", 61100))?;
            write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
            let mut got = String::new();
            s.read_to_string(&mut got)?;
            std::io::Result::Ok(got)
        })
        .unwrap()
        .unwrap()
    };
    let hello = ask("/");
    assert!(
        hello.starts_with("HTTP/1.0 200") && hello.contains("app=c2c-check-a"),
        "{hello}"
    );
    let relay = ask("/tcp/192.0.2.254:4002");
    assert!(relay.starts_with("HTTP/1.0 403"), "{relay}");
    // What a responder could do if it were taken over: nothing an agent may. Each kept probe's
    // responder runs with no capability left (the agents here run with all of them) and with
    // no_new_privs, so no program it runs gains any.
    let roots: Vec<String> = ["cell1", "cell2"]
        .iter()
        .map(|h| install.host(h).root.display().to_string())
        .collect();
    let mut responders = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains("probe-responder") || !roots.iter().any(|r| cmd.contains(r.as_str())) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        for field in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert!(
                status.contains(&format!("{field}:\t0000000000000000")),
                "{cmd}: {status}"
            );
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{cmd}: {status}");
        responders += 1;
    }
    assert_eq!(responders, 3, "the kept probes' responders");
    // A last check takes them down; every probe an agent hosted, it took down.
    let (ok, out) = install.operator("check --only deny-same-cell");
    assert!(ok, "{out}");
    // The probes each agent says it hosted, and those it took down, by instance GUID.
    let probes = |what: &str| {
        let mut guids = std::collections::BTreeSet::new();
        for h in ["cell1", "cell2"] {
            let log = std::fs::read_to_string(install.host(h).root.join("c2c-agent.err"))
                .unwrap_or_default();
            for l in log.lines().filter(|l| l.contains(what)) {
                if let Some(g) = l.split("probe=").nth(1).and_then(|r| r.split(' ').next()) {
                    guids.insert(g.to_string());
                }
            }
        }
        guids
    };
    let done = || {
        let hosted = probes("probe hosted");
        hosted.len() == 9 && probes("probe taken down") == hosted
    };
    if eventually(Duration::from_secs(20), || done().then_some(())).is_none() {
        panic!(
            "the agents hosted {:?} and took {:?} down:\n{}",
            probes("probe hosted"),
            probes("probe taken down"),
            install.logs()
        );
    }
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("probe-responder"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Instances with podman, through the hook the page installed, with its containers.conf.
    let podman = |h: &str| {
        let h = install.host(h);
        let conf = std::fs::read_to_string(h.root.join("etc/containers/containers.conf")).unwrap();
        Podman::with_conf(
            &h.ns,
            &conf,
            Some(&h.root.join("usr/share/containers/oci/hooks.d")),
        )
    };
    let (pod1, pod2) = (podman("cell1"), podman("cell2"));
    let httpd = ["httpd", "-f", "-p", "8080", "-h", "/www"];
    let id_b = pod2
        .start("b", &["--annotation", "c2c.app=appb"], &httpd)
        .unwrap_or_else(|e| panic!("{e}\n{}", install.logs()));
    let id_a = pod1
        .start("a", &["--annotation", "c2c.app=appa"], &httpd)
        .unwrap_or_else(|e| panic!("{e}\n{}", install.logs()));
    let (ip_b, _) = record(install.host("cell2"), &id_b).expect("b's record");
    let (ip_a, netns_a) = record(install.host("cell1"), &id_a).expect("a's record");
    let (_, netns_b) = record(install.host("cell2"), &id_b).expect("b's record");
    // The instance's variables (the page's containers.conf) and files (the hook's mounts).
    let (code, ca_pem) = pod1.exec(
        "a",
        &["sh", "-c", "cat \"$CF_SYSTEM_CERT_PATH\"/c2c-platform-ca.pem \"$CF_INSTANCE_CERT\" >/dev/null && cat \"$CF_SYSTEM_CERT_PATH\"/c2c-platform-ca.pem"],
    );
    assert_eq!(code, 0, "{ca_pem}");
    let ca = work.path().join("root-from-a.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    assert_eq!(
        ca_pem,
        std::fs::read_to_string(
            install
                .host("cell1")
                .root
                .join("var/lib/c2c/cell/tls/platform-ca.pem")
        )
        .unwrap(),
        "the container's root is the one the cell joined with"
    );

    // A policy across cells, written by the operator, served with TLS verified by that root.
    let (ok, out) = install.operator("add-network-policy appa appb --protocol tcp --port 61443");
    assert!(ok, "{out}");
    wait_until("a -> b over TLS", Duration::from_secs(15), || {
        tls_get(&netns_a, &ca, "appb.apps.internal", &ip_b)
            .1
            .contains("hello from podman")
    });

    // Control host 1 goes silent: its namespace drops every packet, in and out.
    let nft = |ns: &str, rules: &str| {
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
    };
    let blackholed = Instant::now();
    nft(
        &install.host("ctl1").ns,
        "table inet c2ctest_silent {\n chain in { type filter hook input priority -300; policy drop; }\n chain out { type filter hook output priority -300; policy drop; }\n}\n",
    );
    // The CLI (ctl1 first in its list) answers through ctl2.
    let (ok, out) = install.operator("apps");
    let cli = blackholed.elapsed();
    assert!(ok && out.contains("appa"), "{out}");
    // A policy written through ctl2 reaches cell1, whose agent watched ctl1: b -> a.
    let (ok, out) = install.operator("add-network-policy appb appa --protocol tcp --port 61443");
    assert!(ok, "{out}");
    wait_until(
        "b -> a after ctl1 went silent",
        Duration::from_secs(30),
        || tls_get(&netns_b, &ca, "appa.apps.internal", &ip_a).0 == 0,
    );
    let enforced = blackholed.elapsed();
    let agent1 = std::fs::read_to_string(install.host("cell1").root.join("c2c-agent.err"))
        .unwrap_or_default();
    assert!(
        agent1.contains("watch stream silent"),
        "cell1's agent moved for another reason:\n{agent1}"
    );
    // Figures, not bounds (the page's goals: CLI 5 s, policy 10 s).
    println!(
        "ctl1 silent: the CLI answered through ctl2 after {:.2} s; a policy added then was enforced on cell1 {:.2} s after the blackhole",
        cli.as_secs_f64(),
        enforced.as_secs_f64()
    );
    drop((pod1, pod2));
    drop(install);
    drop(pg);
}
