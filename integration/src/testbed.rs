//! A running test platform: control in the underlay namespace, an agent per cell, containers
//! wired by `c2c-cni` as a runtime would, the `c2c` CLI. For tests and benchmarks.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::bin;
use crate::topo::*;

/// Control in the underlay namespace, cells with their agents, all real binaries.
///
/// Fields drop in order: the processes first (agents, control, the database), then the
/// namespaces, and the directory last, so that no agent still running writes into a directory
/// being removed (it would make it again, and it would be left on the host).
pub struct Platform {
    pub agents: Vec<Proc>,
    control: Proc,
    pub url: String,
    /// With replicas: the second control replica and its URL.
    pub replica_b: Option<(Proc, String)>,
    /// The control URLs each cell's agent is given, when not just `url`.
    agent_urls: Vec<String>,
    /// With replicas: the database, in the underlay namespace (stopped after the replicas).
    pub pg: Option<c2c_testkit::pg_cluster::PgCluster>,
    /// Flags every agent gets besides the usual ones.
    agent_flags: Vec<String>,
    /// With replicas: the flags replica A was started with (to start it again).
    replica_a_flags: Vec<String>,
    pub cells: Vec<Cell>,
    pub underlay: Underlay,
    pub dir: tempfile::TempDir,
}

impl Platform {
    /// Starts control and `cells` cells, each with its agent; returns once every agent wrote
    /// its CNI config (it holds a lease).
    pub fn start(cells: u8) -> Self {
        Self::start_with(cells, &[])
    }

    /// [`Platform::start`] with `agent_flags` given to every agent (e.g. `--log-c2c`).
    pub fn start_with(cells: u8, agent_flags: &[&str]) -> Self {
        Self::start_with_flags(cells, &[], agent_flags)
    }

    /// [`Platform::start`] with `control_flags` given to control and `agent_flags` to every
    /// agent.
    pub fn start_with_flags(cells: u8, control_flags: &[&str], agent_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let underlay = Underlay::new();
        underlay
            .ns
            .ip(&["addr", "add", "192.0.2.254/24", "dev", "br0"]);
        let state = dir.path().join("state");
        let control = start_control(
            &underlay.ns,
            &state,
            "192.0.2.254:0",
            dir.path().join("control.log"),
            control_flags,
        );
        let url_file = state.join("control/url");
        eventually(Duration::from_secs(10), || url_file.exists().then_some(()))
            .expect("control did not start");
        let url = std::fs::read_to_string(url_file).unwrap();
        let mut p = Self {
            dir,
            underlay,
            cells: vec![],
            control,
            agents: vec![],
            url,
            replica_b: None,
            agent_urls: vec![],
            pg: None,
            agent_flags: agent_flags.iter().map(|f| f.to_string()).collect(),
            replica_a_flags: vec![],
        };
        for n in 1..=cells {
            let cell = p.underlay.cell(n);
            let name = format!("cell{n}");
            let certs = p.dir.path().join(format!("{name}-tls"));
            p.c2c(&["cell", "register", &name, "--out", certs.to_str().unwrap()]);
            p.cells.push(cell);
            p.start_agent(n);
        }
        p.wait_for_agents();
        p
    }

    /// Three kinds of host on one underlay, as namespaces: PostgreSQL (192.0.2.250), control
    /// replica A (192.0.2.254) and replica B (192.0.2.253), both on the database, with copies of
    /// one platform's files; `cells` cells that join with one-time tokens (not registered by
    /// the test's admin), cell N's agent given both replicas' URLs, odd cells A first and even
    /// cells B first. Leases are /26s and expire after `lease_ttl` (agents renew every second).
    pub fn start_replicated(cells: u8, lease_ttl: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let underlay = Underlay::new();
        for a in ["192.0.2.254/24", "192.0.2.253/24", "192.0.2.250/24"] {
            underlay.ns.ip(&["addr", "add", a, "dev", "br0"]);
        }
        let pg = c2c_testkit::pg_cluster::PgCluster::start_at(
            Some(&underlay.ns.name),
            Ipv4Addr::new(192, 0, 2, 250),
        )
        .expect("start PostgreSQL in the underlay");
        let db = pg.create_db("c2c").unwrap();
        let flags: Vec<String> = [
            "--database",
            &db,
            "--lease-ttl",
            lease_ttl,
            // Cells get /26s here (the rest of the tests use the default /24s), so the agents,
            // c2c-cni and the VTEPs run on another lease size.
            "--subnet-prefix-length",
            "26",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let replica = |state: &std::path::Path, listen: &str, log: &str| {
            let f: Vec<&str> = flags.iter().map(String::as_str).collect();
            start_control(&underlay.ns, state, listen, dir.path().join(log), &f)
        };
        let wait_url = |state: &std::path::Path, proc: &Proc| {
            let url_file = state.join("control/url");
            eventually(Duration::from_secs(20), || url_file.exists().then_some(()))
                .unwrap_or_else(|| panic!("control did not start: {}", proc.log()));
            std::fs::read_to_string(url_file).unwrap()
        };
        let state = dir.path().join("state");
        let control = replica(&state, "192.0.2.254:0", "control.log");
        let url = wait_url(&state, &control);
        // Replica B: the platform's files copied from A, as an operator does.
        let state_b = dir.path().join("state-b");
        std::fs::create_dir_all(state_b.join("control")).unwrap();
        run(
            "cp",
            &[
                "-a",
                state.join("ca").to_str().unwrap(),
                state_b.to_str().unwrap(),
            ],
        );
        std::fs::copy(state.join("control/token"), state_b.join("control/token")).unwrap();
        let b = replica(&state_b, "192.0.2.253:0", "control-b.log");
        let url_b = wait_url(&state_b, &b);
        let mut p = Self {
            dir,
            underlay,
            cells: vec![],
            control,
            agents: vec![],
            url: url.clone(),
            replica_b: Some((b, url_b.clone())),
            agent_urls: vec![],
            pg: Some(pg),
            agent_flags: vec![],
            replica_a_flags: flags.clone(),
        };
        for n in 1..=cells {
            let cell = p.underlay.cell(n);
            let name = format!("cell{n}");
            let token = p.c2c(&["cell", "token", "create"]).trim().to_string();
            let urls = if n % 2 == 1 {
                format!("{url},{url_b}")
            } else {
                format!("{url_b},{url}")
            };
            let certs = p.dir.path().join(format!("{name}-tls"));
            cell.ns.exec(
                bin("c2c").to_str().unwrap(),
                &[
                    "--state-dir",
                    "/nonexistent",
                    "cell",
                    "join",
                    "--control",
                    &urls,
                    "--token",
                    &token,
                    "--name",
                    &name,
                    "--underlay-ip",
                    &format!("192.0.2.{n}"),
                    "--out",
                    certs.to_str().unwrap(),
                ],
            );
            p.cells.push(cell);
            p.agent_urls.push(urls);
            p.start_agent(n);
        }
        p.wait_for_agents();
        p
    }

    /// Waits until every agent wrote its CNI config (it holds a lease and enforces).
    fn wait_for_agents(&self) {
        for n in 1..=self.cells.len() as u8 {
            let conf = self.cni_conf_path(n);
            eventually(Duration::from_secs(10), || conf.exists().then_some(())).unwrap_or_else(
                || {
                    panic!(
                        "agent {n} wrote no CNI config: {}",
                        self.agents[n as usize - 1].log()
                    )
                },
            );
        }
    }

    /// Kills replica A with SIGKILL.
    pub fn kill_replica_a(&mut self) {
        self.control.kill9();
    }

    /// Starts replica A again (after [`Platform::kill_replica_a`]) on its state dir, address and
    /// database; returns once it listens.
    pub fn restart_replica_a(&mut self) {
        self.control.kill9();
        let state = self.dir.path().join("state");
        let url_file = state.join("control/url");
        let _ = std::fs::remove_file(&url_file);
        let addr = self.url.trim().trim_start_matches("https://").to_string();
        let flags: Vec<&str> = self.replica_a_flags.iter().map(String::as_str).collect();
        self.control = start_control(
            &self.underlay.ns,
            &state,
            &addr,
            self.dir.path().join("control-a-again.log"),
            &flags,
        );
        eventually(Duration::from_secs(20), || url_file.exists().then_some(()))
            .unwrap_or_else(|| panic!("replica A did not start again: {}", self.control.log()));
    }

    /// The `c2c` CLI against replica B (its own state dir).
    pub fn c2c_b(&self, args: &[&str]) -> String {
        let state = self.dir.path().join("state-b");
        let mut a = vec!["--state-dir", state.to_str().unwrap()];
        a.extend_from_slice(args);
        self.underlay.ns.exec(bin("c2c").to_str().unwrap(), &a)
    }

    /// appa on cell1 and appb on cell2 (serving TCP 8080 as `b`), with no policy between them,
    /// once both cells enforce it (a refused connect proves the path): (a's namespace, its
    /// address, b's namespace, its address).
    pub fn appa_to_appb(&self) -> (Netns, Ipv4Addr, Netns, Ipv4Addr) {
        for app in ["appa", "appb"] {
            self.c2c(&["create-app", app]);
        }
        let (a, ip_a) = self.container(1, "appa", 0);
        let (b, ip_b) = self.container(2, "appb", 0);
        let to_b = std::net::SocketAddr::new(ip_b.into(), 8080);
        serve(&b, to_b, "b");
        wait_until(
            "appb reachable as far as its cell",
            Duration::from_secs(15),
            || matches!(fetch(&a, to_b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        );
        (a, ip_a, b, ip_b)
    }

    /// Control's (replica A's) process id.
    pub fn control_pid(&self) -> u32 {
        self.control.child.id()
    }

    /// Stops control and starts it again on the same state dir and address, as after a crash
    /// or an upgrade; returns once it listens.
    pub fn restart_control(&mut self) {
        self.control.stop();
        let state = self.dir.path().join("state");
        let url_file = state.join("control/url");
        std::fs::remove_file(&url_file).unwrap();
        let addr = self.url.trim().trim_start_matches("https://").to_string();
        self.control = start_control(
            &self.underlay.ns,
            &state,
            &addr,
            self.dir.path().join("control-2.log"),
            &[],
        );
        eventually(Duration::from_secs(10), || url_file.exists().then_some(()))
            .unwrap_or_else(|| panic!("control did not restart: {}", self.control.log()));
    }

    /// Cell `n`'s traffic log (the agent's default, in its data dir).
    pub fn network_log(&self, n: u8) -> PathBuf {
        self.dir.path().join(format!("cell{n}-cni/network.log"))
    }

    pub fn cni_conf_path(&self, n: u8) -> PathBuf {
        self.dir.path().join(format!("cell{n}-cni.conflist"))
    }

    pub fn start_agent(&mut self, n: u8) {
        let d = self.dir.path();
        let args: Vec<String> = vec![
            "--cell".into(),
            format!("cell{n}"),
            "--underlay-ip".into(),
            format!("192.0.2.{n}"),
            "--control".into(),
            self.agent_urls
                .get(n as usize - 1)
                .cloned()
                .unwrap_or_else(|| self.url.clone()),
            "--ca".into(),
            d.join(format!("cell{n}-tls/control-ca.pem"))
                .display()
                .to_string(),
            "--cert-dir".into(),
            d.join(format!("cell{n}-tls")).display().to_string(),
            "--data-dir".into(),
            d.join(format!("cell{n}-cni")).display().to_string(),
            "--cni-config".into(),
            self.cni_conf_path(n).display().to_string(),
            "--resync".into(),
            "1s".into(),
            "--renew".into(),
            "1s".into(),
        ]
        .into_iter()
        .chain(self.agent_flags.iter().cloned())
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Proc::start_in(
            &self.cells[n as usize - 1].ns,
            &bin("c2c-agent"),
            &args,
            d.join(format!("agent{n}.log")),
        );
        if self.agents.len() >= n as usize {
            self.agents[n as usize - 1] = agent;
        } else {
            self.agents.push(agent);
        }
    }

    /// The `c2c` CLI, run where control is reachable (the underlay namespace).
    pub fn c2c(&self, args: &[&str]) -> String {
        let state = self.dir.path().join("state");
        let mut a = vec!["--state-dir", state.to_str().unwrap()];
        a.extend_from_slice(args);
        self.underlay.ns.exec(bin("c2c").to_str().unwrap(), &a)
    }

    /// `c2c add-network-policy SRC DST --protocol PROTO --port PORT` (through replica A).
    pub fn allow(&self, src: &str, dst: &str, proto: &str, port: &str) -> String {
        self.c2c(&[
            "add-network-policy",
            src,
            dst,
            "--protocol",
            proto,
            "--port",
            port,
        ])
    }

    pub fn app_guid(&self, name: &str) -> String {
        let out = self.c2c(&["curl", &format!("/v1/apps/{name}")]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["guid"].as_str().unwrap().to_string()
    }

    /// Places instance `index` of `app` on cell `n` through the external API (what a
    /// scheduler does with a user's token); returns its GUID.
    pub fn place(&self, n: u8, app: &str, index: u32) -> String {
        let body = serde_json::json!({ "cell": format!("cell{n}"), "index": index }).to_string();
        let out = self.c2c(&[
            "curl",
            &format!("/v1/apps/{app}/instances"),
            "-X",
            "POST",
            "-d",
            &body,
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["guid"]
            .as_str()
            .unwrap_or_else(|| panic!("placing {app}/{index}: {out}"))
            .to_string()
    }

    /// A container of `app` on cell `n`, placed in control and wired by c2c-cni with the
    /// agent's config, as a runtime would.
    pub fn container(&self, n: u8, app: &str, index: u32) -> (Netns, Ipv4Addr) {
        let guid = self.place(n, app, index);
        self.container_as(n, app, index, &guid)
    }

    /// A container wired by c2c-cni on cell `n` claiming to be instance `guid` of `app` (the
    /// runtime's word; control decides whether it is).
    pub fn container_as(&self, n: u8, app: &str, index: u32, guid: &str) -> (Netns, Ipv4Addr) {
        let ctr = Netns::new("ctr");
        let mut conf: serde_json::Value =
            c2c_api::cni_list::read_plugin_config(&self.cni_conf_path(n)).unwrap();
        conf["runtimeConfig"] = serde_json::json!({
            "app_guid": self.app_guid(app), "instance_index": index, "instance_guid": guid,
        });
        let id = format!("{app}-{index}-{}", ctr.name);
        let ip = add(&self.cells[n as usize - 1].ns, &ctr, &id, &conf.to_string());
        (ctr, ip)
    }
}

/// `c2c`'s arguments for `control serve` of state dir `state` on `listen` (flags may follow).
pub fn control_serve_args(state: &std::path::Path, listen: &str) -> Vec<String> {
    let state = state.to_str().unwrap().to_string();
    [
        "--state-dir",
        &state,
        "control",
        "serve",
        "--listen",
        listen,
    ]
    .map(String::from)
    .to_vec()
}

/// `c2c control serve` on `listen` with `extra` flags, inside `ns`, its log to `log`.
fn start_control(
    ns: &Netns,
    state: &std::path::Path,
    listen: &str,
    log: PathBuf,
    extra: &[&str],
) -> Proc {
    let base = control_serve_args(state, listen);
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Proc::start_in(ns, &bin("c2c"), &args, log)
}
