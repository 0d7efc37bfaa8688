//! Filter for subscribers' NACKs, placed on the wire side of the library's
//! NACK responder so the responder never receives what it drops:
//!
//! - requests for padding-only packets: probe padding carries no media, and
//!   resending it into a congested link only feeds the congestion;
//! - a second request for a packet resent less than one round trip ago:
//!   the first retransmission is still in flight.
//!
//! [`NackDecisions`] is the sans-IO core; [`NackFilter`] runs it in a
//! [`PacketHook`](crate::packet_hook::PacketHook) interceptor, and
//! [`NackFilterHandle`] gives it the round-trip time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{nack_pairs_from_sequence_numbers, TransportLayerNack};

use crate::packet_hook::PacketEdit;
use crate::seq_window::SequenceWindow;

/// Repeat window while the round trip is not measured yet.
const DEFAULT_ROUND_TRIP: Duration = Duration::from_millis(100);
/// Shortest repeat window, so a loopback round trip still suppresses
/// duplicates that arrive in one burst.
const MIN_REPEAT_WINDOW: Duration = Duration::from_millis(10);

/// The sans-IO decisions of the filter.
pub struct NackDecisions {
    /// Recent first transmissions of each stream, marked when padding-only.
    sent: HashMap<u32, SequenceWindow>,
    /// When each (SSRC, sequence number) was last let through, oldest first.
    answered: VecDeque<(Instant, u32, u16)>,
    answered_at: HashMap<(u32, u16), Instant>,
}

impl Default for NackDecisions {
    fn default() -> Self {
        Self::new()
    }
}

impl NackDecisions {
    /// Creates decisions that have seen nothing sent.
    pub fn new() -> Self {
        Self { sent: HashMap::new(), answered: VecDeque::new(), answered_at: HashMap::new() }
    }

    /// Records a packet sent on `ssrc` (first transmissions only).
    pub fn on_sent(&mut self, ssrc: u32, sequence_number: u16, padding_only: bool) {
        self.sent.entry(ssrc).or_default().insert(sequence_number, padding_only);
    }

    /// Returns the sequence numbers of a NACK for `ssrc` that should be
    /// resent at `now`: neither padding-only nor let through less than
    /// `repeat_window` ago.
    pub fn filter(&mut self, now: Instant, ssrc: u32, requested: &[u16], repeat_window: Duration) -> Vec<u16> {
        while let Some(&(at, old_ssrc, old_seq)) = self.answered.front() {
            if now.saturating_duration_since(at) < repeat_window {
                break;
            }
            self.answered.pop_front();
            if self.answered_at.get(&(old_ssrc, old_seq)) == Some(&at) {
                self.answered_at.remove(&(old_ssrc, old_seq));
            }
        }
        let log = self.sent.get(&ssrc);
        let mut resend = Vec::with_capacity(requested.len());
        for &seq in requested {
            if log.is_some_and(|log| log.get(seq) == Some(true)) {
                continue;
            }
            if self
                .answered_at
                .get(&(ssrc, seq))
                .is_some_and(|at| now.saturating_duration_since(*at) < repeat_window)
            {
                continue;
            }
            self.answered_at.insert((ssrc, seq), now);
            self.answered.push_back((now, ssrc, seq));
            resend.push(seq);
        }
        resend
    }
}

/// Shares the measured round-trip time with a connection's filter.
#[derive(Clone, Default)]
pub struct NackFilterHandle {
    round_trip_micros: Arc<AtomicU64>,
}

impl NackFilterHandle {
    /// Sets the round-trip time the repeat window follows.
    pub fn set_round_trip(&self, round_trip: Duration) {
        let micros = u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX).max(1);
        self.round_trip_micros.store(micros, Ordering::Relaxed);
    }

    fn repeat_window(&self) -> Duration {
        match self.round_trip_micros.load(Ordering::Relaxed) {
            0 => DEFAULT_ROUND_TRIP,
            micros => Duration::from_micros(micros).max(MIN_REPEAT_WINDOW),
        }
    }
}

/// [`NackDecisions`] on one peer connection, run by a
/// [`PacketHook`](crate::packet_hook::PacketHook).
pub struct NackFilter {
    decisions: NackDecisions,
    handle: NackFilterHandle,
}

impl NackFilter {
    /// Creates a filter whose repeat window follows `handle`.
    pub fn new(handle: NackFilterHandle) -> Self {
        Self { decisions: NackDecisions::new(), handle }
    }
}

impl PacketEdit for NackFilter {
    fn inbound(&mut self, msg: &mut TaggedPacket) -> bool {
        let now = msg.now;
        let window = self.handle.repeat_window();
        let Packet::Rtcp(packets) = &mut msg.message.packet else { return true };
        let mut emptied = false;
        for packet in packets.iter_mut() {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else { continue };
            let requested: Vec<u16> = nack.nacks.iter().flat_map(|pair| pair.packet_list()).collect();
            let kept = self.decisions.filter(now, nack.media_ssrc, &requested, window);
            if kept.len() == requested.len() {
                continue;
            }
            emptied |= kept.is_empty();
            let filtered = TransportLayerNack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: nack.media_ssrc,
                nacks: nack_pairs_from_sequence_numbers(&kept),
            };
            *packet = Box::new(filtered);
        }
        if emptied {
            packets.retain(|p| p.as_any().downcast_ref::<TransportLayerNack>().is_none_or(|n| !n.nacks.is_empty()));
        }
        !packets.is_empty()
    }

    fn outbound(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(packet) = &msg.message.packet {
            if !msg.message.has(&Attribute::Retransmission) {
                let padding_only = packet.header.padding && packet.payload.is_empty();
                self.decisions.on_sent(packet.header.ssrc, packet.header.sequence_number, padding_only);
            }
        }
    }

    fn remote_stream_unbound(&mut self, info: &StreamInfo) {
        self.decisions.sent.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq_window::SEQUENCE_WINDOW;

    const SSRC: u32 = 0x1234;

    #[test]
    fn padding_requests_are_dropped() {
        let mut decisions = NackDecisions::new();
        let now = Instant::now();
        decisions.on_sent(SSRC, 10, false);
        decisions.on_sent(SSRC, 11, true);
        decisions.on_sent(SSRC, 12, false);
        let kept = decisions.filter(now, SSRC, &[10, 11, 12], Duration::from_millis(50));
        assert_eq!(kept, vec![10, 12]);
    }

    #[test]
    fn repeat_within_round_trip_is_dropped() {
        let mut decisions = NackDecisions::new();
        let start = Instant::now();
        let window = Duration::from_millis(50);
        decisions.on_sent(SSRC, 7, false);
        assert_eq!(decisions.filter(start, SSRC, &[7], window), vec![7]);
        assert_eq!(decisions.filter(start + Duration::from_millis(20), SSRC, &[7], window), Vec::<u16>::new());
        assert_eq!(decisions.filter(start + Duration::from_millis(60), SSRC, &[7], window), vec![7]);
    }

    #[test]
    fn reused_slot_is_not_padding() {
        let mut decisions = NackDecisions::new();
        decisions.on_sent(SSRC, 5, true);
        // The same slot, one history length later, carries media.
        decisions.on_sent(SSRC, 5 + SEQUENCE_WINDOW as u16, false);
        let kept = decisions.filter(Instant::now(), SSRC, &[5, 5 + SEQUENCE_WINDOW as u16], Duration::from_millis(50));
        assert_eq!(kept, vec![5, 5 + SEQUENCE_WINDOW as u16]);
    }

    #[test]
    fn unknown_stream_passes_through() {
        let mut decisions = NackDecisions::new();
        let kept = decisions.filter(Instant::now(), 99, &[1, 2], Duration::from_millis(50));
        assert_eq!(kept, vec![1, 2]);
    }
}
