//! Rate limit for keyframe requests sent upstream to a publisher.
//!
//! Every subscriber's PLI or FIR for one source becomes at most one request
//! per interval. A request that arrives inside the interval is not lost: it
//! is sent when the interval ends, so a late subscriber still gets its
//! keyframe.
//!
//! A simulcast publisher's encoder may ignore a request for one layer that
//! follows a request for another layer too closely: Chromium ignored one
//! sent 270–290 ms after the previous one. [`KeyframeRequests`] sends such
//! a request at once anyway, for publishers that honour it, and repeats it
//! when the encoder's interval has passed.

use std::time::{Duration, Instant};

use crate::simulcast::LayerIndex;

/// How long after a keyframe request a publisher's encoder may ignore the
/// next one, for any layer of the same track. An estimate: Chromium
/// ignored requests 270–290 ms apart and honoured them 500 ms apart.
pub const ENCODER_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// A repeat goes out this long after the request the encoder acted on, so
/// that it arrives after the encoder's interval despite network jitter. One
/// sent exactly 300 ms after was ignored too.
const REPEAT_AFTER: Duration = Duration::from_millis(350);

/// Keyframe requests for the layers of one published track.
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    interval: Duration,
    throttles: Vec<KeyframeThrottle>,
    /// Time of the last request the encoder acted on.
    acted_on_at: Option<Instant>,
}

impl KeyframeRequests {
    /// Creates requests with one throttle of `interval` per layer.
    pub fn new(interval: Duration) -> Self {
        Self { interval, throttles: Vec::new(), acted_on_at: None }
    }

    /// Gives every layer up to `count` a throttle.
    pub fn cover_layers(&mut self, count: usize) {
        while self.throttles.len() < count {
            self.throttles.push(KeyframeThrottle::new(self.interval));
        }
    }

    /// Records a request for `layer` at `now`; returns true when it should
    /// be sent now.
    pub fn request(&mut self, layer: LayerIndex, now: Instant) -> bool {
        let Some(throttle) = self.throttles.get_mut(layer) else { return false };
        if !throttle.request(now) {
            return false;
        }
        self.note_sent(layer, now);
        true
    }

    /// Returns the layers whose deferred or repeated request is due at
    /// `now`, and records them as sent.
    pub fn due(&mut self, now: Instant) -> Vec<LayerIndex> {
        let due: Vec<LayerIndex> =
            (0..self.throttles.len()).filter(|&layer| self.throttles[layer].handle_timeout(now)).collect();
        for &layer in &due {
            self.note_sent(layer, now);
        }
        due
    }

    /// Cancels the repeat scheduled for `layer`, whose keyframe arrived.
    pub fn keyframe_arrived(&mut self, layer: LayerIndex) {
        if let Some(throttle) = self.throttles.get_mut(layer) {
            throttle.repeat_at = None;
        }
    }

    fn note_sent(&mut self, layer: LayerIndex, now: Instant) {
        match self.acted_on_at {
            Some(at) if now.saturating_duration_since(at) < ENCODER_REQUEST_INTERVAL => {
                self.throttles[layer].schedule_repeat(at + REPEAT_AFTER);
            }
            _ => self.acted_on_at = Some(now),
        }
    }
}

/// Keyframe-request throttle for one source SSRC.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
    /// Time to send the last request again, because the publisher was
    /// likely to ignore it.
    repeat_at: Option<Instant>,
}

impl KeyframeThrottle {
    /// Creates a throttle that lets one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_sent: None, pending: false, repeat_at: None }
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

    /// Sends the last request again at `at`, whatever the interval.
    pub fn schedule_repeat(&mut self, at: Instant) {
        self.repeat_at = Some(at);
    }

    /// Returns when a deferred or repeated request becomes due, if one is
    /// waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deferred = self.last_sent.filter(|_| self.pending).map(|last| last + self.interval);
        match (deferred, self.repeat_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Returns true when a deferred or repeated request is due at `now`,
    /// and sends it.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.last_sent = Some(now);
                self.pending = false;
                self.repeat_at = None;
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

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn close_request_for_another_layer_is_repeated() {
        let start = Instant::now();
        let mut requests = KeyframeRequests::new(Duration::from_millis(500));
        requests.cover_layers(3);
        assert!(requests.request(2, start));
        // 260 ms later the encoder may ignore a request for layer 0: it goes
        // out now and again once the encoder's interval has passed.
        assert!(requests.request(0, ms(start, 260)));
        assert!(requests.due(ms(start, 349)).is_empty());
        assert_eq!(requests.due(ms(start, 350)), vec![0]);
        assert!(requests.due(ms(start, 400)).is_empty(), "one repeat only");
    }

    #[test]
    fn keyframe_cancels_the_repeat() {
        let start = Instant::now();
        let mut requests = KeyframeRequests::new(Duration::from_millis(500));
        requests.cover_layers(2);
        assert!(requests.request(1, start));
        assert!(requests.request(0, ms(start, 200)));
        requests.keyframe_arrived(0);
        assert!(requests.due(ms(start, 350)).is_empty());
    }

    #[test]
    fn spaced_requests_are_not_repeated() {
        let start = Instant::now();
        let mut requests = KeyframeRequests::new(Duration::from_millis(500));
        requests.cover_layers(2);
        assert!(requests.request(1, start));
        assert!(requests.request(0, ms(start, 350)));
        assert!(requests.due(ms(start, 2_000)).is_empty());
    }

    #[test]
    fn repeat_counts_as_acted_on() {
        let start = Instant::now();
        let mut requests = KeyframeRequests::new(Duration::from_millis(500));
        requests.cover_layers(3);
        assert!(requests.request(2, start));
        assert!(requests.request(0, ms(start, 100)));
        assert_eq!(requests.due(ms(start, 350)), vec![0]);
        // The repeat at 350 ms restarts the encoder's interval.
        assert!(requests.request(1, ms(start, 500)));
        assert_eq!(requests.due(ms(start, 700)), vec![1]);
    }

    #[test]
    fn unknown_layer_is_not_requested() {
        let mut requests = KeyframeRequests::new(Duration::from_millis(500));
        requests.cover_layers(1);
        assert!(!requests.request(3, Instant::now()));
    }
}
