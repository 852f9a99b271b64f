//! c2c-control: the platform's state and the `c2c` command line. So far: the `c2c certs`
//! commands (platform CA and per-instance certificates).
#![forbid(unsafe_code)]

pub mod api;
pub mod cell_cmd;
pub mod certs_cmd;
pub mod client;
pub mod layout;
pub mod platform;
pub mod policy_cmd;
pub mod serve_cmd;
pub mod state;
pub mod wire;
