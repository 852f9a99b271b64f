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
    // The platform's CA back-dates not_before (clock skew): the life it was issued for starts
    // that much later, or a short-lived certificate (a 30 s identity, back-dated 5 minutes)
    // would look two-thirds gone when it is issued, and be re-issued on every pass.
    let issued = (current.not_before + crate::ca::BACKDATE.as_secs() as i64).min(current.not_after);
    let rotate_at = issued + (current.not_after - issued) * 2 / 3;
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
    fn a_short_life_is_not_eaten_by_the_back_dating() {
        // A 30 s identity issued at 1000: not_before 700, not_after 1030; renewed at 1020.
        let c = info(&["i"], 700, 1030);
        assert_eq!(needs_reissue(&c, &c.sans.clone(), 1001), None);
        assert_eq!(needs_reissue(&c, &c.sans.clone(), 1019), None);
        assert_eq!(
            needs_reissue(&c, &c.sans.clone(), 1020),
            Some(ReissueReason::Aging)
        );
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
        // Issued at 300 (not_before back-dated by 5 minutes) for 2700 s: 2/3 is at 2100.
        let c = info(&["a.apps.internal"], 0, 3000);
        assert_eq!(needs_reissue(&c, &c.sans.clone(), 2099), None);
        assert_eq!(
            needs_reissue(&c, &c.sans.clone(), 2100),
            Some(ReissueReason::Aging)
        );
        assert_eq!(
            needs_reissue(&c, &c.sans.clone(), 5000),
            Some(ReissueReason::Aging)
        );
    }
}
