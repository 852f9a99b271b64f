//! c2c-control: the control plane's server: the platform state (SQLite), the external API
//! (Cloud Foundry's policy server v1 shapes, apps, routes, placement, cells) and the cell API
//! (leases, instance confirmation, certificate signing, the watch), and `control serve`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admission;
pub mod api;
mod asg_api;
pub mod asg_state;
mod auth;
mod authz;
pub mod budgets;
mod cell_api;
mod cells;
pub mod cf;
pub mod cf_api;
pub mod console;
mod ctx;
pub mod db;
pub mod error;
mod expiry;
mod flows;
mod http;
pub mod join;
pub mod journal;
pub mod metrics;
pub mod metrics_http;
pub mod migrate;
pub mod pg_tls;
mod placement;
mod placement_api;
mod platform_api;
pub mod platform_claim;
mod quotas;
pub mod replicas;
pub mod routes;
mod schema;
pub mod serve_cmd;
pub mod state;
mod streams;
pub mod tokens;
pub mod views;
pub mod watch_stream;
