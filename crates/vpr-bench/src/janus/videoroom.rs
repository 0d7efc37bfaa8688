//! The Janus VideoRoom plugin driven with the bench clients: rooms created
//! and destroyed over a control handle, a synthetic publisher joining with
//! its offer, and subscribers answering the offer Janus sends them for a
//! publisher's feed. Each participant has its own session, as separate
//! browsers would.

use serde_json::{json, Value};

use super::api::{JanusError, JanusSession, Jsep};
use crate::client::answering::AnsweringSubscriber;
use crate::client::synthetic::{SyntheticConfig, SyntheticOffer, SyntheticPublisher};

/// Plugin package name.
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Session and handle used to create and destroy rooms.
pub struct JanusRoom {
    session: JanusSession,
    handle: u64,
    /// Room number Janus assigned.
    pub room: u64,
}

impl JanusRoom {
    /// Creates a VP8/Opus room for up to `publishers` publishers, with no
    /// bitrate cap and no periodic keyframe requests.
    pub async fn create(
        base_url: &str,
        description: &str,
        publishers: u32,
    ) -> Result<Self, JanusError> {
        let session = JanusSession::create(base_url).await?;
        let handle = session.attach(VIDEOROOM).await?;
        let body = json!({
            "request": "create",
            "description": description,
            "publishers": publishers.max(1),
            "bitrate": 0,
            "fir_freq": 0,
            "videocodec": "vp8",
            "audiocodec": "opus",
            "notify_joining": false,
        });
        let data = session.request(handle, body).await?;
        let room =
            data.get("room")
                .and_then(Value::as_u64)
                .ok_or_else(|| JanusError::Unexpected {
                    request: "create".to_owned(),
                    detail: data.to_string(),
                })?;
        Ok(Self {
            session,
            handle,
            room,
        })
    }

    /// Destroys the room and the control session.
    pub async fn destroy(self) -> Result<(), JanusError> {
        let result = self
            .session
            .request(
                self.handle,
                json!({"request": "destroy", "room": self.room}),
            )
            .await
            .map(drop);
        self.session.destroy().await?;
        result
    }
}

impl std::fmt::Debug for JanusRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusRoom")
            .field("session", &self.session.id())
            .field("room", &self.room)
            .finish()
    }
}

/// A synthetic publisher in a VideoRoom.
pub struct VideoRoomPublisher {
    session: JanusSession,
    /// Feed id (publisher id) subscribers ask for.
    pub feed: u64,
    /// The media client.
    pub publisher: SyntheticPublisher,
}

impl VideoRoomPublisher {
    /// Joins `room` as a publisher named `display` and publishes the
    /// synthetic stream; returns once Janus has sent its SDP answer.
    pub async fn join(
        base_url: &str,
        room: u64,
        display: &str,
        config: SyntheticConfig,
    ) -> Result<Self, PublishError> {
        let offer = SyntheticOffer::new(config).await?;
        let session = JanusSession::create(base_url).await?;
        let handle = session.attach(VIDEOROOM).await?;
        let join =
            json!({"request": "join", "ptype": "publisher", "room": room, "display": display});
        let (joined, _) = session.request_async(handle, join, None).await?;
        let feed =
            joined
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| JanusError::Unexpected {
                    request: "join".to_owned(),
                    detail: joined.to_string(),
                })?;

        let publish = json!({"request": "publish", "audio": false, "video": true});
        let (_, jsep) = session
            .request_async(handle, publish, Some(Jsep::offer(offer.sdp.clone())))
            .await?;
        let answer = jsep.ok_or_else(|| JanusError::Unexpected {
            request: "publish".to_owned(),
            detail: "no SDP answer".to_owned(),
        })?;
        let publisher = offer.start(answer.sdp).await?;
        Ok(Self {
            session,
            feed,
            publisher,
        })
    }

    /// Stops the media and destroys the session.
    pub async fn stop(self) -> Result<u64, JanusError> {
        let frames = self.publisher.abandon().await.frames_sent;
        self.session.destroy().await?;
        Ok(frames)
    }
}

/// A subscriber to one publisher's feed.
pub struct VideoRoomSubscriber {
    session: JanusSession,
    /// The media client.
    pub subscriber: AnsweringSubscriber,
}

impl VideoRoomSubscriber {
    /// Joins `room` as a subscriber of `feed`, answers Janus's offer and
    /// starts the subscription.
    pub async fn join(base_url: &str, room: u64, feed: u64) -> Result<Self, PublishError> {
        let session = JanusSession::create(base_url).await?;
        let handle = session.attach(VIDEOROOM).await?;
        let join = json!({
            "request": "join",
            "ptype": "subscriber",
            "room": room,
            "streams": [{"feed": feed}],
        });
        let (_, jsep) = session.request_async(handle, join, None).await?;
        let offer = jsep.ok_or_else(|| JanusError::Unexpected {
            request: "join".to_owned(),
            detail: "no SDP offer".to_owned(),
        })?;
        let (subscriber, answer) = AnsweringSubscriber::answer(offer.sdp).await?;
        session
            .request_async(
                handle,
                json!({"request": "start"}),
                Some(Jsep::answer(answer)),
            )
            .await?;
        Ok(Self {
            session,
            subscriber,
        })
    }

    /// Closes the peer connection and destroys the session.
    pub async fn stop(self) -> Result<(), JanusError> {
        self.subscriber.stop().await;
        self.session.destroy().await
    }

    /// Closes the peer connection and drops the session without telling
    /// Janus; its session times out.
    pub async fn abandon(self) {
        self.subscriber.stop().await;
    }
}

/// Failure of a publisher or subscriber join.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The Janus API refused or failed.
    #[error(transparent)]
    Janus(#[from] JanusError),
    /// The WebRTC client failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}
