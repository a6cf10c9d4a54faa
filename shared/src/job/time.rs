//! Timestamps as milliseconds since the Unix epoch: cheap to compare and
//! store in every backend, shown as RFC 3339 (`2026-11-27T10:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

/// The current wall-clock time.
pub fn now_ms() -> Millis {
    Millis(Utc::now().timestamp_millis())
}

/// The current wall-clock time in microseconds (rate-limit state).
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// A duration in whole milliseconds, saturating at `i64::MAX`: the one
/// conversion every backend uses for leases, delays and expiries.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in whole microseconds, saturating at `i64::MAX` (rate-limit
/// arithmetic keeps microseconds so that `1000/s` stays exact).
pub fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Millis {
    /// As a chrono time, for formatting.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// RFC 3339 with milliseconds and `Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Millis(t.timestamp_millis()))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_with_millis() {
        let t = Millis(1_795_773_600_123);
        assert_eq!(t.to_rfc3339(), "2026-11-27T10:00:00.123Z");
        let back: Millis = serde_json::from_str(&serde_json::to_string(&t).unwrap_or_default())
            .unwrap_or(Millis(0));
        assert_eq!(back, t);
    }
}
