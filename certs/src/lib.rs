//! c2c-certs: the platform CA, per-instance certificates whose SANs are an app's internal routes,
//! atomic writes of a cert/key pair into a container's cert directory, and the rotation policy
//! ("does this cert need re-issuing").
//!
//! Decisions are plain functions ([`rotation::needs_reissue`], [`names::validate_hostname`]);
//! file and crypto work sits in [`ca`] and [`pair`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod ca;
pub mod identity;
pub mod info;
pub mod names;
pub mod pair;
pub mod pki;
pub mod rotation;

/// The one crypto provider of the platform (aws-lc-rs), for every rustls config that is not
/// `c2c-api`'s client (which does not depend on this crate and names the same provider).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub use ca::{Ca, CaError, IssuedPair, LeafRequest, Usage};
pub use identity::Identity;
pub use info::{CertInfo, InfoError};
pub use names::{validate_hostname, NameError, SanSet};
pub use pair::{LoadedPair, PairError};
pub use pki::{Pki, Role};
pub use rotation::{needs_reissue, ReissueReason};
