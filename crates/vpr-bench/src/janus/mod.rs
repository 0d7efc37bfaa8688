//! Janus Gateway as a load target: a client of its HTTP API (sessions,
//! plugin handles, messages, long-poll events, keepalives) and of the
//! VideoRoom plugin (rooms, publishers, subscribers), so that `vpr-bench
//! run --target janus` runs the same clients against Janus as against VPR.
//! Tested with Janus 1.1.2.

mod api;
mod videoroom;

pub use api::{JanusError, JanusSession, Jsep};
pub use videoroom::{JanusRoom, PublishError, VideoRoomPublisher, VideoRoomSubscriber};
