//! `c2c certs ca init` and `c2c certs issue`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use c2c_certs::ca::LeafKey;
use c2c_certs::{Ca, LeafRequest, SanSet};
use clap::{Args, Subcommand, ValueEnum};

/// `c2c certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Manage the platform CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue a certificate for an app instance, signed by the platform CA.
    Issue(IssueArgs),
}

/// `c2c certs ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the platform CA: an ECDSA P-256 key (ca.key, mode 0600) and certificate (ca.pem),
    /// valid for ten years.
    Init {
        /// Directory to write ca.pem and ca.key into (created if missing)
        #[arg(long, value_name = "CA_DIR")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it issued stops being trusted)
        #[arg(long)]
        force: bool,
    },
}

/// Leaf key algorithm.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (fast handshakes)
    EcdsaP256,
    /// RSA 2048
    #[value(name = "rsa-2048")]
    Rsa2048,
}

/// `c2c certs issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Directory holding the CA (ca.pem, ca.key)
    #[arg(long, value_name = "CA_DIR")]
    pub ca_dir: PathBuf,
    /// Cert dir to write cert.pem (leaf, then CA) and key.pem (0600) into, atomically as a pair
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS name to certify, e.g. an internal route appb.apps.internal (repeatable)
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address to certify, e.g. the instance's overlay IP (repeatable)
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Subject CN [default: the first --dns name, else the first --ip]
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Validity from now; not_before is back-dated 5 minutes on top
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Key algorithm of the new leaf
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Let the certificate authenticate TLS clients too (clientAuth); by default it is a
    /// server certificate only
    #[arg(long)]
    pub client_auth: bool,
}

/// Runs a `c2c certs` command, printing what it did.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Ca(CaCommand::Init { dir, force }) => {
            Ca::init(&dir, force)?;
            println!(
                "created platform CA: {} and {} (mode 0600)",
                dir.join(c2c_certs::ca::CA_CERT_FILE).display(),
                dir.join(c2c_certs::ca::CA_KEY_FILE).display()
            );
            Ok(())
        }
        CertsCommand::Issue(args) => issue(args),
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let sans = SanSet::new(&args.dns, args.ips.iter().copied())?;
    if sans.is_empty() {
        anyhow::bail!("give at least one --dns NAME or --ip IP to certify");
    }
    let common_name = args
        .instance_id
        .clone()
        .or_else(|| sans.dns.iter().next().cloned())
        .or_else(|| sans.ips.iter().next().map(|ip| ip.to_string()))
        .unwrap_or_default();
    let ca = Ca::load(&args.ca_dir)?;
    let pair = ca.issue(&LeafRequest {
        common_name,
        sans,
        ttl: args.ttl,
        key: match args.key_type {
            KeyType::EcdsaP256 => LeafKey::EcdsaP256,
            KeyType::Rsa2048 => LeafKey::Rsa2048,
        },
        usage: if args.client_auth {
            c2c_certs::Usage::ServerAndClient
        } else {
            c2c_certs::Usage::Server
        },
    })?;
    c2c_certs::pair::write_pair(&args.out, pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
        .with_context(|| format!("writing cert dir {}", args.out.display()))?;
    // Describe the cert from the PEM in hand; no need to read back what was just written.
    let info = first_cert_info(pair.cert_pem.as_bytes())?;
    println!(
        "issued {} (serial {}) valid until {}\n  DNS: {}\n  IP:  {}",
        args.out.join(c2c_certs::pair::CERT_FILE).display(),
        info.serial_hex,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(info.not_after.max(0) as u64)
        ),
        info.sans.dns.iter().cloned().collect::<Vec<_>>().join(", "),
        info.sans
            .ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(())
}

fn first_cert_info(pem: &[u8]) -> anyhow::Result<c2c_certs::CertInfo> {
    let der = c2c_certs::info::first_der_from_pem(pem).context("reading issued certificate")?;
    Ok(c2c_certs::CertInfo::from_der(&der)?)
}
