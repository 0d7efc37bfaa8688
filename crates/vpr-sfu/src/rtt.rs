//! Round-trip time from receiver report blocks (RFC 3550, section 6.4.1).
//!
//! A receiver echoes the middle 32 bits of the NTP time of the last sender
//! report it got (LSR) and how long it held it (DLSR, in 1/65536 s). The
//! round trip is the arrival time of the report, in the same compact NTP
//! form, minus both. The library stamps sender reports from the wall clock,
//! so arrivals are read from the wall clock too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Round trips longer than this are taken as a stale or corrupt echo.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(60);

/// Returns the middle 32 bits of the 64-bit NTP timestamp of `time`: 16 bits of
/// seconds and 16 bits of fraction.
pub fn compact_ntp(time: SystemTime) -> u32 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS);
    let fraction = (u64::from(since_unix.subsec_nanos()) << 16) / 1_000_000_000;
    ((seconds as u32) << 16) | (fraction as u32 & 0xffff)
}

/// Computes the round-trip time for a report block that arrived at `arrival` (compact
/// NTP) echoing `last_sender_report` after `delay_since_last` units of
/// 1/65536 s. `None` when the receiver has seen no sender report yet
/// (LSR 0) or when the echo would put the round trip below zero or above
/// a minute.
pub fn round_trip(arrival: u32, last_sender_report: u32, delay_since_last: u32) -> Option<Duration> {
    if last_sender_report == 0 {
        return None;
    }
    let units = arrival.wrapping_sub(last_sender_report).checked_sub(delay_since_last)?;
    let rtt = Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536);
    (rtt <= MAX_ROUND_TRIP).then_some(rtt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(duration: Duration) -> u32 {
        (duration.as_nanos() * 65_536 / 1_000_000_000) as u32
    }

    #[test]
    fn compact_ntp_at_unix_epoch() {
        assert_eq!(compact_ntp(UNIX_EPOCH), ((NTP_UNIX_OFFSET_SECS as u32) << 16));
        let half = UNIX_EPOCH + Duration::from_millis(500);
        assert_eq!(compact_ntp(half) & 0xffff, 0x8000);
    }

    #[test]
    fn round_trip_subtracts_the_receiver_hold_time() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lsr = compact_ntp(sent);
        let arrival = compact_ntp(sent + Duration::from_millis(130));
        let rtt = round_trip(arrival, lsr, units(Duration::from_millis(50))).expect("rtt");
        let ms = rtt.as_secs_f64() * 1000.0;
        assert!((ms - 80.0).abs() < 0.1, "rtt {ms} ms");
    }

    #[test]
    fn round_trip_survives_the_16_bit_seconds_wrap() {
        let lsr: u32 = 0xffff_f000;
        let arrival = lsr.wrapping_add(units(Duration::from_millis(100)));
        let rtt = round_trip(arrival, lsr, 0).expect("rtt");
        assert_eq!(rtt.as_millis(), 99);
    }

    #[test]
    fn round_trip_rejects_missing_or_bad_echo() {
        assert_eq!(round_trip(12_345, 0, 0), None);
        // The receiver claims to have held the report longer than it existed.
        assert_eq!(round_trip(1_000, 900, 200), None);
        // An echo from hours ago.
        assert_eq!(round_trip(0x1000_0000, 0x0100_0000, 0), None);
    }
}
