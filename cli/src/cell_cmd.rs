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
    println!("{:<16} {:<18} underlay", "name", "subnet");
    for c in cells {
        let (subnet, underlay) = match &c.lease {
            Some(l) => (l.subnet.to_string(), l.underlay_ip.to_string()),
            None => ("-".into(), "-".into()),
        };
        println!("{:<16} {:<18} {}", c.name, subnet, underlay);
    }
    Ok(())
}
