//! VP8 frame reassembly from RTP packets (RFC 7741), without decoding.
//!
//! A frame counts as complete when its first packet starts partition 0 (VP8
//! payload descriptor S bit set, PID 0), every following packet has the next
//! sequence number and the same RTP timestamp, and the last one has the RTP
//! marker bit. Whether it is a keyframe comes from the P bit of the VP8 frame
//! tag, the lowest bit of the first payload byte (0 means keyframe, RFC 6386
//! section 9.1).
//!
//! Frames of the synthetic simulcast publisher carry a [`LayerMarker`] right
//! after the VP8 frame header; the assembler reads it from the first packet.

/// RTP clock rate of VP8 video (RFC 7741 section 4.1).
pub(crate) const VP8_CLOCK_RATE: u32 = 90_000;

/// A VP8 payload descriptor, parsed as far as reassembly needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S bit: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// Partition index (PID).
    pub partition_index: u8,
    /// Length of the descriptor in bytes; the VP8 payload follows it.
    pub header_len: usize,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of an RTP payload. Returns `None`
    /// if the payload ends inside the descriptor or carries no VP8 data.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let extended = first & 0x80 != 0;
        let start_of_partition = first & 0x10 != 0;
        let partition_index = first & 0x07;
        let mut header_len = 1;

        if extended {
            let flags = *payload.get(1)?;
            header_len = 2;
            let has_picture_id = flags & 0x80 != 0;
            let has_tl0_pic_idx = flags & 0x40 != 0;
            let has_tid_or_key_idx = flags & 0x30 != 0;

            if has_picture_id {
                let picture_id = *payload.get(header_len)?;
                // M bit: a 15-bit picture id takes two bytes.
                header_len += if picture_id & 0x80 != 0 { 2 } else { 1 };
            }
            if has_tl0_pic_idx {
                header_len += 1;
            }
            if has_tid_or_key_idx {
                header_len += 1;
            }
        }

        if payload.len() <= header_len {
            return None;
        }
        Some(Self {
            start_of_partition,
            partition_index,
            header_len,
        })
    }

    /// Returns whether this packet carries the first bytes of a frame.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }
}

/// Marker the synthetic simulcast publisher writes into each VP8 frame,
/// right after the frame header (10 bytes for a keyframe, 3 for a delta
/// frame): the bytes "VPRL", the layer index and the big-endian frame number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMarker {
    /// Simulcast layer index, 0 for the lowest.
    pub layer: u8,
    /// Frame number within the layer, counting from 0.
    pub frame_number: u32,
}

impl LayerMarker {
    /// Magic bytes that open the marker.
    pub const MAGIC: [u8; 4] = *b"VPRL";
    /// Length of the marker in bytes.
    pub const LEN: usize = 9;

    /// Appends the marker to `frame`.
    pub fn write(&self, frame: &mut Vec<u8>) {
        frame.extend_from_slice(&Self::MAGIC);
        frame.push(self.layer);
        frame.extend_from_slice(&self.frame_number.to_be_bytes());
    }

    /// Reads the marker after the frame header at the start of a VP8 frame.
    /// Returns `None` if the frame is too short or has no marker there.
    pub fn parse(frame_start: &[u8], keyframe: bool) -> Option<Self> {
        let header_len = if keyframe { 10 } else { 3 };
        let marker = frame_start.get(header_len..header_len + Self::LEN)?;
        if marker[..4] != Self::MAGIC {
            return None;
        }
        let frame_number = u32::from_be_bytes([marker[5], marker[6], marker[7], marker[8]]);
        Some(Self {
            layer: marker[4],
            frame_number,
        })
    }
}

/// A frame whose packets all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompleteFrame {
    /// RTP timestamp shared by the frame's packets.
    pub rtp_timestamp: u32,
    /// Whether the frame is a keyframe.
    pub keyframe: bool,
    /// Number of RTP packets in the frame.
    pub packets: u32,
    /// Size of the VP8 frame in bytes, payload descriptors excluded.
    pub bytes: usize,
    /// Layer marker of a synthetic simulcast frame; `None` for other VP8.
    pub marker: Option<LayerMarker>,
}

#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    rtp_timestamp: u32,
    last_sequence_number: u16,
    keyframe: bool,
    packets: u32,
    bytes: usize,
    marker: Option<LayerMarker>,
}

/// Reassembles VP8 frames from RTP packets in arrival order.
#[derive(Debug, Default)]
pub struct Vp8FrameAssembler {
    current: Option<FrameInProgress>,
    malformed_packets: u64,
    incomplete_frames: u64,
}

impl Vp8FrameAssembler {
    /// Creates an assembler with no frame in progress.
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
    ) -> Option<CompleteFrame> {
        let Some(descriptor) = Vp8Descriptor::parse(payload) else {
            self.malformed_packets += 1;
            self.abandon_current();
            return None;
        };

        if descriptor.starts_frame() {
            self.abandon_current();
            let frame_start = &payload[descriptor.header_len..];
            let keyframe = frame_start[0] & 0x01 == 0;
            self.current = Some(FrameInProgress {
                rtp_timestamp,
                last_sequence_number: sequence_number,
                keyframe,
                packets: 1,
                bytes: frame_start.len(),
                marker: LayerMarker::parse(frame_start, keyframe),
            });
        } else {
            match self.current.as_mut() {
                Some(frame)
                    if sequence_number == frame.last_sequence_number.wrapping_add(1)
                        && rtp_timestamp == frame.rtp_timestamp =>
                {
                    frame.last_sequence_number = sequence_number;
                    frame.packets += 1;
                    frame.bytes += payload.len() - descriptor.header_len;
                }
                Some(_) => {
                    self.abandon_current();
                    return None;
                }
                // A continuation without its start (e.g. joined mid-frame).
                None => return None,
            }
        }

        if !marker {
            return None;
        }
        let frame = self.current.take()?;
        Some(CompleteFrame {
            rtp_timestamp: frame.rtp_timestamp,
            keyframe: frame.keyframe,
            packets: frame.packets,
            bytes: frame.bytes,
            marker: frame.marker,
        })
    }

    /// Packets whose VP8 payload descriptor could not be parsed.
    pub fn malformed_packets(&self) -> u64 {
        self.malformed_packets
    }

    /// Frames that were started but never completed.
    pub fn incomplete_frames(&self) -> u64 {
        self.incomplete_frames
    }

    fn abandon_current(&mut self) {
        if self.current.take().is_some() {
            self.incomplete_frames += 1;
        }
    }
}

/// Counts RTP sequence number gaps of one stream in arrival order.
#[derive(Debug, Default, Clone)]
pub struct SequenceTracker {
    highest: Option<u16>,
    missing: u64,
    gap_count: u64,
    late_or_duplicate: u64,
}

impl SequenceTracker {
    /// Records one sequence number. Returns the number of sequence numbers
    /// skipped just before it (0 when it is the next one expected).
    pub fn record(&mut self, sequence_number: u16) -> u16 {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence_number);
            return 0;
        };

        let delta = sequence_number.wrapping_sub(highest);
        if delta == 0 || delta >= 0x8000 {
            // Duplicate or older than the highest seen: a retransmission or
            // reordering, not a new gap.
            self.late_or_duplicate += 1;
            return 0;
        }

        self.highest = Some(sequence_number);
        let skipped = delta - 1;
        if skipped > 0 {
            self.missing += u64::from(skipped);
            self.gap_count += 1;
        }
        skipped
    }

    /// Total sequence numbers skipped.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Number of distinct gaps.
    pub fn gap_count(&self) -> u64 {
        self.gap_count
    }

    /// Packets that arrived at or below the highest sequence number seen.
    pub fn late_or_duplicate(&self) -> u64 {
        self.late_or_duplicate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptor with X=1, I=1 (7-bit picture id), S and PID as given.
    fn descriptor(start: bool, pid: u8) -> Vec<u8> {
        let first = 0x80 | if start { 0x10 } else { 0 } | pid;
        vec![first, 0x80, 0x05]
    }

    fn packet(start: bool, pid: u8, frame_tag: u8) -> Vec<u8> {
        let mut payload = descriptor(start, pid);
        payload.extend_from_slice(&[frame_tag, 0xAA, 0xBB]);
        payload
    }

    #[test]
    fn descriptor_lengths() {
        assert_eq!(Vp8Descriptor::parse(&[0x10, 0x00]).unwrap().header_len, 1);
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0x80, 0x05, 0x00])
                .unwrap()
                .header_len,
            3
        );
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0x80, 0x85, 0x01, 0x00])
                .unwrap()
                .header_len,
            4
        );
        assert_eq!(
            Vp8Descriptor::parse(&[0x90, 0xF0, 0x85, 0x01, 0x02, 0x03, 0x00])
                .unwrap()
                .header_len,
            6
        );
    }

    #[test]
    fn descriptor_rejects_truncated() {
        assert_eq!(Vp8Descriptor::parse(&[]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x90]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x90, 0x80, 0x85]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x10]), None);
    }

    #[test]
    fn single_packet_keyframe() {
        let mut assembler = Vp8FrameAssembler::new();
        let frame = assembler
            .push(10, 3000, true, &packet(true, 0, 0x10))
            .unwrap();
        assert!(frame.keyframe);
        assert_eq!(frame.packets, 1);
    }

    #[test]
    fn multi_packet_delta_frame() {
        let mut assembler = Vp8FrameAssembler::new();
        assert_eq!(
            assembler.push(65535, 3000, false, &packet(true, 0, 0x01)),
            None
        );
        assert_eq!(
            assembler.push(0, 3000, false, &packet(false, 0, 0x55)),
            None
        );
        let frame = assembler
            .push(1, 3000, true, &packet(false, 0, 0x55))
            .unwrap();
        assert!(!frame.keyframe);
        assert_eq!(frame.packets, 3);
    }

    #[test]
    fn gap_inside_frame_drops_it() {
        let mut assembler = Vp8FrameAssembler::new();
        assembler.push(1, 3000, false, &packet(true, 0, 0x00));
        assert_eq!(assembler.push(3, 3000, true, &packet(false, 0, 0x55)), None);
        assert_eq!(assembler.incomplete_frames(), 1);

        let next = assembler
            .push(4, 6000, true, &packet(true, 0, 0x01))
            .unwrap();
        assert!(!next.keyframe);
    }

    #[test]
    fn continuation_without_start_is_ignored() {
        let mut assembler = Vp8FrameAssembler::new();
        assert_eq!(assembler.push(7, 3000, true, &packet(false, 0, 0x55)), None);
        assert_eq!(assembler.incomplete_frames(), 0);
    }

    #[test]
    fn malformed_payload_counted() {
        let mut assembler = Vp8FrameAssembler::new();
        assert_eq!(assembler.push(1, 3000, true, &[0x90]), None);
        assert_eq!(assembler.malformed_packets(), 1);
    }

    #[test]
    fn frame_bytes_exclude_descriptors() {
        let mut assembler = Vp8FrameAssembler::new();
        assembler.push(1, 3000, false, &packet(true, 0, 0x01));
        let frame = assembler
            .push(2, 3000, true, &packet(false, 0, 0x55))
            .unwrap();
        assert_eq!(frame.bytes, 6);
        assert_eq!(frame.marker, None);
    }

    #[test]
    fn layer_marker_round_trip() {
        let marker = LayerMarker {
            layer: 2,
            frame_number: 0x0102_0304,
        };
        let mut keyframe = vec![0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x00, 0x05, 0xD0, 0x02];
        marker.write(&mut keyframe);
        assert_eq!(LayerMarker::parse(&keyframe, true), Some(marker));
        assert_eq!(LayerMarker::parse(&keyframe, false), None);

        let mut delta = vec![0x11, 0x02, 0x00];
        marker.write(&mut delta);
        assert_eq!(LayerMarker::parse(&delta, false), Some(marker));
        assert_eq!(LayerMarker::parse(&delta[..10], false), None);
    }

    #[test]
    fn assembler_reads_layer_marker() {
        let mut first = descriptor(true, 0);
        first.extend_from_slice(&[0x11, 0x02, 0x00]);
        LayerMarker {
            layer: 1,
            frame_number: 7,
        }
        .write(&mut first);
        let mut assembler = Vp8FrameAssembler::new();
        assembler.push(9, 3000, false, &first);
        let frame = assembler
            .push(10, 3000, true, &packet(false, 0, 0x55))
            .unwrap();
        let marker = frame.marker.unwrap();
        assert_eq!(marker.layer, 1);
        assert_eq!(marker.frame_number, 7);
        assert_eq!(frame.bytes, 12 + 3);
    }

    #[test]
    fn sequence_tracker_gaps_and_wrap() {
        let mut tracker = SequenceTracker::default();
        assert_eq!(tracker.record(65534), 0);
        assert_eq!(tracker.record(65535), 0);
        assert_eq!(tracker.record(0), 0);
        assert_eq!(tracker.record(3), 2);
        assert_eq!(tracker.record(2), 0);
        assert_eq!(tracker.record(3), 0);
        assert_eq!(tracker.missing(), 2);
        assert_eq!(tracker.gap_count(), 1);
        assert_eq!(tracker.late_or_duplicate(), 2);
    }
}
