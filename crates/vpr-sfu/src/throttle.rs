//! Rate limit for keyframe requests sent upstream to a publisher.
//!
//! Every subscriber's PLI or FIR for one source becomes at most one request
//! per interval. A request that arrives inside the interval is not lost: it
//! is sent when the interval ends, so a late subscriber still gets its
//! keyframe.

use std::time::{Duration, Instant};

/// Keyframe-request throttle for one source SSRC.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// Creates a throttle that lets one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_sent: None, pending: false }
    }

    /// Records a request at `now`; returns true when it should be sent now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a deferred request becomes due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending {
            self.last_sent.map(|last| last + self.interval)
        } else {
            None
        }
    }

    /// Returns true when a deferred request is due at `now`, and sends it.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_inside_interval_are_merged() {
        let start = Instant::now();
        let mut throttle = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(throttle.request(start));
        assert!(!throttle.request(start + Duration::from_millis(100)));
        assert!(!throttle.request(start + Duration::from_millis(200)));
        assert_eq!(throttle.poll_timeout(), Some(start + Duration::from_millis(500)));
        assert!(!throttle.handle_timeout(start + Duration::from_millis(499)));
        assert!(throttle.handle_timeout(start + Duration::from_millis(500)));
        assert_eq!(throttle.poll_timeout(), None);
    }

    #[test]
    fn request_after_interval_passes() {
        let start = Instant::now();
        let mut throttle = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(throttle.request(start));
        assert!(throttle.request(start + Duration::from_millis(500)));
        assert_eq!(throttle.poll_timeout(), None);
    }
}
