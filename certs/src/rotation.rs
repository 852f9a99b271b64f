//! The rotation policy: when an instance's certificate must be issued again.

use crate::info::CertInfo;
use crate::names::SanSet;

/// Why a certificate needs re-issuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReissueReason {
    /// The SANs differ from the desired set (a route was mapped or unmapped, or the IP changed).
    SansChanged,
    /// Two thirds of the certificate's lifetime have passed (Diego and linkerd rotate at ~2/3).
    Aging,
}

/// Decides whether `current` must be replaced, given the SANs it should carry and the time now
/// (unix seconds). `None` means keep it.
pub fn needs_reissue(current: &CertInfo, desired: &SanSet, now_unix: i64) -> Option<ReissueReason> {
    if current.sans != *desired {
        return Some(ReissueReason::SansChanged);
    }
    let rotate_at = current.not_before + current.lifetime_secs() * 2 / 3;
    if now_unix >= rotate_at {
        return Some(ReissueReason::Aging);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str], not_before: i64, not_after: i64) -> CertInfo {
        CertInfo {
            common_name: None,
            sans: SanSet::new(names.iter().copied(), []).unwrap(),
            serial_hex: String::new(),
            not_before,
            not_after,
            sha256_hex: String::new(),
        }
    }

    #[test]
    fn same_sans_fresh_cert_is_kept() {
        let c = info(&["a.apps.internal"], 0, 3000);
        assert_eq!(needs_reissue(&c, &c.sans.clone(), 1999), None);
    }

    #[test]
    fn route_change_triggers_reissue() {
        let c = info(&["a.apps.internal"], 0, 3000);
        let more = SanSet::new(["a.apps.internal", "b.apps.internal"], []).unwrap();
        assert_eq!(
            needs_reissue(&c, &more, 10),
            Some(ReissueReason::SansChanged)
        );
        let fewer = SanSet::default();
        assert_eq!(
            needs_reissue(&c, &fewer, 10),
            Some(ReissueReason::SansChanged)
        );
    }

    #[test]
    fn two_thirds_of_life_triggers_reissue() {
        let c = info(&["a.apps.internal"], 0, 3000);
        assert_eq!(
            needs_reissue(&c, &c.sans.clone(), 2000),
            Some(ReissueReason::Aging)
        );
        assert_eq!(
            needs_reissue(&c, &c.sans.clone(), 5000),
            Some(ReissueReason::Aging)
        );
    }
}
