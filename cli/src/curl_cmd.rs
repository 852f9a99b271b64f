//! `c2c curl`: a raw request to control's API, as `cf curl`.

use std::path::Path;

use anyhow::{Context, Result};
use c2c_api::client::Method;
use clap::Args;

use crate::common::with_client;

/// `curl` arguments (the cf CLI's).
#[derive(Debug, Args)]
#[command(
    after_help = "By default 'c2c curl' performs a GET to PATH. With -d it performs a POST \
and sets Content-Type to application/json. -H overrides headers, -X the method.

Examples:
  c2c curl /networking/v1/external/policies
  c2c curl /v1/apps -d '{\"name\": \"appc\"}'
  c2c curl /networking/v1/external/policies/delete -d @policies.json"
)]
pub struct CurlArgs {
    /// API path, e.g. /networking/v1/external/policies.
    pub path: String,
    /// HTTP method (GET, POST, PUT, DELETE, etc.).
    #[arg(short = 'X')]
    pub method: Option<String>,
    /// Custom headers to include in the request; repeatable.
    #[arg(short = 'H')]
    pub headers: Vec<String>,
    /// HTTP data to include in the request body, or '@' followed by a file name to read it from.
    #[arg(short = 'd')]
    pub data: Option<String>,
    /// Server errors return exit code 22.
    #[arg(short = 'f', long = "fail")]
    pub fail: bool,
    /// Include response headers in the output.
    #[arg(short = 'i')]
    pub include: bool,
    /// Write the body to FILE instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

/// What `c2c curl` ends with: exit code 22 for an HTTP error under `--fail`, as cf's.
#[derive(Debug)]
pub struct CurlFailed(pub u16);

impl std::fmt::Display for CurlFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "The requested URL returned error: {}", self.0)
    }
}

impl std::error::Error for CurlFailed {}

/// `c2c curl PATH [-X METHOD] [-H HEADER]... [-d DATA] [-i] [--fail] [--output FILE]`, as
/// `cf curl`: the body as the API sent it; an HTTP error is not a failure unless `--fail`.
pub fn curl(dir: &Path, a: CurlArgs) -> Result<()> {
    let body = match a.data.as_deref() {
        Some(d) => {
            // cf trims quotes around the data and around an @file name.
            let trimmed = d.trim_matches(['"', '\'']);
            match trimmed.strip_prefix('@') {
                Some(file) => {
                    let file = file.trim_matches(['"', '\'']);
                    std::fs::read(file).with_context(|| format!("-d @{file}: reading {file}"))?
                }
                None => d.as_bytes().to_vec(),
            }
        }
        None => vec![],
    };
    let method = match (&a.method, &a.data) {
        (Some(m), _) => m.to_ascii_uppercase(),
        (None, Some(_)) => "POST".into(),
        (None, None) => "GET".into(),
    };
    let method = Method::from_bytes(method.as_bytes()).with_context(|| format!("-X {method}"))?;
    let mut headers = vec![];
    if a.data.is_some() {
        headers.push(("content-type".to_string(), "application/json".to_string()));
    }
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("-H {h:?}: expected 'Name: value'"))?;
        headers.retain(|(old, _)| !old.eq_ignore_ascii_case(k.trim()));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let path = format!("/{}", a.path.trim_start_matches('/'));
    with_client(dir, async |c| {
        let (status, resp_headers, raw) = c
            .raw(method, &path, &headers, c2c_api::client::Bytes::from(body))
            .await?;
        if a.fail && (status.is_client_error() || status.is_server_error()) {
            return Err(CurlFailed(status.as_u16()).into());
        }
        let mut out = vec![];
        if a.include {
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .as_bytes(),
            );
            for (k, v) in &resp_headers {
                out.extend_from_slice(format!("{k}: ").as_bytes());
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&raw);
        match &a.output {
            Some(f) => {
                std::fs::write(f, &out).with_context(|| format!("--output {}", f.display()))?;
                println!("OK");
            }
            None => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out)?;
                if !out.ends_with(b"\n") {
                    stdout.write_all(b"\n")?;
                }
            }
        }
        Ok(())
    })
}
