//! Send-side bandwidth estimation with probing, one estimator per
//! subscriber connection.
//!
//! Transport-wide feedback reaches the worker through a [`ReportTap`] in the
//! interceptor chain (see [`register_send_side_bwe`]). The worker drains the
//! [`ReportQueue`] after each poll of the peer connection and feeds the
//! reports to the connection's [`SendSideEstimator`], which combines:
//!
//! - a delay-based estimate: libwebrtc's trendline filter and adaptive
//!   threshold, with AIMD rate control,
//! - a loss-based estimate: libwebrtc's classic rule (grow below 2 % loss,
//!   cut by half the loss fraction above 10 %),
//! - probe results: clusters of padding that [`SendSideEstimator::poll_probe`]
//!   requests, measured from the same feedback,
//! - REMB and receiver reports for clients that do not negotiate
//!   transport-cc.
//!
//! The estimator reads no clock: every method takes `now`.

mod acked;
mod delay;
mod estimator;
mod loss;
mod probe;
mod tap;
mod trendline;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use delay::RateControlState;
pub use estimator::{EstimatorConfig, EstimatorSnapshot, SendSideEstimator};
pub use loss::HIGH_LOSS;
pub use probe::{ProbeCluster, ProbeOutcome, ProbeResult, MIN_PADDING_FRACTION};
pub use tap::{register_send_side_bwe, ReportBatch, ReportQueue, ReportTap};
