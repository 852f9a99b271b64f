//! How the console words a certificate's expiry.

/// When a certificate control signed expires, from `now` (Unix seconds): `in 23 h 59 min`,
/// `expired 5 min ago` (marked), or `not signed yet`.
pub(crate) fn expires_in(at: Option<i64>, now: i64) -> String {
    let Some(at) = at else {
        return "not signed yet".into();
    };
    let span = |s: i64| {
        let m = s / 60;
        match (m / 1440, m / 60 % 24, m % 60) {
            (0, 0, m) => format!("{m} min"),
            (0, h, m) => format!("{h} h {m} min"),
            (d, h, _) => format!("{d} d {h} h"),
        }
    };
    if at <= now {
        format!("<span class=bad>expired {} ago</span>", span(now - at))
    } else {
        format!("in {}", span(at - now))
    }
}

#[cfg(test)]
mod expiry_tests {
    /// The time left reads in the largest units that matter; a past expiry is marked.
    #[test]
    fn expiry_reads_as_time_left_or_marked_as_past() {
        let now = 1_000_000;
        assert_eq!(super::expires_in(None, now), "not signed yet");
        assert_eq!(super::expires_in(Some(now + 90), now), "in 1 min");
        assert_eq!(
            super::expires_in(Some(now + 3 * 3600 + 600), now),
            "in 3 h 10 min"
        );
        assert_eq!(super::expires_in(Some(now + 50 * 3600), now), "in 2 d 2 h");
        assert_eq!(
            super::expires_in(Some(now - 300), now),
            "<span class=bad>expired 5 min ago</span>"
        );
    }
}
