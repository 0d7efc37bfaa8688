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

/// The stream, payload type and sequence number of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpPacketId {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// The padding bit: set on padding-only probes, which are never
    /// retransmitted.
    pub padding: bool,
}

impl RtpPacketId {
    /// Reads the id of an RTP or SRTP datagram; `None` for RTCP, STUN,
    /// DTLS and anything shorter than an RTP header. RTCP is recognised by
    /// its packet type, 192 to 223 with the marker bit (RFC 5761).
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        if datagram.len() < 12 || datagram[0] >> 6 != 2 {
            return None;
        }
        if (192..=223).contains(&datagram[1]) {
            return None;
        }
        Some(Self {
            ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
            payload_type: datagram[1] & 0x7f,
            padding: datagram[0] & 0x20 != 0,
            sequence_number: u16::from_be_bytes([datagram[2], datagram[3]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RtpPacketId;

    #[test]
    fn parses_rtp_and_skips_rtcp_and_stun() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 0x80 | 96;
        rtp[2..4].copy_from_slice(&513u16.to_be_bytes());
        rtp[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        assert_eq!(
            RtpPacketId::parse(&rtp),
            Some(RtpPacketId { ssrc: 0xdead_beef, payload_type: 96, sequence_number: 513, padding: false })
        );

        let mut receiver_report = rtp;
        receiver_report[1] = 201;
        assert_eq!(RtpPacketId::parse(&receiver_report), None);

        let mut stun = rtp;
        stun[0] = 0x00;
        assert_eq!(RtpPacketId::parse(&stun), None);
        assert_eq!(RtpPacketId::parse(&rtp[..11]), None);
    }
}
