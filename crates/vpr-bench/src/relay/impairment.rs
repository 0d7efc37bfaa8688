//! Impairment settings of one relay direction: rate cap, random loss, delay
//! with jitter, and outage.

use std::time::Duration;

/// Direction of a datagram through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server.
    Upstream,
    /// From the server to the client.
    Downstream,
}

impl Direction {
    /// Both directions, upstream first.
    pub const BOTH: [Direction; 2] = [Direction::Upstream, Direction::Downstream];

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Upstream => 0,
            Direction::Downstream => 1,
        }
    }
}

/// Impairment of one direction. The default forwards everything at once.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Rate cap in kilobits per second (1 kbit = 1000 bits) of UDP payload;
    /// `None` for no cap.
    pub rate_kbps: Option<u32>,
    /// Probability in 0..=1 that a datagram is dropped at random.
    pub loss: f64,
    /// Fixed one-way delay added to every datagram.
    pub delay: Duration,
    /// Upper bound of a uniform random delay added on top of `delay`.
    pub jitter: Duration,
    /// Drops every datagram while set.
    pub outage: bool,
}

impl Impairment {
    /// No impairment.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the rate cap.
    pub fn with_rate_kbps(mut self, rate_kbps: u32) -> Self {
        self.rate_kbps = Some(rate_kbps);
        self
    }

    /// Sets the random loss probability; values outside 0..=1 are clamped
    /// when used.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the fixed delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter bound.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Loss probability as used: clamped to 0..=1, NaN read as 0.
    pub(crate) fn loss_probability(&self) -> f64 {
        if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        }
    }
}
