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
    /// A deferred request waits at least until then.
    not_before: Option<Instant>,
}

impl KeyframeThrottle {
    /// Creates a throttle that lets one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_sent: None, pending: false, not_before: None }
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
                self.not_before = None;
                true
            }
        }
    }

    /// Records a request at `now` that must not be sent before
    /// `not_before`; returns true when it should be sent now.
    pub fn request_not_before(&mut self, now: Instant, not_before: Instant) -> bool {
        if now >= not_before {
            return self.request(now);
        }
        self.defer_until(not_before);
        false
    }

    /// Keeps a request waiting until at least `not_before`.
    pub fn defer_until(&mut self, not_before: Instant) {
        self.pending = true;
        self.not_before = Some(self.not_before.map_or(not_before, |known| known.max(not_before)));
    }

    /// When a deferred request becomes due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        let after_interval = self.last_sent.map(|last| last + self.interval);
        match (after_interval, self.not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Returns true when a deferred request is due at `now`, and sends it.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.last_sent = Some(now);
                self.pending = false;
                self.not_before = None;
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
    fn request_waits_for_not_before() {
        let start = Instant::now();
        let mut throttle = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(!throttle.request_not_before(start, start + Duration::from_millis(300)));
        assert_eq!(throttle.poll_timeout(), Some(start + Duration::from_millis(300)));
        assert!(!throttle.handle_timeout(start + Duration::from_millis(299)));
        assert!(throttle.handle_timeout(start + Duration::from_millis(300)));
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
