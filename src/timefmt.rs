//! Time helpers shared by the store, the CLI output and the stand-in services.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats a time as RFC 3339 in UTC, the form the CLI itself writes.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Formats a time as RFC 3339 in UTC with whole seconds, for people.
pub fn rfc3339_seconds(at: OffsetDateTime) -> String {
    rfc3339(at.replace_nanosecond(0).unwrap_or(at))
}

/// "in 52m", "3h 5m ago": a short human distance from `now` to `at`.
pub fn relative(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let delta = at - now;
    let seconds = delta.whole_seconds().unsigned_abs();
    let text = if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 86_400 {
        format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60)
    } else {
        format!("{}d {}h", seconds / 86_400, (seconds % 86_400) / 3600)
    };
    if delta.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc() {
        assert_eq!(
            rfc3339(datetime!(2026-11-22 10:00:00 +02:00)),
            "2026-11-22T08:00:00Z"
        );
        assert_eq!(
            rfc3339_seconds(datetime!(2026-11-22 10:00:00.123 UTC)),
            "2026-11-22T10:00:00Z"
        );
    }

    #[test]
    fn relative_distances() {
        let now = datetime!(2026-11-22 10:00:00 UTC);
        assert_eq!(relative(datetime!(2026-11-22 10:52:10 UTC), now), "in 52m");
        assert_eq!(
            relative(datetime!(2026-11-22 06:55:00 UTC), now),
            "3h 5m ago"
        );
        assert_eq!(
            relative(datetime!(2026-11-24 11:00:00 UTC), now),
            "in 2d 1h"
        );
        assert_eq!(relative(datetime!(2026-11-22 09:59:30 UTC), now), "30s ago");
    }
}
