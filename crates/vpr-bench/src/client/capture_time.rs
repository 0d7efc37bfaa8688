//! The absolute capture time RTP header extension
//! (`http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time`): the
//! publisher stamps each frame's first packet with its wall-clock capture
//! time, and a receiver on the same machine measures end-to-end delay from
//! it. The value is a 64-bit NTP timestamp, 32.32 fixed point seconds since
//! 1900.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Extension URI as negotiated in `a=extmap`.
pub const ABS_CAPTURE_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Encodes `at` as the extension's 8-byte payload.
pub fn encode(at: SystemTime) -> Bytes {
    let since_unix = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_S;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    Bytes::copy_from_slice(&((seconds << 32) | fraction).to_be_bytes())
}

/// Decodes the capture time from an extension payload (8 bytes, or 16 with
/// the optional clock offset). Returns `None` for a malformed payload.
pub fn decode(payload: &[u8]) -> Option<SystemTime> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let ntp = u64::from_be_bytes(bytes);
    let seconds = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_S)?;
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    Some(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

/// Returns the extension id an SDP description gives `uri`, if any.
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, rest) = rest.split_once(' ')?;
        let id = id.split('/').next()?;
        (rest.split_whitespace().next() == Some(uri)).then(|| id.parse().ok()).flatten()
    })
}

/// Width of one histogram bucket.
const BUCKET_US: u64 = 100;
/// Buckets up to 100 ms; slower frames land in the last one.
const BUCKETS: usize = 1001;

/// End-to-end delays in 0.1 ms buckets up to 100 ms: cheap to record per
/// frame, to copy in a stats snapshot and to merge across subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS], count: 0, max_us: 0 }
    }
}

impl DelayHistogram {
    /// Records one delay.
    pub fn record(&mut self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(micros / BUCKET_US).unwrap_or(BUCKETS - 1).min(BUCKETS - 1);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(micros);
    }

    /// Adds every delay of `other`.
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Returns the number of delays recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the largest delay recorded, in ms.
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }

    /// Returns the `percent`-th percentile in ms, as the upper edge of its
    /// bucket (nearest rank); `None` when nothing was recorded.
    pub fn percentile_ms(&self, percent: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((percent / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                if index == BUCKETS - 1 {
                    return Some(self.max_ms());
                }
                let upper_us = (index as u64 + 1) * BUCKET_US;
                return Some(upper_us.min(self.max_us.max(BUCKET_US)) as f64 / 1000.0);
            }
        }
        Some(self.max_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_time_round_trips_to_a_microsecond() {
        let at = UNIX_EPOCH + Duration::new(1_796_400_000, 123_456_789);
        let decoded = decode(&encode(at)).expect("decodes");
        let error = decoded.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(error < Duration::from_micros(1), "error {error:?}");
    }

    #[test]
    fn histogram_percentiles_and_merge() {
        let mut histogram = DelayHistogram::default();
        assert_eq!(histogram.percentile_ms(50.0), None);
        for micros in [250, 450, 950, 1_950] {
            histogram.record(Duration::from_micros(micros));
        }
        let mut other = DelayHistogram::default();
        other.record(Duration::from_millis(250));
        histogram.merge(&other);
        assert_eq!(histogram.count(), 5);
        assert_eq!(histogram.percentile_ms(50.0), Some(1.0));
        assert_eq!(histogram.percentile_ms(80.0), Some(2.0));
        assert_eq!(histogram.percentile_ms(100.0), Some(250.0), "beyond 100 ms the maximum is reported");
        assert_eq!(histogram.max_ms(), 250.0);
    }

    #[test]
    fn short_payload_is_rejected() {
        assert_eq!(decode(&[0; 7]), None);
    }

    #[test]
    fn extmap_id_is_found_by_uri() {
        let sdp = "v=0\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   a=extmap:7/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n";
        assert_eq!(extmap_id(sdp, ABS_CAPTURE_TIME_URI), Some(7));
        assert_eq!(extmap_id(sdp, "urn:missing"), None);
    }
}
