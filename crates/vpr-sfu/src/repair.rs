//! Retransmissions that name their simulcast layer only by RID.
//!
//! A simulcast publisher that negotiates RTX (RFC 4588) sends each layer's
//! retransmissions on an SSRC that no SDP line declares. The packets carry
//! the `repaired-rtp-stream-id` header extension with the RID of the layer
//! they repair. The library binds repair streams only through
//! `a=ssrc-group:FID` and drops these packets. [`RepairUnwrapper`] turns
//! each one back into the packet it repairs: the layer's SSRC, the original
//! sequence number from the first two payload bytes, the media payload type
//! the RTX codec's `apt` names, and the media payload. [`RidStreams`] runs it
//! in an interceptor wire-ward of the NACK generator, so the generator and
//! the receiver reports count the packet as arrived and the forwarder treats
//! it as a late packet of its layer.
//!
//! RTX packets that repair nothing pass untouched, and the library drops
//! them after the transport-wide feedback has counted them: padding-only
//! probes, and probes that repeat a media packet which already arrived
//! (browsers probe with such repeats once RTX is negotiated). Restoring a
//! repeat would forward it to every subscriber a second time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtp;

use rtc::rtcp::receiver_report::ReceiverReport;

use crate::packet_hook::PacketEdit;
use crate::seq_window::SequenceWindow;

/// Length of the original sequence number that opens an RTX payload.
const OSN_LEN: usize = 2;

/// Repair-stream parameters of an offer, in the offer's own numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairParams {
    /// Header extension id of `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub mid_id: Option<u8>,
    /// Header extension id of `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`.
    pub rid_id: Option<u8>,
    /// Header extension id of
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`.
    pub rrid_id: Option<u8>,
    /// Media payload type of each RTX payload type (`a=fmtp:<rtx> apt=<media>`).
    pub apt: HashMap<u8, u8>,
}

/// Outcome of [`RepairUnwrapper::read`] for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// A media packet, or a packet this module does not handle: unchanged.
    Passed,
    /// An RTX packet turned back into the packet it repairs.
    Restored {
        /// SSRC of the repaired layer.
        ssrc: u32,
        /// The original sequence number.
        sequence_number: u16,
    },
    /// An RTX packet that could not be restored: padding only, or no layer
    /// seen yet with its RID.
    Unusable,
    /// An RTX packet repeating a packet of its layer that already arrived.
    Repeat,
}

/// The sans-IO core: learns which SSRC carries each RID and restores RTX
/// packets onto those SSRCs.
#[derive(Debug, Default)]
pub struct RepairUnwrapper {
    params: RepairParams,
    /// SSRC of each layer, by (mid, rid) as its media packets name them.
    layers: HashMap<(Bytes, Bytes), u32>,
    /// Layer SSRC of each RTX SSRC once a packet named its RID. Later
    /// packets of the stream may leave the extension out.
    repairs: HashMap<u32, (u32, Bytes)>,
    /// Recent arrivals of each layer in `layers`.
    arrivals: HashMap<u32, SequenceWindow>,
}

impl RepairUnwrapper {
    /// Creates an unwrapper for the offer these parameters came from.
    pub fn new(params: RepairParams) -> Self {
        Self { params, ..Self::default() }
    }

    /// Learns from a media packet or restores an RTX packet in place.
    pub fn read(&mut self, packet: &mut rtp::Packet) -> Repair {
        let Some(&media_type) = self.params.apt.get(&packet.header.payload_type) else {
            self.on_media(&packet.header);
            return Repair::Passed;
        };
        let Some(ssrc) = self.layer_of_repair(&packet.header) else {
            return Repair::Unusable;
        };
        if packet.payload.len() <= OSN_LEN {
            return Repair::Unusable;
        }
        let sequence_number = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
        let fresh = self.arrivals.get_mut(&ssrc).is_some_and(|arrivals| arrivals.insert(sequence_number, false).is_none());
        if !fresh {
            return Repair::Repeat;
        }
        packet.payload = packet.payload.slice(OSN_LEN..);
        packet.header.ssrc = ssrc;
        packet.header.sequence_number = sequence_number;
        packet.header.payload_type = media_type;
        packet.header.padding = false;
        if let Some(rrid_id) = self.params.rrid_id {
            // Best effort: a packet without the extension has nothing to remove.
            let _ = packet.header.del_extension(rrid_id);
        }
        Repair::Restored { ssrc, sequence_number }
    }

    /// Returns true when `ssrc` carries a layer whose packets named its RID.
    pub fn is_layer(&self, ssrc: u32) -> bool {
        self.arrivals.contains_key(&ssrc)
    }

    /// RID of the layer an SSRC was restored onto, for logs.
    pub fn rid_of_repair(&self, rtx_ssrc: u32) -> Option<&Bytes> {
        self.repairs.get(&rtx_ssrc).map(|(_, rid)| rid)
    }

    fn on_media(&mut self, header: &rtp::Header) {
        if let Some(arrivals) = self.arrivals.get_mut(&header.ssrc) {
            arrivals.insert(header.sequence_number, false);
            return;
        }
        let (Some(mid_id), Some(rid_id)) = (self.params.mid_id, self.params.rid_id) else {
            return;
        };
        // Audio and single-encoding video carry no RID, so it is looked up first.
        let Some(rid) = header.get_extension(rid_id) else { return };
        let Some(mid) = header.get_extension(mid_id) else { return };
        self.layers.insert((mid, rid), header.ssrc);
        self.arrivals.entry(header.ssrc).or_default().insert(header.sequence_number, false);
    }

    fn layer_of_repair(&mut self, header: &rtp::Header) -> Option<u32> {
        let rrid = self.params.rrid_id.and_then(|id| header.get_extension(id));
        let Some(rrid) = rrid else {
            return self.repairs.get(&header.ssrc).map(|(ssrc, _)| *ssrc);
        };
        let mid = self.params.mid_id.and_then(|id| header.get_extension(id));
        let ssrc = match mid {
            Some(mid) => self.layers.get(&(mid, rrid.clone())).copied(),
            // Without a mid, a RID that only one section uses still names one layer.
            None => {
                let mut matching = self.layers.iter().filter(|((_, rid), _)| *rid == rrid);
                match (matching.next(), matching.next()) {
                    (Some((_, &ssrc)), None) => Some(ssrc),
                    _ => None,
                }
            }
        }?;
        self.repairs.insert(header.ssrc, (ssrc, rrid));
        Some(ssrc)
    }
}

/// Count of packets restored by [`RidStreams`] on one peer connection.
#[derive(Debug, Clone, Default)]
pub struct RestoredCount(Arc<AtomicU64>);

impl RestoredCount {
    /// Returns the packets restored since the last call, and resets the count.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// Edits for the streams of simulcast layers named by RID, run by a
/// [`PacketHook`](crate::packet_hook::PacketHook): inbound RTX packets are
/// restored by a [`RepairUnwrapper`], and on renegotiated sessions the
/// receiver reports leave out report blocks about those layers.
///
/// A browser stops sending the mid and RID header extensions on a stream
/// once a report block acknowledges it, and the library clears the SSRC of
/// each RID whenever it applies a new description. On a session that
/// renegotiates, a layer whose packets no longer name their RID would then
/// be dropped after the next offer, so its reception is never acknowledged.
pub struct RidStreams {
    unwrapper: RepairUnwrapper,
    restored: RestoredCount,
    withhold_layer_reports: bool,
}

impl RidStreams {
    /// Creates the edits of one peer connection, which add each restored
    /// packet to `restored`. `renegotiated` withholds report blocks about
    /// RID-named layers.
    pub fn new(params: RepairParams, restored: RestoredCount, renegotiated: bool) -> Self {
        Self { unwrapper: RepairUnwrapper::new(params), restored, withhold_layer_reports: renegotiated }
    }
}

impl PacketEdit for RidStreams {
    fn inbound(&mut self, msg: &mut TaggedPacket) -> bool {
        let Packet::Rtp(packet) = &mut msg.message.packet else { return true };
        let rtx_ssrc = packet.header.ssrc;
        if let Repair::Restored { ssrc, sequence_number } = self.unwrapper.read(packet) {
            self.restored.0.fetch_add(1, Ordering::Relaxed);
            let rid = self.unwrapper.rid_of_repair(rtx_ssrc).map(|rid| String::from_utf8_lossy(rid).into_owned());
            tracing::debug!(rtx_ssrc, ssrc, sequence_number, rid, "restored a retransmitted packet");
        }
        true
    }

    fn outbound(&mut self, msg: &mut TaggedPacket) {
        if !self.withhold_layer_reports {
            return;
        }
        let Packet::Rtcp(packets) = &mut msg.message.packet else { return };
        for packet in packets.iter_mut() {
            let Some(report) = packet.as_any().downcast_ref::<ReceiverReport>() else { continue };
            if !report.reports.iter().any(|block| self.unwrapper.is_layer(block.ssrc)) {
                continue;
            }
            let mut trimmed = report.clone();
            trimmed.reports.retain(|block| !self.unwrapper.is_layer(block.ssrc));
            *packet = Box::new(trimmed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: u8 = 1;
    const RID: u8 = 2;
    const RRID: u8 = 3;
    const VP8: u8 = 96;
    const RTX: u8 = 97;

    fn unwrapper() -> RepairUnwrapper {
        RepairUnwrapper::new(RepairParams {
            mid_id: Some(MID),
            rid_id: Some(RID),
            rrid_id: Some(RRID),
            apt: HashMap::from([(RTX, VP8)]),
        })
    }

    fn packet(ssrc: u32, payload_type: u8, sequence_number: u16, extensions: &[(u8, &'static [u8])], payload: &[u8]) -> rtp::Packet {
        let mut header = rtp::Header {
            version: 2,
            ssrc,
            payload_type,
            sequence_number,
            timestamp: 9000,
            ..Default::default()
        };
        for &(id, value) in extensions {
            header.set_extension(id, Bytes::from_static(value)).expect("setting an extension failed");
        }
        rtp::Packet { header, payload: Bytes::copy_from_slice(payload) }
    }

    fn layers(unwrapper: &mut RepairUnwrapper) {
        for (ssrc, rid) in [(10, b"q" as &'static [u8]), (20, b"h"), (30, b"f")] {
            let mut media = packet(ssrc, VP8, 100, &[(MID, b"1"), (RID, rid)], &[0x90, 0x01]);
            assert_eq!(unwrapper.read(&mut media), Repair::Passed);
        }
    }

    #[test]
    fn rtx_restored_onto_named_layer() {
        let mut unwrapper = unwrapper();
        layers(&mut unwrapper);
        let mut rtx = packet(21, RTX, 7, &[(MID, b"1"), (RRID, b"h")], &[0x12, 0x34, 0xaa, 0xbb]);
        assert_eq!(unwrapper.arrivals.len(), 3);

        assert_eq!(unwrapper.read(&mut rtx), Repair::Restored { ssrc: 20, sequence_number: 0x1234 });
        assert_eq!(rtx.header.ssrc, 20);
        assert_eq!(rtx.header.sequence_number, 0x1234);
        assert_eq!(rtx.header.payload_type, VP8);
        assert_eq!(&rtx.payload[..], &[0xaa, 0xbb]);
        assert_eq!(rtx.header.get_extension(RRID), None);
        assert_eq!(rtx.header.get_extension(MID).as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn rtx_without_rrid_keeps_layer() {
        let mut unwrapper = unwrapper();
        layers(&mut unwrapper);
        let mut first = packet(31, RTX, 1, &[(MID, b"1"), (RRID, b"f")], &[0, 5, 1]);
        assert_eq!(unwrapper.read(&mut first), Repair::Restored { ssrc: 30, sequence_number: 5 });

        let mut later = packet(31, RTX, 2, &[], &[0, 9, 1]);
        assert_eq!(unwrapper.read(&mut later), Repair::Restored { ssrc: 30, sequence_number: 9 });
    }

    #[test]
    fn repeat_of_arrived_packet_stays_rtx() {
        let mut unwrapper = unwrapper();
        layers(&mut unwrapper);
        // Media packet 100 of every layer arrived in `layers`.
        let mut probe = packet(21, RTX, 1, &[(MID, b"1"), (RRID, b"h")], &[0, 100, 1]);
        assert_eq!(unwrapper.read(&mut probe), Repair::Repeat);
        assert_eq!((probe.header.ssrc, probe.header.payload_type), (21, RTX));

        let mut repair = packet(21, RTX, 2, &[(MID, b"1"), (RRID, b"h")], &[0, 101, 1]);
        assert_eq!(unwrapper.read(&mut repair), Repair::Restored { ssrc: 20, sequence_number: 101 });
        let mut again = packet(21, RTX, 3, &[], &[0, 101, 1]);
        assert_eq!(unwrapper.read(&mut again), Repair::Repeat);
    }

    #[test]
    fn unknown_rid_and_padding_unrestored() {
        let mut unwrapper = unwrapper();
        layers(&mut unwrapper);
        let mut unknown = packet(41, RTX, 1, &[(MID, b"1"), (RRID, b"x")], &[0, 5, 1]);
        assert_eq!(unwrapper.read(&mut unknown), Repair::Unusable);
        assert_eq!(unknown.header.ssrc, 41);

        let mut probe = packet(21, RTX, 2, &[(MID, b"1"), (RRID, b"h")], &[]);
        assert_eq!(unwrapper.read(&mut probe), Repair::Unusable);
        assert_eq!(probe.header.ssrc, 21);
    }

    #[test]
    fn rid_without_mid_needs_one_layer() {
        let mut unwrapper = unwrapper();
        layers(&mut unwrapper);
        let mut rtx = packet(11, RTX, 1, &[(RRID, b"q")], &[0, 3, 1]);
        assert_eq!(unwrapper.read(&mut rtx), Repair::Restored { ssrc: 10, sequence_number: 3 });

        let mut other_section = packet(50, VP8, 1, &[(MID, b"2"), (RID, b"q")], &[1]);
        unwrapper.read(&mut other_section);
        let mut ambiguous = packet(12, RTX, 1, &[(RRID, b"q")], &[0, 3, 1]);
        assert_eq!(unwrapper.read(&mut ambiguous), Repair::Unusable);
    }

    #[test]
    fn offer_without_rtx_passes_all() {
        let mut unwrapper = RepairUnwrapper::new(RepairParams::default());
        let mut rtx = packet(21, RTX, 7, &[(MID, b"1"), (RRID, b"h")], &[0x12, 0x34, 0xaa]);
        assert_eq!(unwrapper.read(&mut rtx), Repair::Passed);
        assert_eq!(rtx.header.ssrc, 21);
    }

    fn report_blocks(renegotiated: bool) -> Vec<u32> {
        use rtc::rtcp::reception_report::ReceptionReport;
        use rtc::shared::TransportContext;

        let mut streams = RidStreams::new(unwrapper().params, RestoredCount::default(), renegotiated);
        layers(&mut streams.unwrapper);
        let blocks = [10, 20, 99].map(|ssrc| ReceptionReport { ssrc, ..Default::default() }).to_vec();
        let report = ReceiverReport { ssrc: 1, reports: blocks, profile_extensions: Bytes::new() };
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(report)];
        let mut msg = TaggedPacket {
            now: std::time::Instant::now(),
            transport: TransportContext::default(),
            message: Packet::Rtcp(packets).into(),
        };
        streams.outbound(&mut msg);
        let Packet::Rtcp(packets) = &msg.message.packet else { panic!("not RTCP") };
        let report = packets[0].as_any().downcast_ref::<ReceiverReport>().expect("not a receiver report");
        report.reports.iter().map(|block| block.ssrc).collect()
    }

    #[test]
    fn renegotiated_reports_skip_rid_layers() {
        assert_eq!(report_blocks(true), vec![99]);
        assert_eq!(report_blocks(false), vec![10, 20, 99]);
    }
}
