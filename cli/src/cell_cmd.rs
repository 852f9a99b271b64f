//! `c2c cell register|remove` and `c2c cells`: the registry of cells control accepts on its
//! cell API.

use std::path::Path;

use anyhow::Result;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Registers cell `name`, writing its identity into `out` (see
/// [`c2c_platform::cells::register`]).
pub fn register(state_dir: &Path, name: &str, out: &Path) -> Result<()> {
    c2c_platform::cells::register(state_dir, name, out)
}

/// Revokes cell `name`: control refuses its certificate, frees its lease and removes its
/// instances; the other cells drop their routes to it.
pub fn remove(state_dir: &Path, name: &str) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    runtime()?.block_on(client.remove_cell(name))?;
    Ok(())
}

/// Lists registered cells with their leases.
pub fn list(state_dir: &Path) -> Result<()> {
    let client = c2c_platform::client(state_dir)?;
    let cells = runtime()?.block_on(client.cells())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    println!(
        "{:<16} {:<18} {:<16} {:>13} {:>9}   state",
        "name", "subnet", "underlay", "last renewal", "instances"
    );
    for c in cells {
        let (subnet, underlay, renewed) = match &c.lease {
            Some(l) => (
                l.subnet.to_string(),
                l.underlay_ip.to_string(),
                format!("{}s ago", (now - l.renewed_at).max(0)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let state = match (&c.lease, c.healthy) {
            (Some(_), true) => "healthy",
            (Some(_), false) => "not renewing",
            (None, _) => "no lease",
        };
        println!(
            "{:<16} {:<18} {:<16} {:>13} {:>9}   {state}",
            c.name, subnet, underlay, renewed, c.instances
        );
    }
    Ok(())
}

/// The prefix of a join token: `c2cjoin.<secret>.<sha256 of the control issuer>`.
const JOIN_PREFIX: &str = "c2cjoin";

/// `c2c cell token create`: prints a join token.
pub fn create_join_token(state_dir: &Path, ttl: std::time::Duration) -> Result<()> {
    use anyhow::Context;
    let client = c2c_platform::client(state_dir)?;
    let made = runtime()?.block_on(client.create_join_token(ttl))?;
    let issuer = c2c_api::layout::Layout::new(state_dir).control_issuer();
    let pem = std::fs::read(&issuer).with_context(|| format!("reading {}", issuer.display()))?;
    let der = c2c_certs::info::first_der_from_pem(&pem)?;
    eprintln!(
        "Join token for one cell, valid for {} (on the new host: c2c cell join --control {} --token <token> --name NAME --underlay-ip IP):",
        humantime::format_duration(ttl),
        client.url()
    );
    println!(
        "{JOIN_PREFIX}.{}.{}",
        made.secret,
        c2c_api::pin::sha256_hex(&der)
    );
    Ok(())
}

/// `c2c cell join` arguments.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// Control's URL, or several replicas' URLs separated by commas.
    #[arg(long)]
    pub control: String,
    /// The token from `c2c cell token create`.
    #[arg(long, env = "C2C_JOIN_TOKEN")]
    pub token: String,
    /// This cell's name: 1-63 lower-case letters, digits or '-'.
    #[arg(long)]
    pub name: String,
    /// This host's underlay address (the VTEP's local address; some interface must hold it).
    #[arg(long)]
    pub underlay_ip: std::net::Ipv4Addr,
    /// Where to write the cell's identity (cert.pem, key.pem, control-ca.pem) and agent.env.
    #[arg(long, default_value = "/var/lib/c2c/cell/tls")]
    pub out: std::path::PathBuf,
}

/// `c2c cell join`.
pub fn join(a: &JoinArgs) -> Result<()> {
    use anyhow::{bail, Context};
    let name: c2c_api::CellName = a.name.parse().map_err(anyhow::Error::msg)?;
    let parts: Vec<&str> = a.token.trim().split('.').collect();
    let [JOIN_PREFIX, secret, pin] = parts.as_slice() else {
        bail!("--token: expected {JOIN_PREFIX}.<secret>.<fingerprint>, as `c2c cell token create` prints it");
    };
    if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--token: the fingerprint part must be 64 hex digits");
    }
    let client = c2c_api::client::Client::pinned(&a.control, pin)?;
    let (key_pem, csr) = c2c_certs::ca::new_key_and_csr()?;
    let joined = runtime()?
        .block_on(client.join(&c2c_api::types::JoinRequest {
            secret: secret.to_string(),
            name: name.to_string(),
            csr,
        }))
        .context("joining")?;
    // What control handed over must be the CA the token pins (it is what the TLS session was
    // verified against): the agent trusts exactly that from now on.
    let der = c2c_certs::info::first_der_from_pem(joined.control_ca_pem.as_bytes())?;
    if c2c_api::pin::sha256_hex(&der) != pin.to_ascii_lowercase() {
        bail!("control handed over a CA other than the one the token pins; refusing it");
    }
    c2c_certs::pair::write_pair(&a.out, joined.cert_pem.as_bytes(), key_pem.as_bytes())
        .with_context(|| format!("writing {}", a.out.display()))?;
    let ca = a.out.join(c2c_platform::cells::CONTROL_CA_FILE);
    c2c_certs::pair::write_file_atomic(&ca, joined.control_ca_pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", ca.display()))?;
    let env = format!(
        "# c2c-agent settings written by `c2c cell join` (a systemd EnvironmentFile)\nC2C_CELL={name}\nC2C_UNDERLAY_IP={}\nC2C_CONTROL_URL={}\nC2C_CONTROL_CA={}\nC2C_CERT_DIR={}\n",
        a.underlay_ip,
        a.control,
        ca.display(),
        a.out.display()
    );
    let env_file = a.out.join("agent.env");
    c2c_certs::pair::write_file_atomic(&env_file, env.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", env_file.display()))?;
    println!(
        "Joined as cell {name}: identity in {}, agent settings in {}",
        a.out.display(),
        env_file.display()
    );
    Ok(())
}
