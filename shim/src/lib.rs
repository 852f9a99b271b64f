//! c2c-shim: the data plane of a cell: overlay address management ([`ipam`]), the CNI plugin
//! ([`cni`], [`plugin`]), container wiring over netlink ([`veth`]), the VXLAN overlay between
//! cells ([`vtep`]) and the container metadata store the cell agent reads ([`store`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod certsync;
pub mod cni;
pub mod control_link;
pub mod core;
pub mod dns;
pub mod flows;
pub mod hook;
pub mod inputs;
pub mod ipam;
pub mod metrics;
pub mod netlink;
pub mod netlog;
pub mod netns;
pub mod nflog;
pub mod plugin;
pub mod probe;
pub mod rules;
pub mod sidecars;
pub mod store;
pub mod veth;
pub mod vtep;
