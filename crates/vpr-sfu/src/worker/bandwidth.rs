//! Send-side bandwidth estimation toward one subscriber: transport-wide
//! feedback into the estimator, the media rate it needs, and probe clusters.
//!
//! A probe cluster is sent as padding-only packets on a video down-track,
//! right after a frame's last packet so that none lands inside a frame.
//! The library pads an empty payload to four bytes, so these packets are
//! small (84 bytes with a full CSRC list) and a cluster takes many of them.

use std::time::{Duration, Instant};

use rtc::rtp::packet::Packet;

use crate::bwe::{EstimatorConfig, ProbeCluster, ReportQueue, SendSideEstimator, MIN_PADDING_FRACTION};

/// Window of the media rate handed to the prober.
const MEDIA_RATE_WINDOW: Duration = Duration::from_millis(500);
/// Most padding packets sent after one frame. A larger burst overflows the
/// default receive buffer of a client socket on loopback.
const MAX_PADDING_PER_FRAME: usize = 96;
/// RTP size of a padding-only packet: header with fifteen CSRCs,
/// transport-wide sequence number extension and four bytes of padding.
const PADDING_PACKET_BYTES: u64 = 84;
/// Interval of the estimate's debug log line.
const LOG_INTERVAL: Duration = Duration::from_millis(500);

/// A probe cluster being sent.
struct ActiveProbe {
    cluster: ProbeCluster,
    started: Instant,
    /// Padding sent so far.
    sent_bytes: u64,
    /// Media sent since the cluster started.
    media_bytes: u64,
    /// Time from the cluster's start to its last burst of padding.
    last_burst: Duration,
}

impl ActiveProbe {
    fn new(cluster: ProbeCluster, started: Instant) -> Self {
        Self { cluster, started, sent_bytes: 0, media_bytes: 0, last_burst: Duration::ZERO }
    }

    /// Returns the padding bytes to send `elapsed` after the cluster's start.
    /// They bring the total to the cluster's target, counting the media
    /// actually sent, so the cluster keeps its target when a layer switch
    /// has just changed the media rate. They are never less than the minimum
    /// share of padding for the time since the last burst, so every frame
    /// carries padding and a cluster that one keyframe fills can still be
    /// measured over its whole duration.
    fn owed_padding(&self, elapsed: Duration) -> u64 {
        let bytes_per_second = self.cluster.target_bps / 8.0;
        let total = (bytes_per_second * elapsed.as_secs_f64()) as u64;
        let since_burst = elapsed.saturating_sub(self.last_burst).as_secs_f64();
        let floor = (MIN_PADDING_FRACTION * bytes_per_second * since_burst) as u64;
        total.saturating_sub(self.media_bytes + self.sent_bytes).max(floor)
    }
}

/// Estimation state of one subscriber connection.
pub(super) struct Bandwidth {
    estimator: SendSideEstimator,
    reports: ReportQueue,
    probe: Option<ActiveProbe>,
    /// The subscriber sent a REMB, so the estimate applies even without
    /// transport-wide feedback.
    remb_seen: bool,
    /// The subscriber sends neither transport-wide feedback nor REMB, and
    /// one of its receiver reports showed heavy loss: from then on the
    /// estimate follows its receiver reports.
    report_only: bool,
    /// Whether a higher estimate would give some down-track a better layer;
    /// probing is pointless otherwise.
    constrained: bool,
    window_start: Instant,
    window_bytes: u64,
    media_rate_bps: f64,
    next_log: Instant,
    reported: RecentPackets,
}

impl Bandwidth {
    pub fn new(reports: ReportQueue, now: Instant) -> Self {
        Self {
            estimator: SendSideEstimator::new(EstimatorConfig::default(), now),
            reports,
            probe: None,
            remb_seen: false,
            report_only: false,
            constrained: false,
            window_start: now,
            window_bytes: 0,
            media_rate_bps: 0.0,
            next_log: now + LOG_INTERVAL,
            reported: RecentPackets::default(),
        }
    }

    /// Returns the current estimate in bit/s.
    pub fn estimate_bps(&self) -> f64 {
        self.estimator.estimate_bps()
    }

    /// Returns the loss fraction of the latest feedback.
    pub fn recent_loss(&self) -> f64 {
        self.estimator.recent_loss()
    }

    /// Feeds the transport-wide feedback the interceptor chain resolved.
    /// Returns true when the debug log line is due.
    pub fn drain_feedback(&mut self, now: Instant) -> bool {
        for mut batch in self.reports.drain_batches() {
            // A retransmission repeats a packet already reported. A receiver
            // drops one whose original arrived late as a replay, before
            // recording it, so its fate carries no information about the path.
            batch.reports.retain(|report| self.reported.insert((report.ssrc, report.rtp_sequence_number)));
            self.estimator.on_packet_reports(batch.received_at, &batch.reports);
        }
        if now >= self.next_log {
            self.next_log = now + LOG_INTERVAL;
            return true;
        }
        false
    }

    /// Applies a REMB value from the subscriber.
    pub fn on_remb(&mut self, now: Instant, bitrate_bps: f64) {
        self.remb_seen = true;
        self.estimator.on_remb(now, bitrate_bps);
    }

    /// Applies the loss fraction of a receiver report from the subscriber.
    pub fn on_receiver_report(&mut self, now: Instant, fraction_lost: f32, round_trip: Option<Duration>) {
        let loss = f64::from(fraction_lost);
        let feedback = self.remb_seen || self.estimator.has_transport_feedback(now);
        if !feedback && !self.report_only && loss > crate::bwe::HIGH_LOSS {
            self.report_only = true;
            self.estimator.start_report_only(now, self.media_rate_bps * (1.0 - loss));
        }
        self.estimator.on_receiver_report(now, fraction_lost, round_trip);
    }

    /// Returns true once receiver reports alone drive the estimate (see
    /// `report_only`).
    pub fn report_only(&self) -> bool {
        self.report_only
    }

    /// Returns true once the subscriber sent a REMB.
    pub fn remb_seen(&self) -> bool {
        self.remb_seen
    }

    /// Returns the estimator's state for a log line.
    pub fn snapshot(&self, now: Instant) -> crate::bwe::EstimatorSnapshot {
        self.estimator.snapshot(now)
    }

    /// Counts one forwarded media packet of `bytes`.
    pub fn on_media_sent(&mut self, now: Instant, bytes: usize) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= MEDIA_RATE_WINDOW {
            self.media_rate_bps = self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64();
            self.window_start = now;
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
        if let Some(probe) = self.probe.as_mut() {
            probe.media_bytes += bytes as u64;
        }
    }

    /// Records that a down-track switched layer at `now`, starting with a
    /// keyframe.
    pub fn on_layer_switch(&mut self, now: Instant) {
        self.estimator.on_layer_switch(now);
    }

    /// Records whether the allocation held some down-track below its best
    /// layer.
    pub fn set_constrained(&mut self, constrained: bool) {
        self.constrained = constrained;
    }

    /// Called after the last packet of a video frame: starts a cluster when
    /// the estimator requests one, and returns the number of padding
    /// packets the active cluster is owed now, with its id.
    pub fn frame_ended(&mut self, now: Instant) -> Option<(u32, usize)> {
        if self.probe.is_none() {
            if !self.constrained {
                return None;
            }
            let cluster = self.estimator.poll_probe(now, self.media_rate_bps)?;
            self.probe = Some(ActiveProbe::new(cluster, now));
            return None;
        }
        let probe = self.probe.as_mut()?;
        let elapsed = now.saturating_duration_since(probe.started);
        if elapsed > probe.cluster.duration {
            self.probe = None;
            return None;
        }
        let count = (probe.owed_padding(elapsed) / PADDING_PACKET_BYTES) as usize;
        let count = count.min(MAX_PADDING_PER_FRAME);
        probe.sent_bytes += count as u64 * PADDING_PACKET_BYTES;
        probe.last_burst = elapsed;
        Some((probe.cluster.id, count))
    }

    /// Records one padding packet sent for cluster `cluster_id`.
    pub fn on_probe_packet_sent(&mut self, cluster_id: u32, packet: &Packet) {
        self.estimator
            .on_probe_packet_sent(cluster_id, packet.header.ssrc, packet.header.sequence_number);
    }
}

/// Packets reported recently, by SSRC and sequence number: one bit per
/// sequence number and stream, so each report costs a few word operations.
/// A bit is cleared again when the stream's newest sequence number moves half
/// the sequence space past it.
#[derive(Default)]
struct RecentPackets {
    streams: Vec<ReportedStream>,
}

struct ReportedStream {
    ssrc: u32,
    newest: u16,
    bits: Box<[u64; 1024]>,
}

impl ReportedStream {
    fn flip(&mut self, seq: u16, set: bool) -> bool {
        let (word, mask) = (usize::from(seq >> 6), 1u64 << (seq & 63));
        let was = self.bits[word] & mask != 0;
        if set {
            self.bits[word] |= mask;
        } else {
            self.bits[word] &= !mask;
        }
        was
    }
}

impl RecentPackets {
    /// Streams remembered; more SSRCs than this replace the oldest.
    const MAX_STREAMS: usize = 16;

    /// Records a packet; returns false when it was reported before.
    fn insert(&mut self, (ssrc, seq): (u32, u16)) -> bool {
        let index = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(index) => index,
            None => {
                if self.streams.len() == Self::MAX_STREAMS {
                    self.streams.remove(0);
                }
                self.streams.push(ReportedStream { ssrc, newest: seq, bits: Box::new([0; 1024]) });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        let advance = seq.wrapping_sub(stream.newest);
        if advance > 0 && advance < 0x8000 {
            // Forget the sequence numbers half the space behind the new newest.
            for step in 1..=advance {
                stream.flip(stream.newest.wrapping_add(step).wrapping_add(0x8000), false);
            }
            stream.newest = seq;
        }
        !stream.flip(seq, true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{ActiveProbe, RecentPackets};
    use crate::bwe::ProbeCluster;

    fn probe(media_bytes: u64, sent_bytes: u64, last_burst_ms: u64) -> ActiveProbe {
        let cluster = ProbeCluster {
            id: 1,
            target_bps: 800_000.0,
            // Planned from a media rate measured before a switch down.
            padding_bps: 160_000.0,
            duration: Duration::from_millis(150),
            min_packets: 5,
        };
        let mut probe = ActiveProbe::new(cluster, Instant::now());
        probe.media_bytes = media_bytes;
        probe.sent_bytes = sent_bytes;
        probe.last_burst = Duration::from_millis(last_burst_ms);
        probe
    }

    #[test]
    fn padding_tops_up_media_to_target() {
        let elapsed = Duration::from_millis(100);
        // 800 kbit/s for 100 ms is 10 000 bytes; 2 000 of media leave 8 000.
        assert_eq!(probe(2_000, 0, 0).owed_padding(elapsed), 8_000);
        assert_eq!(probe(2_000, 5_000, 67).owed_padding(elapsed), 3_000, "padding already sent counts");
    }

    #[test]
    fn every_burst_carries_minimum_padding() {
        let elapsed = Duration::from_millis(100);
        // A keyframe above the target: 20 % of 800 kbit/s for the 100 ms
        // since the start is 2 000 bytes.
        assert_eq!(probe(20_000, 0, 0).owed_padding(elapsed), 2_000);
        // After a burst at 67 ms, 20 % of the 33 ms since, whatever was
        // sent before.
        assert_eq!(probe(20_000, 6_000, 67).owed_padding(elapsed), 660);
    }

    #[test]
    fn repeats_are_found_and_old_entries_expire() {
        let mut recent = RecentPackets::default();
        assert!(recent.insert((7, 100)));
        assert!(recent.insert((8, 100)), "another stream");
        assert!(!recent.insert((7, 100)), "a repeat");
        // Half the sequence space later the old entry is gone.
        for seq in 101..=(100 + 0x8000u32) {
            assert!(recent.insert((7, seq as u16)));
        }
        assert!(recent.insert((7, 100)), "expired after half the sequence space");
        assert!(!recent.insert((7, 0x8000 + 100)), "the newest is remembered");
    }
}
