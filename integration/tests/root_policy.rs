//! ROOT TEST: the policy workflow end to end with the real binaries. Control runs in the
//! underlay namespace, a `c2c-agent` in each of two cells, containers are wired by `c2c-cni`
//! with the config the agent wrote, and the user runs the `c2c` CLI. Run as root (CI does);
//! `C2C_SKIP_ROOT_TESTS=1` skips it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use c2c_integration::bin;
use c2c_integration::topo::*;

struct Platform {
    dir: tempfile::TempDir,
    underlay: Underlay,
    cells: Vec<Cell>,
    _control: Proc,
    agents: Vec<Proc>,
    url: String,
}

impl Platform {
    fn start(cells: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let underlay = Underlay::new();
        underlay
            .ns
            .ip(&["addr", "add", "192.0.2.254/24", "dev", "br0"]);
        let state = dir.path().join("state");
        let control = Proc::start_in(
            &underlay.ns,
            &bin("c2c"),
            &[
                "--state-dir",
                state.to_str().unwrap(),
                "control",
                "serve",
                "--listen",
                "192.0.2.254:0",
            ],
            dir.path().join("control.log"),
        );
        let url_file = state.join("control/url");
        eventually(Duration::from_secs(10), || url_file.exists().then_some(()))
            .expect("control did not start");
        let url = std::fs::read_to_string(url_file).unwrap();
        let mut p = Self {
            dir,
            underlay,
            cells: vec![],
            _control: control,
            agents: vec![],
            url,
        };
        for n in 1..=cells {
            let cell = p.underlay.cell(n);
            let name = format!("cell{n}");
            let certs = p.dir.path().join(format!("{name}-tls"));
            run(
                bin("c2c").to_str().unwrap(),
                &[
                    "certs",
                    "issue",
                    "--ca-dir",
                    state.join("ca").to_str().unwrap(),
                    "--out",
                    certs.to_str().unwrap(),
                    "--instance-id",
                    &name,
                    "--dns",
                    &name,
                ],
            );
            p.cells.push(cell);
            p.start_agent(n);
        }
        for n in 1..=cells {
            let conf = p.cni_conf_path(n);
            eventually(Duration::from_secs(10), || conf.exists().then_some(())).unwrap_or_else(
                || {
                    panic!(
                        "agent {n} wrote no CNI config: {}",
                        p.agents[n as usize - 1].log()
                    )
                },
            );
        }
        p
    }

    fn cni_conf_path(&self, n: u8) -> PathBuf {
        self.dir.path().join(format!("cell{n}-cni.conf"))
    }

    fn start_agent(&mut self, n: u8) {
        let d = self.dir.path();
        let args: Vec<String> = vec![
            "--cell".into(),
            format!("cell{n}"),
            "--underlay-ip".into(),
            format!("192.0.2.{n}"),
            "--control".into(),
            self.url.clone(),
            "--ca".into(),
            d.join("state/ca/ca.pem").display().to_string(),
            "--cert-dir".into(),
            d.join(format!("cell{n}-tls")).display().to_string(),
            "--data-dir".into(),
            d.join(format!("cell{n}-cni")).display().to_string(),
            "--cni-config".into(),
            self.cni_conf_path(n).display().to_string(),
            "--resync".into(),
            "1s".into(),
        ];
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
    fn c2c(&self, args: &[&str]) -> String {
        let state = self.dir.path().join("state");
        let mut a = vec!["--state-dir", state.to_str().unwrap()];
        a.extend_from_slice(args);
        self.underlay.ns.exec(bin("c2c").to_str().unwrap(), &a)
    }

    fn app_guid(&self, name: &str) -> String {
        let out = self.c2c(&["curl", &format!("/v1/apps/{name}")]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["guid"].as_str().unwrap().to_string()
    }

    /// A container of `app` on cell `n`, wired by c2c-cni with the agent's config.
    fn container(&self, n: u8, app: &str, index: u32) -> (Netns, Ipv4Addr) {
        let ctr = Netns::new("ctr");
        let mut conf: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.cni_conf_path(n)).unwrap()).unwrap();
        conf["runtimeConfig"] =
            serde_json::json!({ "app_guid": self.app_guid(app), "instance_index": index });
        let id = format!("{app}-{index}-{}", ctr.name);
        let ip = add(&self.cells[n as usize - 1].ns, &ctr, &id, &conf.to_string());
        (ctr, ip)
    }
}

fn refused(r: std::io::Result<String>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    eventually(Duration::from_secs(15), || ok().then_some(()))
        .unwrap_or_else(|| panic!("timed out waiting for: {what}"));
    t.elapsed()
}

#[test]
fn root_policy_workflow_across_and_within_cells() {
    if !require_root() {
        return;
    }
    let mut p = Platform::start(2);
    for app in ["appa", "appb", "appc"] {
        p.c2c(&["create-app", app]);
    }
    let (a, _ip_a) = p.container(1, "appa", 0);
    let (b, ip_b) = p.container(2, "appb", 0);
    let (b1, ip_b1) = p.container(1, "appb", 1);
    let (c, _) = p.container(2, "appc", 0);
    for (ns, ip) in [(&b, ip_b), (&b1, ip_b1)] {
        serve(ns, SocketAddr::new(ip.into(), 8080), "appb");
        serve_udp(ns, SocketAddr::new(ip.into(), 5005), "appb");
    }
    let (to_b, to_b1) = (
        SocketAddr::new(ip_b.into(), 8080),
        SocketAddr::new(ip_b1.into(), 8080),
    );

    // Default deny, across cells and on the same cell.
    wait("appa -> appb refused", || refused(fetch(&a, to_b)));
    assert!(refused(fetch(&a, to_b1)), "same cell is denied too");

    p.c2c(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    let took = wait("appa -> appb allowed", || fetch(&a, to_b).is_ok());
    eprintln!("policy add -> enforced across cells in {took:?}");
    assert!(fetch(&a, to_b).unwrap().starts_with("appb saw 10.255."));
    wait("appa -> appb same cell", || fetch(&a, to_b1).is_ok());
    assert!(refused(fetch(&c, to_b)), "appc has no policy");
    assert!(
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_err(),
        "udp not allowed yet"
    );

    // UDP and port ranges.
    p.c2c(&[
        "add-network-policy",
        "appa",
        "appb",
        "--protocol",
        "udp",
        "--port",
        "5000-5010",
    ]);
    wait("udp 5005 allowed", || {
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok()
    });

    // Removing the policy blocks again.
    p.c2c(&[
        "remove-network-policy",
        "appa",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    wait("appa -> appb refused again", || refused(fetch(&a, to_b)));

    // Rules flushed by hand come back on the resync.
    p.cells[1]
        .ns
        .exec("nft", &["flush", "chain", "ip", "c2c", "ingress"]);
    assert!(
        fetch(&c, to_b).is_ok(),
        "with the chain flushed nothing is enforced"
    );
    wait("flushed chain restored", || refused(fetch(&c, to_b)));

    // The agent stopping leaves enforcement in place; a new agent carries on.
    p.agents[1].stop();
    assert!(refused(fetch(&c, to_b)), "still denied with the agent down");
    assert!(
        ask_udp(&a, SocketAddr::new(ip_b.into(), 5005)).is_ok(),
        "still allowed with the agent down"
    );
    p.start_agent(2);
    p.c2c(&[
        "add-network-policy",
        "appc",
        "appb",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    wait("appc -> appb allowed by the restarted agent", || {
        fetch(&c, to_b).is_ok()
    });
    assert!(refused(fetch(&a, to_b)));
}
