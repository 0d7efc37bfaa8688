//! VP8 frame completion in any packet order, for receivers behind a lossy
//! link where NACK retransmissions arrive after later packets.
//!
//! Packets are grouped by RTP timestamp. A frame is complete once its first
//! packet (VP8 descriptor S bit set, PID 0), its last packet (RTP marker
//! bit) and every sequence number between them have arrived. A packet is
//! late when its sequence number is at or below the highest one seen before
//! it. The relay never reorders, so behind it a late packet is a
//! retransmission.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::client::vp8::{LayerMarker, Vp8Descriptor};

/// Frames kept waiting for missing packets; older ones are given up.
const MAX_PENDING_FRAMES: usize = 128;

/// Completed timestamps remembered so duplicates do not count twice.
const COMPLETED_MEMORY: usize = 1024;

/// A complete frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRecord {
    /// RTP timestamp minus the timestamp of the first packet received,
    /// wrapping.
    pub timestamp_offset: u32,
    /// Whether the frame is a keyframe (VP8 frame tag P bit clear).
    pub keyframe: bool,
    /// Whether at least one of its packets arrived late, so the frame was
    /// recovered by retransmission.
    pub recovered: bool,
    /// Simulcast layer from the synthetic publisher's marker, if present.
    pub layer: Option<u8>,
    /// Frame number within the layer from the same marker.
    pub frame_number: Option<u32>,
    /// VP8 frame bytes, payload descriptors excluded.
    pub bytes: usize,
    /// Picture width from a keyframe's header; `None` for other frames.
    pub width: Option<u16>,
}

#[derive(Debug, Default)]
struct PendingFrame {
    first_sequence: Option<u16>,
    last_sequence: Option<u16>,
    received: HashSet<u16>,
    keyframe: bool,
    recovered: bool,
    marker: Option<LayerMarker>,
    bytes: usize,
    width: Option<u16>,
}

impl PendingFrame {
    fn is_complete(&self) -> bool {
        let (Some(first), Some(last)) = (self.first_sequence, self.last_sequence) else {
            return false;
        };
        let span = last.wrapping_sub(first);
        // A span this large means the marker belongs to another wrap.
        if span >= 0x8000 {
            return false;
        }
        (0..=span).all(|step| self.received.contains(&first.wrapping_add(step)))
    }
}

/// Counts complete VP8 frames of one stream whatever the packet order.
#[derive(Debug, Default)]
pub struct ReorderingFrameCounter {
    first_timestamp: Option<u32>,
    highest_sequence: Option<u16>,
    pending: HashMap<u32, PendingFrame>,
    pending_order: VecDeque<u32>,
    completed: HashSet<u32>,
    completed_order: VecDeque<u32>,
    late_packets: u64,
    abandoned_frames: u64,
    malformed_packets: u64,
}

impl ReorderingFrameCounter {
    /// Creates a counter that has seen no packet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one RTP packet; returns the frame it completes, if any.
    pub fn push(
        &mut self,
        sequence_number: u16,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<FrameRecord> {
        let late = self.record_sequence(sequence_number);
        if payload.is_empty() {
            // A padding-only packet, such as a bandwidth probe.
            return None;
        }
        let first_timestamp = *self.first_timestamp.get_or_insert(rtp_timestamp);

        let Some(descriptor) = Vp8Descriptor::parse(payload) else {
            self.malformed_packets += 1;
            return None;
        };
        if self.completed.contains(&rtp_timestamp) {
            return None;
        }

        if !self.pending.contains_key(&rtp_timestamp) {
            self.start_pending(rtp_timestamp);
        }
        let frame = self.pending.get_mut(&rtp_timestamp)?;
        if !frame.received.insert(sequence_number) {
            return None;
        }
        frame.recovered |= late;
        frame.bytes += payload.len() - descriptor.header_len;
        if descriptor.starts_frame() {
            frame.first_sequence = Some(sequence_number);
            let frame_start = &payload[descriptor.header_len..];
            frame.keyframe = frame_start.first().is_some_and(|tag| tag & 0x01 == 0);
            frame.marker = LayerMarker::parse(frame_start, frame.keyframe);
            frame.width = keyframe_width(frame_start).filter(|_| frame.keyframe);
        }
        if marker {
            frame.last_sequence = Some(sequence_number);
        }
        if !frame.is_complete() {
            return None;
        }

        let frame = self.pending.remove(&rtp_timestamp)?;
        self.pending_order
            .retain(|timestamp| *timestamp != rtp_timestamp);
        self.remember_completed(rtp_timestamp);
        Some(FrameRecord {
            timestamp_offset: rtp_timestamp.wrapping_sub(first_timestamp),
            keyframe: frame.keyframe,
            recovered: frame.recovered,
            layer: frame.marker.map(|marker| marker.layer),
            frame_number: frame.marker.map(|marker| marker.frame_number),
            bytes: frame.bytes,
            width: frame.width,
        })
    }

    /// Packets that arrived at or below the highest sequence number seen.
    pub fn late_packets(&self) -> u64 {
        self.late_packets
    }

    /// Frames given up while waiting for packets, plus those still waiting.
    pub fn incomplete_frames(&self) -> u64 {
        self.abandoned_frames + self.pending.len() as u64
    }

    /// Frames given up while waiting for packets: the oldest waiting frame
    /// is given up when a new one starts and 128 are waiting.
    pub fn abandoned_frames(&self) -> u64 {
        self.abandoned_frames
    }

    /// Packets whose VP8 payload descriptor could not be parsed.
    pub fn malformed_packets(&self) -> u64 {
        self.malformed_packets
    }

    /// Records `sequence_number` and returns whether it is late.
    fn record_sequence(&mut self, sequence_number: u16) -> bool {
        let Some(highest) = self.highest_sequence else {
            self.highest_sequence = Some(sequence_number);
            return false;
        };
        let delta = sequence_number.wrapping_sub(highest);
        if delta == 0 || delta >= 0x8000 {
            self.late_packets += 1;
            return true;
        }
        self.highest_sequence = Some(sequence_number);
        false
    }

    fn start_pending(&mut self, rtp_timestamp: u32) {
        if self.pending_order.len() >= MAX_PENDING_FRAMES {
            if let Some(oldest) = self.pending_order.pop_front() {
                self.pending.remove(&oldest);
                self.abandoned_frames += 1;
            }
        }
        self.pending.insert(rtp_timestamp, PendingFrame::default());
        self.pending_order.push_back(rtp_timestamp);
    }

    fn remember_completed(&mut self, rtp_timestamp: u32) {
        if self.completed_order.len() >= COMPLETED_MEMORY {
            if let Some(oldest) = self.completed_order.pop_front() {
                self.completed.remove(&oldest);
            }
        }
        self.completed.insert(rtp_timestamp);
        self.completed_order.push_back(rtp_timestamp);
    }
}

/// Reads the width from the start of a VP8 keyframe: a 3-byte frame tag,
/// the start code 9d 01 2a, then 14 bits of width (RFC 6386, section 9.1).
fn keyframe_width(frame: &[u8]) -> Option<u16> {
    if frame.len() < 8 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VP8 payload with a one-byte descriptor; `frame_tag` 0x00 marks a
    /// keyframe, 0x01 an interframe.
    fn payload(starts_frame: bool, frame_tag: u8) -> Vec<u8> {
        let descriptor = if starts_frame { 0x10 } else { 0x00 };
        vec![descriptor, frame_tag, 0xAA]
    }

    #[test]
    fn in_order_frame_completes() {
        let mut counter = ReorderingFrameCounter::new();
        assert_eq!(counter.push(10, 3000, false, &payload(true, 0x00)), None);
        assert_eq!(counter.push(11, 3000, false, &payload(false, 0x00)), None);
        let frame = counter.push(12, 3000, true, &payload(false, 0x00));

        assert_eq!(
            frame,
            Some(FrameRecord {
                timestamp_offset: 0,
                keyframe: true,
                recovered: false,
                layer: None,
                frame_number: None,
                bytes: 6,
                width: None,
            })
        );
        assert_eq!(counter.late_packets(), 0);
        assert_eq!(counter.incomplete_frames(), 0);
    }

    #[test]
    fn retransmitted_packet_completes_frame() {
        let mut counter = ReorderingFrameCounter::new();
        counter.push(10, 3000, false, &payload(true, 0x01));
        // 11 is lost; 12 ends the frame, 13 is the next frame.
        assert_eq!(counter.push(12, 3000, true, &payload(false, 0x01)), None);
        let next = counter.push(13, 6000, true, &payload(true, 0x01));
        let recovered = counter.push(11, 3000, false, &payload(false, 0x01));

        assert_eq!(
            next,
            Some(FrameRecord {
                timestamp_offset: 3000,
                keyframe: false,
                recovered: false,
                layer: None,
                frame_number: None,
                bytes: 2,
                width: None,
            })
        );
        assert_eq!(
            recovered,
            Some(FrameRecord {
                timestamp_offset: 0,
                keyframe: false,
                recovered: true,
                layer: None,
                frame_number: None,
                bytes: 6,
                width: None,
            })
        );
        assert_eq!(counter.late_packets(), 1);
        assert_eq!(counter.incomplete_frames(), 0);
    }

    #[test]
    fn keyframe_width_from_header() {
        let mut counter = ReorderingFrameCounter::new();
        // Frame tag of a keyframe, start code, then width 640 and a scale of 1.
        let payload = [0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0x68, 0x01];
        let frame = counter.push(1, 90, true, &payload).expect("complete frame");
        assert_eq!(frame.width, Some(640));
        assert_eq!(keyframe_width(&payload[1..6]), None);
    }

    #[test]
    fn duplicate_does_not_count_twice() {
        let mut counter = ReorderingFrameCounter::new();
        assert!(counter.push(1, 90, true, &payload(true, 0x01)).is_some());
        assert_eq!(counter.push(1, 90, true, &payload(true, 0x01)), None);
        assert_eq!(counter.late_packets(), 1);
    }

    #[test]
    fn missing_packet_leaves_frame_incomplete() {
        let mut counter = ReorderingFrameCounter::new();
        counter.push(65_534, 100, false, &payload(true, 0x01));
        counter.push(0, 100, true, &payload(false, 0x01));
        assert_eq!(counter.incomplete_frames(), 1);

        // The wrapped sequence number 65_535 fills the gap.
        assert!(counter
            .push(65_535, 100, false, &payload(false, 0x01))
            .is_some());
        assert_eq!(counter.incomplete_frames(), 0);
    }
}
