//! c2c-shim: the data plane of a cell. So far: overlay address management ([`ipam`]) and the
//! CNI protocol types ([`cni`]).
//! The CNI plugin, netlink wiring and VXLAN/GBP come next (see the CNI issue).
#![forbid(unsafe_code)]

pub mod cni;
pub mod ipam;
