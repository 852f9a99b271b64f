//! Helpers for the end-to-end tests: where the workspace's binaries are ([`bin`]) and network
//! namespace topologies that clean up after themselves ([`topo`]).
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod benchkit;
pub mod chaos;
pub mod cli;
pub mod packets;
pub mod podman;
pub mod testbed;
pub mod topo;

/// The path of a binary of this workspace, built by the same `cargo test --workspace` run
/// (cargo builds a package's binaries whenever it has integration tests, as proxy/ and
/// control/ do).
pub fn bin(name: &str) -> PathBuf {
    // A benchmark's A/B runs another build's binaries (`C2C_BIN_DIR`) in the same run.
    if let Some(dir) = std::env::var_os("C2C_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build --workspace --bins`)",
        path.display()
    );
    path
}
