//! Routing of inbound RTCP compound packets to a known stream.
//!
//! The `rtc` library hands an inbound compound packet to the application
//! under the track that owns the first SSRC its first packet names, and
//! drops the whole compound when no track owns that SSRC. The library
//! routes no retransmission (RTX) SSRC: once the server has retransmitted
//! to Chromium, its REMB names the RTX SSRC before the media SSRC, and so
//! would a receiver report whose first block is about the RTX stream. Every
//! REMB, PLI and report block in such a compound was lost to the
//! forwarder. [`DeliverRtcp`] marks inbound RTCP for the application and,
//! when the first SSRC is unknown, moves a packet or a list entry that
//! names a known stream to the front. The order of packets in a compound
//! and of SSRCs in these lists carries no meaning.

use std::collections::HashSet;

use rtc::interceptor::{Attribute, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;

use crate::packet_hook::PacketEdit;

/// Edit that marks every inbound RTCP packet for delivery to the
/// application and makes its first SSRC one the library routes. The
/// interceptors after it still act on the packet.
#[derive(Debug, Default)]
pub struct DeliverRtcp {
    /// Primary SSRCs of the bound local and remote streams.
    known: HashSet<u32>,
}

impl PacketEdit for DeliverRtcp {
    fn inbound(&mut self, packet: &mut TaggedPacket) -> bool {
        if let Packet::Rtcp(packets) = &mut packet.message.packet {
            route_to_known(packets, &self.known);
            packet.message.add(Attribute::DeliverToApplication);
        }
        true
    }

    fn local_stream_bound(&mut self, info: &StreamInfo) {
        self.known.insert(info.ssrc);
    }

    fn local_stream_unbound(&mut self, info: &StreamInfo) {
        self.known.remove(&info.ssrc);
    }

    fn remote_stream_bound(&mut self, info: &StreamInfo) {
        self.known.insert(info.ssrc);
    }

    fn remote_stream_unbound(&mut self, info: &StreamInfo) {
        self.known.remove(&info.ssrc);
    }
}

/// Reorders `packets` so that the first SSRC of the first packet is in
/// `known`, when some packet names a known SSRC; leaves them as they are
/// otherwise.
pub fn route_to_known(packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>, known: &HashSet<u32>) {
    let first_known = |packet: &dyn rtc::rtcp::Packet| {
        packet.destination_ssrc().first().is_some_and(|ssrc| known.contains(ssrc))
    };
    if packets.first().is_none_or(|packet| first_known(packet.as_ref())) {
        return;
    }
    if let Some(index) = packets.iter().position(|packet| first_known(packet.as_ref())) {
        let packet = packets.remove(index);
        packets.insert(0, packet);
        return;
    }
    for index in 0..packets.len() {
        if let Some(reordered) = with_known_ssrc_first(packets[index].as_ref(), known) {
            packets.remove(index);
            packets.insert(0, reordered);
            return;
        }
    }
}

/// Returns a copy of a receiver report, sender report or REMB whose SSRC
/// list has a known SSRC first, or `None` for other packets and lists that
/// name no known SSRC.
fn with_known_ssrc_first(packet: &dyn rtc::rtcp::Packet, known: &HashSet<u32>) -> Option<Box<dyn rtc::rtcp::Packet>> {
    let any = packet.as_any();
    if let Some(report) = any.downcast_ref::<ReceiverReport>() {
        let mut report = report.clone();
        known_block_first(&mut report.reports, known)?;
        return Some(Box::new(report));
    }
    if let Some(report) = any.downcast_ref::<SenderReport>() {
        let mut report = report.clone();
        known_block_first(&mut report.reports, known)?;
        return Some(Box::new(report));
    }
    if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
        let mut remb = remb.clone();
        let index = remb.ssrcs.iter().position(|ssrc| known.contains(ssrc))?;
        remb.ssrcs.swap(0, index);
        return Some(Box::new(remb));
    }
    None
}

/// Moves the first report block about a known SSRC to the front.
fn known_block_first(blocks: &mut [ReceptionReport], known: &HashSet<u32>) -> Option<()> {
    let index = blocks.iter().position(|block| known.contains(&block.ssrc))?;
    blocks.swap(0, index);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

    const MEDIA: u32 = 1111;
    const RTX: u32 = 2222;

    fn block(ssrc: u32) -> ReceptionReport {
        ReceptionReport { ssrc, ..Default::default() }
    }

    fn first_ssrc(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<u32> {
        packets.first()?.destination_ssrc().first().copied()
    }

    fn known() -> HashSet<u32> {
        HashSet::from([MEDIA])
    }

    #[test]
    fn route_keeps_compound_that_starts_known() {
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport { ssrc: 9, reports: vec![block(MEDIA), block(RTX)], ..Default::default() }),
            Box::new(PictureLossIndication { sender_ssrc: 9, media_ssrc: RTX }),
        ];
        route_to_known(&mut packets, &known());
        assert_eq!(first_ssrc(&packets), Some(MEDIA));
        assert_eq!(packets.len(), 2);
        assert!(packets[1].as_any().is::<PictureLossIndication>());
    }

    #[test]
    fn route_moves_known_packet_first() {
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport { ssrc: 9, reports: vec![block(RTX)], ..Default::default() }),
            Box::new(PictureLossIndication { sender_ssrc: 9, media_ssrc: MEDIA }),
        ];
        route_to_known(&mut packets, &known());
        assert_eq!(first_ssrc(&packets), Some(MEDIA));
        assert!(packets[0].as_any().is::<PictureLossIndication>());
        assert!(packets[1].as_any().is::<ReceiverReport>());
    }

    #[test]
    fn route_reorders_report_blocks_and_remb_ssrcs() {
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport { ssrc: 9, reports: vec![block(RTX), block(MEDIA)], ..Default::default() }),
            Box::new(ReceiverEstimatedMaximumBitrate { sender_ssrc: 9, bitrate: 500_000.0, ssrcs: vec![RTX, MEDIA] }),
        ];
        route_to_known(&mut packets, &known());
        assert_eq!(first_ssrc(&packets), Some(MEDIA));
        let report = packets[0].as_any().downcast_ref::<ReceiverReport>().expect("the report stays first");
        let blocks: Vec<u32> = report.reports.iter().map(|b| b.ssrc).collect();
        assert_eq!(blocks, vec![MEDIA, RTX]);
        let remb = packets[1].as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>().expect("the REMB follows");
        assert_eq!(remb.ssrcs, vec![RTX, MEDIA], "only the first packet is reordered");
    }

    #[test]
    fn route_reorders_lone_remb() {
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> =
            vec![Box::new(ReceiverEstimatedMaximumBitrate { sender_ssrc: 9, bitrate: 500_000.0, ssrcs: vec![RTX, MEDIA] })];
        route_to_known(&mut packets, &known());
        assert_eq!(first_ssrc(&packets), Some(MEDIA));
    }

    #[test]
    fn route_leaves_compound_naming_no_known_ssrc() {
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> =
            vec![Box::new(ReceiverReport { ssrc: 9, reports: vec![block(RTX)], ..Default::default() })];
        route_to_known(&mut packets, &known());
        assert_eq!(first_ssrc(&packets), Some(RTX));
    }

    #[test]
    fn deliver_rtcp_learns_bound_streams() {
        let mut edit = DeliverRtcp::default();
        edit.local_stream_bound(&StreamInfo { ssrc: MEDIA, ssrc_rtx: Some(RTX), ..Default::default() });
        assert_eq!(edit.known, known(), "the RTX SSRC is not routed by the library");
        edit.local_stream_unbound(&StreamInfo { ssrc: MEDIA, ..Default::default() });
        assert!(edit.known.is_empty());
    }
}
