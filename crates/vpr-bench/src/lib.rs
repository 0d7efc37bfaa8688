//! Test and benchmark clients for the VPR SFU.
//!
//! [`client`] contains a WHIP publisher and a WHEP subscriber built on the async
//! `webrtc` crate, restricted to loopback so that tests never touch another
//! interface.

pub mod client;
pub mod relay;
