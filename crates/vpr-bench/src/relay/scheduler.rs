//! Sans-IO scheduler of one relay direction: decides for each datagram, from
//! its size and arrival time, whether it is dropped and when it is released.
//!
//! The steps, in order:
//! 1. Outage: every datagram is dropped.
//! 2. Random loss: one uniform draw per datagram against `loss`.
//! 3. Rate cap: a token bucket filled at `rate_kbps` and holding at most
//!    [`BUCKET_DEPTH_BYTES`]. A datagram leaves the bucket once the bytes of
//!    every earlier datagram and its own are paid for. Datagrams that would
//!    wait longer than the maximum queue delay (default
//!    [`DEFAULT_MAX_QUEUE_DELAY`]) are dropped (drop-tail), and they cost no
//!    tokens.
//! 4. Delay: `delay` plus a uniform draw in `0..=jitter`, so the one-way
//!    delay never falls below `delay` and averages `delay + jitter / 2`.
//!
//! Release times never decrease: a datagram whose jitter draw would put it
//! before the previous one is held until that one's release. The scheduler
//! therefore never reorders, and at packet intervals shorter than `jitter`
//! the delay distribution is skewed up from uniform.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::impairment::Impairment;

/// Token bucket depth: one full-size Ethernet datagram passes an idle link
/// without waiting.
pub const BUCKET_DEPTH_BYTES: f64 = 1500.0;

/// Default maximum time a datagram waits for tokens before it is dropped.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(200);

/// Reason a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The direction is in an outage.
    Outage,
    /// The random loss draw hit.
    Loss,
    /// The rate cap queue was full (drop-tail).
    QueueFull,
}

/// Decision on one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the datagram at this time.
    Release(Instant),
    /// Drop the datagram.
    Drop(DropReason),
}

/// Token bucket state; tokens are bytes and may go negative, which is the
/// backlog still to be paid for.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    updated_at: Instant,
}

/// Scheduler of one direction.
#[derive(Debug)]
pub struct Scheduler {
    impairment: Impairment,
    max_queue_delay: Duration,
    rng: StdRng,
    bucket: Option<TokenBucket>,
    last_release: Option<Instant>,
}

impl Scheduler {
    /// Creates a scheduler with `impairment` whose random draws come from a
    /// generator seeded with `seed`.
    ///
    /// NOTE: the same seed and inputs give the same verdicts with the same
    /// `rand` version; `StdRng` may change its algorithm between versions.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self {
            impairment,
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            rng: StdRng::seed_from_u64(seed),
            bucket: None,
            last_release: None,
        }
    }

    /// Sets the maximum wait for tokens before a datagram is dropped.
    pub fn with_max_queue_delay(mut self, max_queue_delay: Duration) -> Self {
        self.max_queue_delay = max_queue_delay;
        self
    }

    /// Returns the impairment in force.
    pub fn impairment(&self) -> Impairment {
        self.impairment
    }

    /// Replaces the impairment. Datagrams already scheduled keep their
    /// release times, and the token bucket keeps its backlog.
    pub fn set_impairment(&mut self, impairment: Impairment) {
        if impairment.rate_kbps.is_none() {
            self.bucket = None;
        }
        self.impairment = impairment;
    }

    /// Returns whether a datagram scheduled earlier may still be sent now:
    /// false during an outage, which also drops datagrams in flight.
    pub fn delivers(&self) -> bool {
        !self.impairment.outage
    }

    /// Decides the fate of a datagram of `datagram_len` bytes arriving at
    /// `arrival`. Arrival times must not decrease between calls.
    pub fn schedule(&mut self, arrival: Instant, datagram_len: usize) -> Verdict {
        if self.impairment.outage {
            return Verdict::Drop(DropReason::Outage);
        }

        // One draw per datagram, even at zero loss, keeps later draws
        // independent of the loss setting.
        let loss_draw: f64 = self.rng.random();
        if loss_draw < self.impairment.loss_probability() {
            return Verdict::Drop(DropReason::Loss);
        }

        let Some(leaves_bucket) = self.pass_rate_cap(arrival, datagram_len) else {
            return Verdict::Drop(DropReason::QueueFull);
        };

        let jitter = self.draw_jitter();
        let mut release = leaves_bucket + self.impairment.delay + jitter;
        if let Some(last_release) = self.last_release {
            release = release.max(last_release);
        }
        self.last_release = Some(release);
        Verdict::Release(release)
    }

    /// Returns when the datagram leaves the token bucket, or `None` if it
    /// would wait longer than the maximum queue delay.
    fn pass_rate_cap(&mut self, arrival: Instant, datagram_len: usize) -> Option<Instant> {
        let Some(rate_kbps) = self.impairment.rate_kbps else {
            return Some(arrival);
        };
        let bytes_per_second = f64::from(rate_kbps.max(1)) * 1000.0 / 8.0;

        let mut bucket = self.bucket.unwrap_or(TokenBucket {
            tokens: BUCKET_DEPTH_BYTES,
            updated_at: arrival,
        });
        let elapsed = arrival.saturating_duration_since(bucket.updated_at);
        bucket.tokens =
            (bucket.tokens + elapsed.as_secs_f64() * bytes_per_second).min(BUCKET_DEPTH_BYTES);
        bucket.updated_at = arrival.max(bucket.updated_at);

        let remaining = bucket.tokens - datagram_len as f64;
        let wait = if remaining >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-remaining / bytes_per_second)
        };
        if wait > self.max_queue_delay {
            self.bucket = Some(bucket);
            return None;
        }

        bucket.tokens = remaining;
        self.bucket = Some(bucket);
        Some(arrival + wait)
    }

    fn draw_jitter(&mut self) -> Duration {
        let jitter_nanos = u64::try_from(self.impairment.jitter.as_nanos()).unwrap_or(u64::MAX);
        if jitter_nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.random_range(0..=jitter_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 7;

    fn released(verdict: Verdict) -> Instant {
        match verdict {
            Verdict::Release(at) => at,
            Verdict::Drop(reason) => panic!("expected a release, got a drop: {reason:?}"),
        }
    }

    #[test]
    fn no_impairment_releases_at_arrival() {
        let mut scheduler = Scheduler::new(Impairment::none(), SEED);
        let start = Instant::now();
        for step in 0..100u64 {
            let arrival = start + Duration::from_millis(step);
            assert_eq!(scheduler.schedule(arrival, 1200), Verdict::Release(arrival));
        }
    }

    #[test]
    fn rate_cap_spaces_datagrams() {
        // 1000 bytes at 800 kbit/s take 10 ms.
        let mut scheduler = Scheduler::new(Impairment::none().with_rate_kbps(800), SEED);
        let start = Instant::now();
        let releases: Vec<Instant> = (0..10)
            .map(|_| released(scheduler.schedule(start, 1000)))
            .collect();

        // The full bucket (1500 bytes) lets the first datagram go at once
        // and pays half of the second.
        assert_eq!(releases[0], start);
        assert_eq!(releases[1], start + Duration::from_millis(5));
        for pair in releases[1..].windows(2) {
            let spacing = pair[1] - pair[0];
            let error = spacing.abs_diff(Duration::from_millis(10));
            assert!(error < Duration::from_micros(1), "spacing {spacing:?}");
        }
    }

    #[test]
    fn rate_cap_refills_when_idle() {
        let mut scheduler = Scheduler::new(Impairment::none().with_rate_kbps(800), SEED);
        let start = Instant::now();
        for _ in 0..5 {
            scheduler.schedule(start, 1000);
        }

        // After 1 s idle the backlog is paid and the bucket is full again.
        let later = start + Duration::from_secs(1);
        assert_eq!(scheduler.schedule(later, 1000), Verdict::Release(later));
    }

    #[test]
    fn rate_cap_drops_tail_beyond_queue_limit() {
        // At 80 kbit/s a 1000-byte datagram takes 100 ms, so a 200 ms queue
        // takes the bucket's 1500 bytes plus two more datagrams.
        let mut scheduler = Scheduler::new(Impairment::none().with_rate_kbps(80), SEED);
        let start = Instant::now();
        let verdicts: Vec<Verdict> = (0..6).map(|_| scheduler.schedule(start, 1000)).collect();

        assert_eq!(verdicts[0], Verdict::Release(start));
        assert_eq!(
            verdicts[1],
            Verdict::Release(start + Duration::from_millis(50))
        );
        assert_eq!(
            verdicts[2],
            Verdict::Release(start + Duration::from_millis(150))
        );
        assert_eq!(verdicts[3], Verdict::Drop(DropReason::QueueFull));
        assert_eq!(verdicts[4], Verdict::Drop(DropReason::QueueFull));

        // A dropped datagram costs no tokens: 100 ms later one more fits.
        let later = start + Duration::from_millis(100);
        assert_eq!(
            scheduler.schedule(later, 1000),
            Verdict::Release(start + Duration::from_millis(250))
        );
    }

    #[test]
    fn loss_fraction_matches_probability() {
        let mut scheduler = Scheduler::new(Impairment::none().with_loss(0.05), SEED);
        let start = Instant::now();
        let lost = (0..10_000u64)
            .map(|step| scheduler.schedule(start + Duration::from_micros(step * 100), 200))
            .filter(|verdict| *verdict == Verdict::Drop(DropReason::Loss))
            .count();

        // Binomial(10000, 0.05) has a standard deviation of about 22.
        assert!((420..=580).contains(&lost), "lost {lost} of 10000");
    }

    #[test]
    fn same_seed_gives_same_verdicts() {
        let impairment = Impairment::none()
            .with_loss(0.2)
            .with_jitter(Duration::from_millis(30));
        let start = Instant::now();
        let run = |seed| {
            let mut scheduler = Scheduler::new(impairment, seed);
            (0..500u64)
                .map(|step| scheduler.schedule(start + Duration::from_millis(step), 500))
                .collect::<Vec<_>>()
        };

        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn delay_is_added_to_every_datagram() {
        let delay = Duration::from_millis(60);
        let mut scheduler = Scheduler::new(Impairment::none().with_delay(delay), SEED);
        let start = Instant::now();
        for step in 0..50u64 {
            let arrival = start + Duration::from_millis(step * 20);
            assert_eq!(
                scheduler.schedule(arrival, 1200),
                Verdict::Release(arrival + delay)
            );
        }
    }

    #[test]
    fn jitter_stays_within_bounds_in_order() {
        let delay = Duration::from_millis(40);
        let jitter = Duration::from_millis(20);
        let impairment = Impairment::none().with_delay(delay).with_jitter(jitter);
        let mut scheduler = Scheduler::new(impairment, SEED);
        let start = Instant::now();

        // Datagrams 50 ms apart are further apart than the 20 ms jitter
        // range, so none waits for its predecessor.
        let mut total = Duration::ZERO;
        let mut previous = start;
        let count = 2_000u32;
        for step in 0..count {
            let arrival = start + Duration::from_millis(50) * step;
            let release = released(scheduler.schedule(arrival, 1200));
            let one_way = release - arrival;
            assert!(one_way >= delay, "delay {one_way:?} below {delay:?}");
            assert!(one_way <= delay + jitter, "delay {one_way:?} above bound");
            assert!(release >= previous, "datagram {step} released out of order");
            previous = release;
            total += one_way;
        }
        let mean = total / count;
        let expected_mean = delay + jitter / 2;
        assert!(
            mean.abs_diff(expected_mean) < Duration::from_millis(1),
            "mean delay {mean:?}, expected about {expected_mean:?}"
        );
    }

    #[test]
    fn jitter_never_reorders_dense_traffic() {
        let impairment = Impairment::none()
            .with_delay(Duration::from_millis(10))
            .with_jitter(Duration::from_millis(50));
        let mut scheduler = Scheduler::new(impairment, SEED);
        let start = Instant::now();
        let mut previous = start;
        for step in 0..1_000u64 {
            let release = released(scheduler.schedule(start + Duration::from_millis(step), 100));
            assert!(release >= previous, "datagram {step} released out of order");
            previous = release;
        }
    }

    #[test]
    fn outage_drops_everything_until_cleared() {
        let mut scheduler = Scheduler::new(Impairment::none(), SEED);
        let start = Instant::now();
        scheduler.set_impairment(Impairment {
            outage: true,
            ..Impairment::none()
        });
        for step in 0..100u64 {
            let arrival = start + Duration::from_millis(step);
            assert_eq!(
                scheduler.schedule(arrival, 1200),
                Verdict::Drop(DropReason::Outage)
            );
        }
        assert!(!scheduler.delivers());

        scheduler.set_impairment(Impairment::none());
        let after = start + Duration::from_millis(200);
        assert_eq!(scheduler.schedule(after, 1200), Verdict::Release(after));
        assert!(scheduler.delivers());
    }

    #[test]
    fn full_loss_drops_everything() {
        let mut scheduler = Scheduler::new(Impairment::none().with_loss(1.0), SEED);
        let start = Instant::now();
        for step in 0..100u64 {
            assert_eq!(
                scheduler.schedule(start + Duration::from_millis(step), 100),
                Verdict::Drop(DropReason::Loss)
            );
        }
    }
}
