//! Hands transport-wide feedback from the interceptor chain to the worker.
//!
//! `CongestionControlInterceptor` joins TWCC feedback with its send history
//! and passes the resulting [`PacketReport`]s to a [`BandwidthEstimator`]
//! that the chain owns. The real estimator lives in the worker, so the chain
//! gets a [`ReportTap`] that only queues reports, and the worker drains the
//! matching [`ReportQueue`] after each poll of the peer connection.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, CongestionControlBuilder, PacketReport, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::shared::error::Error;

/// Reports queued beyond this many are dropped, oldest first, so a worker
/// that stops draining cannot grow the queue without bound.
const MAX_QUEUED_REPORTS: usize = 100_000;

/// Reports that one feedback packet resolved, with the instant the chain
/// handled that feedback.
#[derive(Debug, Clone)]
pub struct ReportBatch {
    /// When the feedback reached the interceptor chain.
    pub received_at: Instant,
    /// Resolved packets, in send order.
    pub reports: Vec<PacketReport>,
}

#[derive(Debug, Default)]
struct Shared {
    batches: Vec<ReportBatch>,
    queued: usize,
    dropped: u64,
}

/// Estimator stand-in for the interceptor chain: it queues every report for
/// the worker and reports a constant target, because nothing in the chain
/// reads the target when no pacer is installed.
#[derive(Debug)]
pub struct ReportTap {
    shared: Arc<Mutex<Shared>>,
}

/// The worker's side of a [`ReportTap`].
#[derive(Debug, Clone)]
pub struct ReportQueue {
    shared: Arc<Mutex<Shared>>,
}

impl ReportTap {
    /// Creates a tap and the queue that receives its reports.
    pub fn new() -> (ReportTap, ReportQueue) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        (ReportTap { shared: shared.clone() }, ReportQueue { shared })
    }
}

impl BandwidthEstimator for ReportTap {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let mut shared = self.shared.lock().expect("report queue lock");
        shared.queued += reports.len();
        shared.batches.push(ReportBatch { received_at: now, reports: reports.to_vec() });

        while shared.queued > MAX_QUEUED_REPORTS && !shared.batches.is_empty() {
            let oldest = shared.batches.remove(0);
            shared.queued -= oldest.reports.len();
            shared.dropped += oldest.reports.len() as u64;
        }
    }

    /// Returns 0, which the interceptor announces once and then never changes.
    fn target_bitrate(&self) -> f64 {
        0.0
    }
}

impl ReportQueue {
    /// Takes every queued report, in the order the feedback arrived.
    pub fn drain(&self) -> Vec<PacketReport> {
        self.drain_batches().into_iter().flat_map(|batch| batch.reports).collect()
    }

    /// Takes every queued batch. Each keeps the instant its feedback
    /// arrived, which gives the estimator a better round-trip time than the
    /// instant of the drain.
    pub fn drain_batches(&self) -> Vec<ReportBatch> {
        let mut shared = self.shared.lock().expect("report queue lock");
        shared.queued = 0;
        std::mem::take(&mut shared.batches)
    }

    /// Number of reports dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().expect("report queue lock").dropped
    }
}

/// Adds send-side bandwidth estimation to `registry` without a pacer: the
/// TWCC sender numbers every departing RTP packet, and the congestion
/// control interceptor records departures and passes resolved feedback to a
/// [`ReportTap`].
///
/// Call it after the codecs are registered on `media_engine`, because it
/// adds `transport-cc` feedback to the codecs registered at that time, and
/// next to `register_default_interceptors`, which already installs the TWCC
/// receiver for the other direction.
///
/// # Errors
///
/// Returns the library's error when the transport-cc header extension
/// cannot be registered on `media_engine`.
pub fn register_send_side_bwe(
    registry: Registry,
    media_engine: &mut MediaEngine,
) -> Result<(Registry, ReportQueue), Error> {
    let (tap, queue) = ReportTap::new();
    let registry = configure_twcc_sender_only(registry, media_engine)?;
    let registry = registry.with(Slot::CongestionControl, CongestionControlBuilder::new(tap).build());
    Ok((registry, queue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
    use std::time::Duration;

    fn report(id: u64, departure: Instant) -> PacketReport {
        PacketReport {
            ssrc: 7,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1_000,
            arrived: true,
            departure,
            arrival: Some(Duration::from_millis(id)),
            ecn: Ecn::default(),
        }
    }

    #[test]
    fn tap_queues_reports_in_order() {
        let now = Instant::now();
        let (mut tap, queue) = ReportTap::new();
        tap.on_reports(now, &[report(1, now), report(2, now)]);
        tap.on_reports(now, &[]);
        tap.on_reports(now + Duration::from_millis(50), &[report(3, now)]);

        let ids: Vec<u64> = queue.drain().iter().map(|report| report.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(queue.drain().is_empty());
    }

    #[test]
    fn tap_keeps_feedback_instants() {
        let now = Instant::now();
        let (mut tap, queue) = ReportTap::new();
        tap.on_reports(now, &[report(1, now)]);
        tap.on_reports(now + Duration::from_millis(40), &[report(2, now)]);

        let batches = queue.drain_batches();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].received_at, now + Duration::from_millis(40));
    }

    #[test]
    fn registry_has_no_pacer() {
        let mut engine = MediaEngine::default();
        let registry = register_default_interceptors(Registry::new(), &mut engine).expect("defaults");
        let (registry, _queue) = register_send_side_bwe(registry, &mut engine).expect("send-side bwe");

        let slots: Vec<Slot> = registry.slots().into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(slots[0], Slot::CongestionControl);
        assert_eq!(slots[1], Slot::TwccSender);
        assert!(!slots.contains(&Slot::Pacer));
        assert!(slots.contains(&Slot::TwccReceiver));
    }
}
