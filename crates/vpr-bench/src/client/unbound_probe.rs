//! Padding probes on SSRCs the receiver has not bound, and a tally of how
//! the receiver's transport-wide feedback reports them.
//!
//! A browser probes the path with padding-only packets before a stream is
//! bound: on SSRC 0, or on an RTX or simulcast SSRC that no SDP line
//! declares. Its congestion controller reads a probe that the feedback
//! omits as lost, so the probe fails and the higher layers never start.
//! [`UnboundProbes`] sends such probes beside a publisher's media and
//! records, for every transport-wide sequence number it sent, whether a
//! transport-wide congestion control report (TWCC) names it as received.
//!
//! The interceptor sits wire-ward of every default interceptor and assigns
//! the transport-wide sequence numbers itself, to media and probes alike, so
//! the probes take their place in one gap-free sequence. (The default
//! interceptors of `rtc` 0.21.1 only receive transport-wide feedback; they
//! number nothing.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

/// Position in the chain: wire-ward of the congestion-control slot (1 000),
/// the lowest that `rtc` 0.21.1 names.
pub const UNBOUND_PROBE_SLOT: usize = 500;

/// URI of the transport-wide sequence number header extension.
const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Media packets between two rounds of probes (one on each unbound SSRC).
const MEDIA_PACKETS_PER_PROBE_ROUND: u32 = 4;

/// Kind of stream a transport-wide sequence number was sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeStream {
    /// A media stream of the publisher.
    Media,
    /// Padding on SSRC 0.
    SsrcZero,
    /// Padding on an SSRC no SDP line declares.
    Undeclared,
}

/// Counts for one kind of stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCounts {
    /// Packets sent with a transport-wide sequence number.
    pub sent: u64,
    /// Of them, reported as received by some feedback packet.
    pub reported_received: u64,
    /// Of them, reported as not received (and never as received later).
    pub reported_lost: u64,
}

/// Counts per kind of stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Media packets of the publisher's own streams.
    pub media: ProbeCounts,
    /// Padding on SSRC 0.
    pub ssrc_zero: ProbeCounts,
    /// Padding on the undeclared SSRC.
    pub undeclared: ProbeCounts,
}

/// Fate of one transport-wide sequence number.
#[derive(Debug, Clone, Copy)]
struct Sent {
    stream: ProbeStream,
    received: bool,
    reported_lost: bool,
}

/// Sent sequence numbers and the feedback about them, shared with the
/// publisher that reads the report.
#[derive(Debug, Default)]
pub struct ProbeLog {
    sent: HashMap<u16, Sent>,
}

impl ProbeLog {
    fn record_sent(&mut self, sequence: u16, stream: ProbeStream) {
        self.sent.insert(sequence, Sent { stream, received: false, reported_lost: false });
    }

    fn record_feedback(&mut self, feedback: &TransportLayerCc) {
        let mut sequence = feedback.base_sequence_number;
        let mut remaining = feedback.packet_status_count;
        for chunk in &feedback.packet_chunks {
            let symbols: Vec<SymbolTypeTcc> = match chunk {
                PacketStatusChunk::RunLengthChunk(run) => {
                    vec![run.packet_status_symbol; usize::from(run.run_length)]
                }
                PacketStatusChunk::StatusVectorChunk(vector) => vector.symbol_list.clone(),
            };
            for symbol in symbols {
                if remaining == 0 {
                    return;
                }
                if let Some(sent) = self.sent.get_mut(&sequence) {
                    if symbol == SymbolTypeTcc::PacketNotReceived {
                        sent.reported_lost = true;
                    } else {
                        sent.received = true;
                    }
                }
                sequence = sequence.wrapping_add(1);
                remaining -= 1;
            }
        }
    }

    /// Counts per kind of stream so far.
    pub fn report(&self) -> ProbeReport {
        let mut report = ProbeReport::default();
        for sent in self.sent.values() {
            let counts = match sent.stream {
                ProbeStream::Media => &mut report.media,
                ProbeStream::SsrcZero => &mut report.ssrc_zero,
                ProbeStream::Undeclared => &mut report.undeclared,
            };
            counts.sent += 1;
            if sent.received {
                counts.reported_received += 1;
            } else if sent.reported_lost {
                counts.reported_lost += 1;
            }
        }
        report
    }
}

/// Interceptor that numbers every outbound RTP packet on the transport-wide
/// sequence and sends padding probes on SSRC 0 and on an undeclared SSRC.
pub struct UnboundProbes {
    log: Arc<Mutex<ProbeLog>>,
    /// Transport-wide extension id of each bound local stream.
    extension_ids: HashMap<u32, u8>,
    undeclared_ssrc: u32,
    next_sequence: u16,
    media_since_probe: u32,
    probe_sequence: u16,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl UnboundProbes {
    /// Creates the interceptor and the log it writes to.
    pub fn new() -> (Self, Arc<Mutex<ProbeLog>>) {
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let interceptor = Self {
            log: log.clone(),
            extension_ids: HashMap::new(),
            undeclared_ssrc: rand::random::<u32>() | 1,
            next_sequence: 0,
            media_since_probe: 0,
            probe_sequence: 0,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        };
        (interceptor, log)
    }

    fn stamp(&mut self, packet: &mut rtp::Packet, extension_id: u8, stream: ProbeStream) {
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        let mut value = BytesMut::with_capacity(2);
        value.put_u16(sequence);
        if packet.header.set_extension(extension_id, value.freeze()).is_ok() {
            self.log.lock().expect("probe log poisoned").record_sent(sequence, stream);
        }
    }

    /// Queues one padding-only probe on `ssrc`, shaped like `media`.
    fn probe(&mut self, ssrc: u32, media: &MediaPacket, stream: ProbeStream) {
        let mut packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                padding: true,
                payload_type: media.payload_type,
                sequence_number: self.probe_sequence,
                timestamp: 0,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::new(),
        };
        self.stamp(&mut packet, media.extension_id, stream);
        self.write_queue.push_back(TaggedPacket {
            now: media.now,
            transport: media.transport,
            message: AttributedPacket::new(Packet::Rtp(packet)),
        });
    }
}

/// Fields a probe copies from the media packet it follows.
struct MediaPacket {
    now: Instant,
    transport: TransportContext,
    payload_type: u8,
    extension_id: u8,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for UnboundProbes {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let mut log = self.log.lock().expect("probe log poisoned");
            for feedback in packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>()) {
                log.record_feedback(feedback);
            }
        }
        self.read_queue.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        let mut media = None;
        if let Packet::Rtp(packet) = &mut message.message.packet {
            if let Some(&extension_id) = self.extension_ids.get(&packet.header.ssrc) {
                self.stamp(packet, extension_id, ProbeStream::Media);
                media = Some(MediaPacket {
                    now: message.now,
                    transport: message.transport,
                    payload_type: packet.header.payload_type,
                    extension_id,
                });
            }
        }
        self.write_queue.push_back(message);
        if let Some(media) = media {
            self.media_since_probe += 1;
            if self.media_since_probe >= MEDIA_PACKETS_PER_PROBE_ROUND {
                self.media_since_probe = 0;
                self.probe_sequence = self.probe_sequence.wrapping_add(1);
                self.probe(0, &media, ProbeStream::SsrcZero);
                self.probe(self.undeclared_ssrc, &media, ProbeStream::Undeclared);
            }
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for UnboundProbes {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let extension = info.rtp_header_extensions.iter().find(|e| e.uri == TRANSPORT_CC_URI);
        if let Some(id) = extension.and_then(|e| u8::try_from(e.id).ok()) {
            self.extension_ids.insert(info.ssrc, id);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.extension_ids.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
    };

    #[test]
    fn probe_log_reads_chunks_across_wrap() {
        let mut log = ProbeLog::default();
        for sequence in [65_534, 65_535, 0, 1, 2] {
            log.record_sent(sequence, ProbeStream::SsrcZero);
        }
        log.record_sent(3, ProbeStream::Media);
        let feedback = TransportLayerCc {
            base_sequence_number: 65_534,
            packet_status_count: 5,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                    run_length: 3,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    // The third symbol lies beyond the status count.
                    symbol_list: vec![
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedLargeDelta,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                    ],
                }),
            ],
            ..Default::default()
        };
        log.record_feedback(&feedback);
        let report = log.report();
        assert_eq!(
            report.ssrc_zero,
            ProbeCounts { sent: 5, reported_received: 4, reported_lost: 1 }
        );
        assert_eq!(report.media, ProbeCounts { sent: 1, reported_received: 0, reported_lost: 0 });
    }
}
