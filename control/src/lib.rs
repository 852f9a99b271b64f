//! c2c-control: the platform's state and the `c2c` command line. So far: the `c2c certs`
//! commands (platform CA and per-instance certificates).
#![forbid(unsafe_code)]

pub mod certs_cmd;
pub mod state;
pub mod wire;
