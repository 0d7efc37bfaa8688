//! Down-track: the rewrite of one source's packets for one subscriber.
//!
//! Each subscriber receives every track on an SSRC, payload types and
//! header-extension ids of its own negotiation, with sequence numbers and
//! timestamps that stay contiguous when the source changes. This module is
//! sans-IO: it edits packets and takes the time as an argument.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::rtp::header::Extension;
use rtc::rtp::packet::Packet;

use crate::keyframe::{starts_keyframe, VideoCodec};

/// Header-extension URI of transport-wide congestion control. Its sequence
/// numbers belong to the publisher's transport and are never forwarded.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// A negotiated codec: payload type, MIME type and fmtp line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// RTP payload type.
    pub payload_type: u8,
    /// MIME type such as `video/VP8`.
    pub mime_type: String,
    /// The `a=fmtp` parameters, as negotiated.
    pub fmtp: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
}

/// A negotiated RTP header extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedExtension {
    /// Extension id from `a=extmap`.
    pub id: u8,
    /// Extension URI.
    pub uri: String,
}

/// Parameters one side of the forwarding path negotiated for a track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegParameters {
    /// Codecs in the order negotiated.
    pub codecs: Vec<NegotiatedCodec>,
    /// Header extensions negotiated on the leg.
    pub extensions: Vec<NegotiatedExtension>,
}

/// The outcome of offering one packet to a down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// The packet was rewritten and is to be sent.
    Forward,
    /// Video before the first keyframe; nothing is sent.
    WaitingForKeyframe,
    /// The subscriber did not negotiate the packet's codec.
    CodecNotNegotiated,
    /// Older than the first packet forwarded from this source.
    TooOld,
    /// An in-order padding-only packet, dropped without leaving a gap.
    PaddingDropped,
}

const NO_MAPPING: u8 = 0;
const NO_PAYLOAD_TYPE: u8 = 0xff;

/// CSRCs in a padding packet: the most an RTP header holds.
const PADDING_CSRC_COUNT: usize = 15;

/// Changes of the sequence offset remembered per source; a late packet
/// older than all of them is too old to number without a collision.
const OFFSET_MEMORY: usize = 64;

/// Sequence and timestamp mapping for the source currently forwarded.
#[derive(Debug, Clone)]
struct SourceMapping {
    seq_in_base: u16,
    seq_out_base: u16,
    ts_in_base: u32,
    ts_out_base: u32,
    highest_in_seq: u16,
    /// Packets from the first forwarded (0) to the newest, across wraps.
    highest_extended: i64,
    /// Changes of `seq_out_base`, oldest first, as (incoming sequence
    /// number, change). A change applies to the packets after that number:
    /// -1 for a padding packet dropped there, +1 for a padding packet the
    /// down-track inserted after it. A late packet from before a change
    /// gets it undone.
    offset_changes: VecDeque<(u16, i16)>,
}

impl SourceMapping {
    /// Outgoing sequence number of `in_seq`, or `None` when a change of
    /// the offset this mapping no longer remembers may precede it.
    fn out_seq(&self, in_seq: u16) -> Option<u16> {
        let mut out = in_seq.wrapping_sub(self.seq_in_base).wrapping_add(self.seq_out_base);
        let is_late = (self.highest_in_seq.wrapping_sub(in_seq) as i16) > 0;
        if !is_late || self.offset_changes.is_empty() {
            return Some(out);
        }
        if self.offset_changes.len() == OFFSET_MEMORY
            && (in_seq.wrapping_sub(self.offset_changes[0].0) as i16) <= 0
        {
            return None;
        }
        for &(boundary, change) in self.offset_changes.iter().rev() {
            if (boundary.wrapping_sub(in_seq) as i16) < 0 {
                break;
            }
            out = out.wrapping_sub(change as u16);
        }
        Some(out)
    }

    fn change_offset(&mut self, boundary: u16, change: i16) {
        self.seq_out_base = self.seq_out_base.wrapping_add(change as u16);
        if self.offset_changes.len() == OFFSET_MEMORY {
            self.offset_changes.pop_front();
        }
        self.offset_changes.push_back((boundary, change));
    }

    fn dropped_padding(&self, in_seq: u16) -> bool {
        self.offset_changes.iter().any(|&(boundary, change)| boundary == in_seq && change < 0)
    }
}

/// The last packet sent, used to continue numbering after a source change.
#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    timestamp: u32,
    at: Instant,
    clock_rate: u32,
    payload_type: u8,
}

/// Rewrite state of one track for one subscriber.
#[derive(Debug, Clone)]
pub struct DownTrack {
    ssrc: u32,
    is_video: bool,
    payload_types: [u8; 128],
    clock_rates: [u32; 128],
    video_codecs: [Option<VideoCodec>; 128],
    extension_ids: [u8; 256],
    mapping: Option<SourceMapping>,
    last_sent: Option<LastSent>,
    initial_seq: u16,
    initial_timestamp: u32,
}

impl DownTrack {
    /// Creates a down-track that sends on `ssrc`, numbering from random
    /// initial values as RFC 3550 recommends.
    pub fn new(ssrc: u32, is_video: bool) -> Self {
        Self {
            ssrc,
            is_video,
            payload_types: [NO_PAYLOAD_TYPE; 128],
            clock_rates: [0; 128],
            video_codecs: [None; 128],
            extension_ids: [NO_MAPPING; 256],
            mapping: None,
            last_sent: None,
            initial_seq: rand::random(),
            initial_timestamp: rand::random(),
        }
    }

    /// Sets the initial sequence number and timestamp (tests use fixed ones).
    pub fn with_initial(mut self, seq: u16, timestamp: u32) -> Self {
        self.initial_seq = seq;
        self.initial_timestamp = timestamp;
        self
    }

    /// Returns the SSRC this down-track sends on.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Binds the down-track to a source: maps the publisher's payload types
    /// and extension ids to the subscriber's. Video waits for the next
    /// keyframe; numbering continues from the last packet sent.
    pub fn bind(&mut self, publisher: &LegParameters, subscriber: &LegParameters) {
        self.payload_types = [NO_PAYLOAD_TYPE; 128];
        self.clock_rates = [0; 128];
        self.video_codecs = [None; 128];
        for codec in &publisher.codecs {
            let index = usize::from(codec.payload_type & 0x7f);
            if let Some(matched) = match_codec(codec, &subscriber.codecs) {
                self.payload_types[index] = matched.payload_type;
                self.clock_rates[index] = codec.clock_rate;
                self.video_codecs[index] = VideoCodec::from_mime(&codec.mime_type);
            }
        }

        self.extension_ids = [NO_MAPPING; 256];
        for extension in &publisher.extensions {
            if extension.uri == TRANSPORT_CC_URI {
                continue;
            }
            if let Some(out) = subscriber.extensions.iter().find(|e| e.uri == extension.uri) {
                self.extension_ids[usize::from(extension.id)] = out.id;
            }
        }
        self.mapping = None;
    }

    /// Starts over on another source with the same parameters, such as
    /// another simulcast layer of the same track: the next packet must
    /// start a keyframe, and numbering continues from the last packet sent.
    pub fn restart(&mut self) {
        self.mapping = None;
    }

    /// Returns a padding-only packet numbered right after the newest packet
    /// sent, for bandwidth probing; later packets are numbered after it.
    /// `None` before the first packet was forwarded from the source.
    pub fn padding_packet(&mut self) -> Option<Packet> {
        let mapping = self.mapping.as_mut()?;
        let last = self.last_sent.as_mut()?;
        mapping.change_offset(mapping.highest_in_seq, 1);
        last.seq = last.seq.wrapping_add(1);
        let mut packet = Packet::default();
        packet.header.version = 2;
        packet.header.padding = true;
        packet.header.payload_type = last.payload_type;
        packet.header.sequence_number = last.seq;
        packet.header.timestamp = last.timestamp;
        packet.header.ssrc = self.ssrc;
        // The library pads an empty payload to four bytes only. A full CSRC
        // list, which receivers ignore on a padding packet, makes each probe
        // packet carry 60 more bytes.
        packet.header.csrc = vec![self.ssrc; PADDING_CSRC_COUNT];
        Some(packet)
    }

    /// Rewrites `packet` in place for the subscriber.
    pub fn rewrite(&mut self, packet: &mut Packet, now: Instant) -> Rewrite {
        let index = usize::from(packet.header.payload_type & 0x7f);
        let out_payload_type = self.payload_types[index];
        if out_payload_type == NO_PAYLOAD_TYPE {
            return Rewrite::CodecNotNegotiated;
        }

        let mapping = match self.mapping.as_mut() {
            Some(mapping) => mapping,
            None => {
                if self.is_video {
                    let starts = self.video_codecs[index]
                        .is_some_and(|codec| starts_keyframe(codec, &packet.payload));
                    if !starts {
                        return Rewrite::WaitingForKeyframe;
                    }
                }
                let clock_rate = self.clock_rates[index];
                self.mapping = Some(self.start_mapping(packet, clock_rate, now));
                self.mapping.as_mut().expect("mapping was just set")
            }
        };

        let in_seq = packet.header.sequence_number;
        // Sequence numbers wrap every 65536 packets, so the packet's distance
        // is taken from the newest one, then compared with the first.
        let from_highest = i64::from(in_seq.wrapping_sub(mapping.highest_in_seq) as i16);
        let extended = mapping.highest_extended + from_highest;
        if extended < 0 {
            return Rewrite::TooOld;
        }
        let is_padding_only = packet.payload.is_empty() && packet.header.padding;
        let is_next = from_highest == 1;
        if is_next && is_padding_only {
            // Close the gap the dropped packet would leave.
            mapping.highest_in_seq = in_seq;
            mapping.highest_extended = extended;
            mapping.change_offset(in_seq, -1);
            return Rewrite::PaddingDropped;
        }
        if is_padding_only && mapping.dropped_padding(in_seq) {
            // A repeat of a padding packet already dropped.
            return Rewrite::PaddingDropped;
        }
        let Some(out_seq) = mapping.out_seq(in_seq) else {
            return Rewrite::TooOld;
        };
        if from_highest > 0 {
            mapping.highest_in_seq = in_seq;
            mapping.highest_extended = extended;
        }

        let out_ts = packet
            .header
            .timestamp
            .wrapping_sub(mapping.ts_in_base)
            .wrapping_add(mapping.ts_out_base);

        packet.header.ssrc = self.ssrc;
        packet.header.payload_type = out_payload_type;
        packet.header.sequence_number = out_seq;
        packet.header.timestamp = out_ts;
        self.rewrite_extensions(packet);

        let is_newest = self
            .last_sent
            .is_none_or(|last| (out_seq.wrapping_sub(last.seq) as i16) > 0);
        if is_newest {
            self.last_sent = Some(LastSent {
                seq: out_seq,
                timestamp: out_ts,
                at: now,
                clock_rate: self.clock_rates[index],
                payload_type: out_payload_type,
            });
        }
        Rewrite::Forward
    }

    fn start_mapping(&self, packet: &Packet, clock_rate: u32, now: Instant) -> SourceMapping {
        let (seq_out_base, ts_out_base) = match self.last_sent {
            None => (self.initial_seq, self.initial_timestamp),
            Some(last) => {
                // Advance the timestamp by the wall-clock time since the last
                // packet, at least one tick, so it keeps increasing.
                let rate = if last.clock_rate > 0 { last.clock_rate } else { clock_rate };
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(rate)) as u32;
                (last.seq.wrapping_add(1), last.timestamp.wrapping_add(ticks.max(1)))
            }
        };
        SourceMapping {
            seq_in_base: packet.header.sequence_number,
            seq_out_base,
            ts_in_base: packet.header.timestamp,
            ts_out_base,
            highest_in_seq: packet.header.sequence_number,
            highest_extended: 0,
            offset_changes: VecDeque::new(),
        }
    }

    fn rewrite_extensions(&self, packet: &mut Packet) {
        let header = &mut packet.header;
        if header.extensions.is_empty() {
            return;
        }
        header.extensions.retain_mut(|extension: &mut Extension| {
            let out = self.extension_ids[usize::from(extension.id)];
            extension.id = out;
            out != NO_MAPPING
        });
        if header.extensions.is_empty() {
            header.extension = false;
            header.extension_profile = 0;
            header.extensions_padding = 0;
        } else {
            // The marshalled size counts this padding, so it must match the
            // extensions that remain.
            let length = header.get_extension_payload_len();
            header.extensions_padding = (4 - length % 4) % 4;
        }
    }
}

/// Finds the subscriber's codec for a publisher's codec: the same MIME type
/// and, for H264, the same packetization mode and profile.
fn match_codec<'a>(
    codec: &NegotiatedCodec,
    candidates: &'a [NegotiatedCodec],
) -> Option<&'a NegotiatedCodec> {
    let same_mime = |c: &&NegotiatedCodec| c.mime_type.eq_ignore_ascii_case(&codec.mime_type);
    if codec.mime_type.eq_ignore_ascii_case("video/h264") {
        let wanted = h264_identity(&codec.fmtp);
        return candidates
            .iter()
            .filter(same_mime)
            .find(|c| h264_identity(&c.fmtp) == wanted);
    }
    candidates.iter().find(same_mime)
}

/// Packetization mode and profile (the first four hex digits of
/// profile-level-id, which leave out the level) of an H264 fmtp line.
fn h264_identity(fmtp: &str) -> (String, String) {
    let mut mode = "0".to_owned();
    let mut profile = String::new();
    for parameter in fmtp.split(';') {
        let Some((key, value)) = parameter.trim().split_once('=') else {
            continue;
        };
        match key {
            "packetization-mode" => mode = value.to_owned(),
            "profile-level-id" => profile = value.get(..4).unwrap_or(value).to_ascii_lowercase(),
            _ => {}
        }
    }
    (mode, profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
    use std::time::Duration;

    const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

    fn vp8(payload_type: u8) -> NegotiatedCodec {
        NegotiatedCodec {
            payload_type,
            mime_type: "video/VP8".into(),
            fmtp: String::new(),
            clock_rate: 90_000,
        }
    }

    fn legs() -> (LegParameters, LegParameters) {
        let publisher = LegParameters {
            codecs: vec![vp8(96)],
            extensions: vec![
                NegotiatedExtension { id: 3, uri: TRANSPORT_CC_URI.into() },
                NegotiatedExtension { id: 4, uri: MID_URI.into() },
                NegotiatedExtension { id: 1, uri: AUDIO_LEVEL_URI.into() },
            ],
        };
        let subscriber = LegParameters {
            codecs: vec![vp8(120)],
            extensions: vec![
                NegotiatedExtension { id: 5, uri: TRANSPORT_CC_URI.into() },
                NegotiatedExtension { id: 9, uri: MID_URI.into() },
            ],
        };
        (publisher, subscriber)
    }

    fn packet(seq: u16, timestamp: u32, keyframe: bool) -> Packet {
        let mut packet = Packet::default();
        packet.header.version = 2;
        packet.header.payload_type = 96;
        packet.header.sequence_number = seq;
        packet.header.timestamp = timestamp;
        packet.header.ssrc = 1111;
        let vp8_header = if keyframe { 0x10 } else { 0x11 };
        packet.payload = Bytes::from(vec![0x10, vp8_header, 0, 0]);
        packet
    }

    #[test]
    fn video_waits_for_keyframe() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(1000, 5000);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();

        let mut delta = packet(10, 90, false);
        assert_eq!(track.rewrite(&mut delta, now), Rewrite::WaitingForKeyframe);

        let mut key = packet(11, 180, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        assert_eq!(key.header.ssrc, 42);
        assert_eq!(key.header.payload_type, 120);
        assert_eq!(key.header.sequence_number, 1000);
        assert_eq!(key.header.timestamp, 5000);

        let mut next = packet(12, 270, false);
        assert_eq!(track.rewrite(&mut next, now), Rewrite::Forward);
        assert_eq!(next.header.sequence_number, 1001);
        assert_eq!(next.header.timestamp, 5090);

        let mut old = packet(10, 90, false);
        assert_eq!(track.rewrite(&mut old, now), Rewrite::TooOld);
    }

    #[test]
    fn extensions_are_mapped_and_transport_cc_removed() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true);
        track.bind(&publisher, &subscriber);
        let mut key = packet(1, 0, true);
        key.header.extension = true;
        key.header.extension_profile = 0xBEDE;
        key.header.extensions = vec![
            Extension { id: 3, payload: Bytes::from_static(&[0, 1]) },
            Extension { id: 4, payload: Bytes::from_static(b"0") },
            Extension { id: 1, payload: Bytes::from_static(&[0x80]) },
        ];
        assert_eq!(track.rewrite(&mut key, Instant::now()), Rewrite::Forward);
        assert_eq!(key.header.extensions.len(), 1);
        assert_eq!(key.header.extensions[0].id, 9);
        assert_eq!(key.header.extensions[0].payload, Bytes::from_static(b"0"));

        let marshalled = key.marshal().expect("rewritten packet marshals");
        assert_eq!(marshalled.len(), key.marshal_size());
    }

    #[test]
    fn dropped_extensions_keep_marshal_size_consistent() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true);
        track.bind(&publisher, &subscriber);
        // Parse a packet as it arrives, so the padding is what unmarshal set.
        let mut original = packet(1, 0, true);
        original.header.extension = true;
        original.header.extension_profile = 0xBEDE;
        original.header.set_extension(3, Bytes::from_static(&[0, 1])).unwrap();
        original.header.set_extension(4, Bytes::from_static(b"0")).unwrap();
        original.header.set_extension(1, Bytes::from_static(&[0x80])).unwrap();
        let wire = original.marshal().expect("original marshals");
        let mut parsed = Packet::unmarshal(&mut wire.clone()).expect("parses");

        assert_eq!(track.rewrite(&mut parsed, Instant::now()), Rewrite::Forward);
        let marshalled = parsed.marshal().expect("rewritten packet marshals");
        assert_eq!(marshalled.len(), parsed.marshal_size());
        let reparsed = Packet::unmarshal(&mut marshalled.clone()).expect("reparses");
        assert_eq!(reparsed.header.extensions.len(), 1);
        assert_eq!(reparsed.payload, parsed.payload);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(65_535, u32::MAX);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();
        let mut key = packet(65_535, u32::MAX - 10, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        let mut next = packet(0, 79, false);
        assert_eq!(track.rewrite(&mut next, now), Rewrite::Forward);
        assert_eq!(next.header.sequence_number, 0);
        assert_eq!(next.header.timestamp, 89);
    }

    #[test]
    fn forwarding_continues_past_half_the_sequence_space() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(0, 0);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();
        let mut key = packet(100, 0, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        // Three times round the sequence space, in order.
        for step in 1..=200_000u32 {
            let mut next = packet(100u16.wrapping_add(step as u16), step * 10, false);
            assert_eq!(track.rewrite(&mut next, now), Rewrite::Forward, "packet {step} after the first");
            assert_eq!(next.header.sequence_number, step as u16);
        }
        // A packet from before the first one forwarded is still too old
        // right after the start, but not after a wrap.
        let mut fresh = DownTrack::new(43, true).with_initial(0, 0);
        fresh.bind(&publisher, &subscriber);
        let mut first = packet(500, 0, true);
        assert_eq!(fresh.rewrite(&mut first, now), Rewrite::Forward);
        let mut before = packet(499, 0, false);
        assert_eq!(fresh.rewrite(&mut before, now), Rewrite::TooOld);
    }

    #[test]
    fn padding_only_packet_leaves_no_gap() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(100, 0);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();
        let mut key = packet(1, 0, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        let mut padding = packet(2, 0, false);
        padding.payload = Bytes::new();
        padding.header.padding = true;
        assert_eq!(track.rewrite(&mut padding, now), Rewrite::PaddingDropped);
        let mut next = packet(3, 3000, false);
        assert_eq!(track.rewrite(&mut next, now), Rewrite::Forward);
        assert_eq!(next.header.sequence_number, 101);
    }

    #[test]
    fn late_packets_after_padding_unique() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(100, 0);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();
        let mut sent = Vec::new();
        let mut key = packet(10, 0, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        sent.push(key.header.sequence_number);
        // 11 is late; 12 and 13 are padding; 14 is media.
        let mut twelve = packet(12, 0, false);
        twelve.payload = Bytes::new();
        twelve.header.padding = true;
        assert_eq!(track.rewrite(&mut twelve, now), Rewrite::Forward, "not in order: fills the gap");
        sent.push(twelve.header.sequence_number);
        let mut thirteen = packet(13, 0, false);
        thirteen.payload = Bytes::new();
        thirteen.header.padding = true;
        assert_eq!(track.rewrite(&mut thirteen, now), Rewrite::PaddingDropped);
        let mut fourteen = packet(14, 3000, false);
        assert_eq!(track.rewrite(&mut fourteen, now), Rewrite::Forward);
        sent.push(fourteen.header.sequence_number);
        let mut eleven = packet(11, 0, false);
        assert_eq!(track.rewrite(&mut eleven, now), Rewrite::Forward);
        sent.push(eleven.header.sequence_number);
        // A repeat of the dropped padding stays dropped.
        let mut again = thirteen.clone();
        again.header.sequence_number = 13;
        assert_eq!(track.rewrite(&mut again, now), Rewrite::PaddingDropped);

        let mut unique = sent.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), sent.len(), "sequence numbers collide: {sent:?}");
        assert_eq!(sent, vec![100, 102, 103, 101]);
    }

    #[test]
    fn inserted_padding_keeps_numbering_unique() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(65_535, 0);
        track.bind(&publisher, &subscriber);
        let now = Instant::now();
        assert!(track.padding_packet().is_none(), "no padding before the first packet");
        let mut key = packet(10, 0, true);
        assert_eq!(track.rewrite(&mut key, now), Rewrite::Forward);
        // 11 is late; 12 arrives, then two padding packets are inserted.
        let mut twelve = packet(12, 0, false);
        assert_eq!(track.rewrite(&mut twelve, now), Rewrite::Forward);
        let first = track.padding_packet().expect("padding after a forwarded packet");
        let second = track.padding_packet().expect("second padding packet");
        assert!(first.header.padding);
        assert!(first.payload.is_empty());
        assert_eq!(first.header.ssrc, 42);
        assert_eq!(first.header.payload_type, 120);
        assert_eq!(first.header.timestamp, twelve.header.timestamp);
        let mut thirteen = packet(13, 3000, false);
        assert_eq!(track.rewrite(&mut thirteen, now), Rewrite::Forward);
        let mut eleven = packet(11, 0, false);
        assert_eq!(track.rewrite(&mut eleven, now), Rewrite::Forward);

        let sent = [
            key.header.sequence_number,
            eleven.header.sequence_number,
            twelve.header.sequence_number,
            first.header.sequence_number,
            second.header.sequence_number,
            thirteen.header.sequence_number,
        ];
        assert_eq!(sent, [65_535, 0, 1, 2, 3, 4], "in order of the outgoing stream, across the wrap");
    }

    #[test]
    fn padding_bit_and_bytes_stay_consistent() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true);
        track.bind(&publisher, &subscriber);
        let mut original = packet(1, 0, true);
        original.header.padding = true;
        let wire = original.marshal().expect("marshals");
        let mut parsed = Packet::unmarshal(&mut wire.clone()).expect("parses");
        assert_eq!(track.rewrite(&mut parsed, Instant::now()), Rewrite::Forward);
        let out = parsed.marshal().expect("rewritten packet marshals");
        assert_eq!(out.len(), parsed.marshal_size());
        let reparsed = Packet::unmarshal(&mut out.clone()).expect("reparses");
        assert!(reparsed.header.padding);
        assert_eq!(reparsed.payload, original.payload, "padding bytes are not payload");
        let padding_len = usize::from(out[out.len() - 1]);
        assert!(padding_len > 0);
        assert!(padding_len <= out.len() - 12);
    }

    #[test]
    fn layer_switch_keeps_numbering() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(65_534, u32::MAX - 100);
        track.bind(&publisher, &subscriber);
        let start = Instant::now();
        let mut key = packet(500, 90_000, true);
        assert_eq!(track.rewrite(&mut key, start), Rewrite::Forward);
        let mut delta = packet(501, 93_000, false);
        assert_eq!(track.rewrite(&mut delta, start), Rewrite::Forward);

        track.restart();
        let later = start + Duration::from_millis(33);
        // Another layer: unrelated numbering, and a delta frame first.
        let mut other_delta = packet(20_000, 7_000_000, false);
        assert_eq!(track.rewrite(&mut other_delta, later), Rewrite::WaitingForKeyframe);
        let mut other_key = packet(20_001, 7_003_000, true);
        assert_eq!(track.rewrite(&mut other_key, later), Rewrite::Forward);
        assert_eq!(other_key.header.sequence_number, 0, "wraps past 65535 without a gap");
        let step = other_key.header.timestamp.wrapping_sub(delta.header.timestamp);
        assert_eq!(step, 33 * 90, "timestamp advances by the wall-clock time, across 2^32");
        let mut other_next = packet(20_002, 7_006_000, false);
        assert_eq!(track.rewrite(&mut other_next, later), Rewrite::Forward);
        assert_eq!(other_next.header.sequence_number, 1);
        assert_eq!(other_next.header.timestamp.wrapping_sub(other_key.header.timestamp), 3000);
    }

    #[test]
    fn new_source_continues_numbering() {
        let (publisher, subscriber) = legs();
        let mut track = DownTrack::new(42, true).with_initial(500, 1000);
        track.bind(&publisher, &subscriber);
        let start = Instant::now();
        let mut key = packet(7, 70, true);
        assert_eq!(track.rewrite(&mut key, start), Rewrite::Forward);

        // The publisher restarts with unrelated numbering 100 ms later.
        track.bind(&publisher, &subscriber);
        let later = start + Duration::from_millis(100);
        let mut restarted = packet(40_000, 3_000_000, true);
        assert_eq!(track.rewrite(&mut restarted, later), Rewrite::Forward);
        assert_eq!(restarted.header.sequence_number, 501);
        assert_eq!(restarted.header.timestamp, 1000 + 9000);
    }

    #[test]
    fn h264_profile_must_match() {
        let offered = NegotiatedCodec {
            payload_type: 102,
            mime_type: "video/H264".into(),
            fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e034".into(),
            clock_rate: 90_000,
        };
        let high = NegotiatedCodec {
            payload_type: 104,
            fmtp: "packetization-mode=1;profile-level-id=640c34".into(),
            ..offered.clone()
        };
        let baseline = NegotiatedCodec {
            payload_type: 106,
            fmtp: "packetization-mode=1;profile-level-id=42e01f".into(),
            ..offered.clone()
        };
        let candidates = vec![high, baseline];
        assert_eq!(match_codec(&offered, &candidates).map(|c| c.payload_type), Some(106));
    }
}
