//! Load scenarios for `vpr-bench run`: rooms with residents publishing the
//! test clip (or a synthetic VP8 stream at a fixed packet rate) and officers
//! and observers receiving it, measured per subscriber and checked against
//! thresholds. Against VPR they join over the same gRPC and WHIP/WHEP paths
//! the CAD and clients use. Against Janus they join a VideoRoom over the
//! Janus HTTP API.
//!
//! NOTE: officers only receive for now; end-to-end delay (abs-capture-time)
//! and simulcast layers are not measured.

pub mod config;
pub mod control;
pub mod freeze;
pub mod join;
pub mod metrics;
pub mod percentile;
pub mod process;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod summarize;
pub mod svg;
pub mod thresholds;

pub use config::{Scenario, ScenarioError, Thresholds};
pub use report::Report;
pub use runner::{run, RunError};
