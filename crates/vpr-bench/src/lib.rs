//! Test and benchmark clients for the VPR SFU.
//!
//! [`client`] contains a WHIP publisher and a WHEP subscriber built on the async
//! `webrtc` crate, restricted to loopback so that tests never touch another
//! interface. [`scenario`] runs load scenarios of many rooms with them
//! (`vpr-bench run`).

pub mod client;
pub mod janus;
pub mod relay;
pub mod scenario;
