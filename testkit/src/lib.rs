//! c2c-testkit: what the tests of several crates share, kept out of the server library: the
//! state layer's conformance suite (every scenario on SQLite and PostgreSQL), a throwaway
//! PostgreSQL cluster, and the polling helpers tests wait with.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod pg_cluster;
pub mod wait;
