//! Counters of what the relay forwarded and dropped.

use super::impairment::Direction;
use super::scheduler::DropReason;

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams sent on.
    pub forwarded_packets: u64,
    /// UDP payload bytes sent on.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by the random loss draw.
    pub dropped_loss: u64,
    /// Datagrams dropped because the rate cap queue was full.
    pub dropped_queue: u64,
    /// Datagrams dropped by an outage, on arrival or while in flight.
    pub dropped_outage: u64,
    /// Datagrams the socket failed to send.
    pub send_errors: u64,
}

impl DirectionStats {
    /// Datagrams dropped for any reason, send errors excluded.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_outage
    }

    pub(crate) fn record_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::Outage => self.dropped_outage += 1,
            DropReason::Loss => self.dropped_loss += 1,
            DropReason::QueueFull => self.dropped_queue += 1,
        }
    }
}

/// Snapshot of a relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to server.
    pub upstream: DirectionStats,
    /// Server to client.
    pub downstream: DirectionStats,
    /// Distinct client source addresses seen, each with its own upstream
    /// socket.
    pub flows: usize,
}

impl RelayStats {
    /// Counters of `direction`.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::Upstream => &self.upstream,
            Direction::Downstream => &self.downstream,
        }
    }

    pub(crate) fn direction_mut(&mut self, direction: Direction) -> &mut DirectionStats {
        match direction {
            Direction::Upstream => &mut self.upstream,
            Direction::Downstream => &mut self.downstream,
        }
    }
}
