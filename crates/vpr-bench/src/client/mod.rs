//! WHIP/WHEP clients for end-to-end tests and benchmarks.
//!
//! [`WhipPublisher`] sends the test clip like a resident's phone;
//! [`WhepSubscriber`] receives a room like an officer's browser and counts
//! complete VP8 frames, keyframes, Opus packets and sequence gaps. Both bind
//! only 127.0.0.1.

pub mod answering;
pub mod capture_time;
mod error;
mod peer;
mod publisher;
mod signaling;
pub mod simulcast;
mod subscriber;
pub mod synthetic;
pub mod unbound_probe;
pub mod vp8;

pub use error::ClientError;
pub use peer::{
    build_loopback_peer, create_complete_offer, loopback_setting_engine, opus_codec,
    register_client_interceptors, vp8_codec, vp8_opus_media_engine, PeerEvents, NACK_INTERVAL,
    OPUS_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE,
};
pub use publisher::{
    prepare_publish_offer, PublishOffer, PublisherMedia, PublisherStats, WhipPublisher,
};
pub use signaling::{delete_session, post_offer, SignaledSession, SDP_CONTENT_TYPE};
pub use subscriber::{
    AudioReceiveStats, FrameLog, FrameRecord, Freeze, SubscriberStats, VideoReceiveStats,
    WhepSubscriber, FREEZE_THRESHOLD,
};

/// Calls `read` every 10 ms until `done` holds for its result or `timeout`
/// passes. Returns the last result and whether `done` held.
pub async fn poll_until<T>(
    timeout: std::time::Duration,
    mut read: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> (bool, T) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = read();
        if done(&value) {
            return (true, value);
        }
        if tokio::time::Instant::now() >= deadline {
            return (false, value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
