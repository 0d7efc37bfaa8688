//! UDP impairment relay for loss, delay, jitter, rate cap and outage tests
//! on a machine without netem.
//!
//! The relay sits between a client and the media plane's UDP port. A client
//! sends to [`RelayHandle::local_addr`]. For each client source address the
//! relay opens one upstream socket toward the server, so the server receives
//! from that socket and treats it as the peer. Each direction runs through its own sans-IO
//! [`Scheduler`], changeable at run time from the [`RelayHandle`].
//!
//! WebRTC clients find the server through the host candidate of the SDP
//! answer; [`rewrite_answer_candidates`] points it at the relay, and
//! [`RelayedSubscriber`] is a WHEP subscriber that does so.
//!
//! ```no_run
//! # async fn example(server: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use vpr_bench::relay::{Direction, Impairment, Relay};
//!
//! let (relay, relay_addr) = Relay::start(server).await?;
//! relay.set(
//!     Direction::Downstream,
//!     Impairment::none().with_delay(Duration::from_millis(60)).with_loss(0.05),
//! );
//! // ... connect a client to relay_addr, then:
//! relay.set_outage(true);
//! println!("{:?}", relay.stats().downstream);
//! # let _ = relay_addr;
//! # Ok(())
//! # }
//! ```

mod frames;
mod impairment;
mod scheduler;
mod sdp;
mod shell;
mod stats;
mod subscriber;

pub use frames::{FrameRecord, ReorderingFrameCounter};
pub use impairment::{Direction, Impairment};
pub use scheduler::{DropReason, Scheduler, Verdict, BUCKET_DEPTH_BYTES, DEFAULT_MAX_QUEUE_DELAY};
pub use sdp::{first_udp_candidate, rewrite_answer_candidates};
pub use shell::{Relay, RelayError, RelayHandle, DEFAULT_SEED};
pub use stats::{DirectionStats, RelayStats, RtpPacketId};
pub use subscriber::{RelayedSubscriber, RelayedSubscriberStats, RelayedVideoStats};
