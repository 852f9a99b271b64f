//! Hostname validation (RFC 1123 labels) and the set of subject alternative names a cert carries.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Why a name cannot be used as a DNS SAN or internal route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("hostname is empty")]
    Empty,
    /// The whole name is longer than 253 characters.
    #[error("hostname {0:?} is longer than 253 characters")]
    TooLong(String),
    /// One label is empty or longer than 63 characters.
    #[error("hostname {0:?} has an empty label or a label longer than 63 characters")]
    BadLabelLength(String),
    /// A label holds a character other than a-z, 0-9 and '-', or starts or ends with '-'.
    #[error("hostname {0:?} is not valid: labels may hold only letters, digits and '-', and may not start or end with '-'")]
    BadCharacter(String),
}

/// Validates `name` as an RFC 1123 hostname and returns it lower-cased.
/// A single trailing dot is accepted and removed.
pub fn validate_hostname(name: &str) -> Result<String, NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > 253 {
        return Err(NameError::TooLong(name.to_string()));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(NameError::BadLabelLength(name.to_string()));
        }
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadCharacter(name.to_string()));
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// The subject alternative names of a certificate: DNS names (lower-cased) and IP addresses.
/// Ordered sets, so two certs for the same routes compare equal whatever the issuing order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanSet {
    /// DNS names, lower-cased.
    pub dns: BTreeSet<String>,
    /// IP addresses.
    pub ips: BTreeSet<IpAddr>,
}

impl SanSet {
    /// Builds a set from names (validated and lower-cased) and IPs.
    pub fn new<S: AsRef<str>>(
        dns: impl IntoIterator<Item = S>,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Self, NameError> {
        let dns = dns
            .into_iter()
            .map(|n| validate_hostname(n.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            dns,
            ips: ips.into_iter().collect(),
        })
    }

    /// True when the set holds no name and no address.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases_routes() {
        assert_eq!(
            validate_hostname("AppB.apps.internal").unwrap(),
            "appb.apps.internal"
        );
        assert_eq!(
            validate_hostname("0.appb.apps.internal.").unwrap(),
            "0.appb.apps.internal"
        );
        assert_eq!(validate_hostname("a-b1.x").unwrap(), "a-b1.x");
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_hostname(""), Err(NameError::Empty));
        assert!(matches!(
            validate_hostname("a..b"),
            Err(NameError::BadLabelLength(_))
        ));
        assert!(matches!(
            validate_hostname(&"a".repeat(64)),
            Err(NameError::BadLabelLength(_))
        ));
        assert!(matches!(
            validate_hostname("-a.b"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            validate_hostname("a_b.c"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            validate_hostname("*.apps.internal"),
            Err(NameError::BadCharacter(_))
        ));
        assert!(matches!(
            validate_hostname("a b"),
            Err(NameError::BadCharacter(_))
        ));
        let long = vec!["abcdefghij"; 25].join(".");
        assert!(matches!(
            validate_hostname(&long),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn san_sets_compare_regardless_of_order_and_case() {
        let a = SanSet::new(["b.apps.internal", "A.apps.internal"], []).unwrap();
        let b = SanSet::new(["a.apps.internal", "B.apps.internal"], []).unwrap();
        assert_eq!(a, b);
    }
}
