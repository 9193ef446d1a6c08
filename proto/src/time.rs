//! Conversions between protobuf timestamps and `time::OffsetDateTime`.

use prost_types::Timestamp;
use time::OffsetDateTime;

/// A protobuf timestamp for an instant.
pub fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp { seconds: t.unix_timestamp(), nanos: i32::try_from(t.nanosecond()).unwrap_or(0) }
}

/// The instant of a protobuf timestamp; the epoch for an absent or out-of-range one.
pub fn from_timestamp(t: Option<&Timestamp>) -> OffsetDateTime {
    t.and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_nanoseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_767_225_600_123_456_789).unwrap();
        assert_eq!(from_timestamp(Some(&to_timestamp(t))), t);
        assert_eq!(from_timestamp(None), OffsetDateTime::UNIX_EPOCH);
    }
}
