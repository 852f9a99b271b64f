//! What every command that talks to control shares: running a call on the state dir's
//! client, the token's user, app names by GUID, printing JSON and tables, and the usage
//! error found after parsing (exit 2).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use c2c_api::client::Client;

/// A usage error found after the arguments were read (flags that go together): exit 2, as the
/// argument parser's own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs `f` with the state dir's client on a current-thread runtime.
pub(crate) fn with_client<T>(dir: &Path, f: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
    let c = c2c_platform::client(dir)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f(&c))
}

/// The user the client's token speaks for.
pub(crate) async fn user(c: &Client) -> Result<String> {
    Ok(c.whoami().await?.who.subject)
}

/// App names by GUID.
pub(crate) async fn app_names(c: &Client) -> Result<HashMap<c2c_api::AppGuid, String>> {
    Ok(c.apps()
        .await?
        .into_iter()
        .map(|a| (a.guid, a.name))
        .collect())
}

/// `c2c network-policies [--source APP]`: cf's table (without its space and org columns:
/// Prints `v` as pretty JSON and a newline: what every `--json` prints.
pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}
