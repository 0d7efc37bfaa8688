//! Writes the media plane's events into the session record.

use tokio::sync::mpsc;
use tracing::warn;
use vpr_sfu::MediaEvent;
use vpr_store::{NewEvent, NewTrack, QualityRow, Store};

/// Consumes media events until the media worker drops its sender.
pub async fn run(store: Store, mut events: mpsc::UnboundedReceiver<MediaEvent>) {
    while let Some(event) = events.recv().await {
        if let Err(err) = record(&store, &event).await {
            warn!(?event, error = %err, "failed to record media event");
        }
    }
}

async fn record(store: &Store, event: &MediaEvent) -> Result<(), vpr_store::StoreError> {
    match event {
        MediaEvent::ParticipantJoined { room_id, participant_id, at_ms } => {
            store.participant_joined(participant_id, *at_ms).await?;
            append(store, room_id, "participant_joined", Some(participant_id), None, String::new(), *at_ms).await
        }
        MediaEvent::ParticipantLeft { room_id, participant_id, reason, at_ms } => {
            store.participant_left(participant_id, reason, *at_ms).await?;
            let detail = serde_json::json!({ "reason": reason }).to_string();
            append(store, room_id, "participant_left", Some(participant_id), None, detail, *at_ms).await
        }
        MediaEvent::ActiveSpeaker { room_id, participant_id, at_ms } => {
            append(store, room_id, "active_speaker", Some(participant_id), None, String::new(), *at_ms).await
        }
        MediaEvent::RoomEmptyTimeout { room_id, at_ms } => {
            match store.close_session(room_id, "empty timeout", None, None, *at_ms).await {
                // Closed over the API in the meantime: nothing to record.
                Err(vpr_store::StoreError::AlreadyClosed { .. }) => return Ok(()),
                other => other.map(|_| ())?,
            }
            let detail = serde_json::json!({ "reason": "empty timeout" }).to_string();
            append(store, room_id, "room_closed", None, None, detail, *at_ms).await
        }
        MediaEvent::SessionReplaced { room_id, participant_id, at_ms } => {
            let detail = serde_json::json!({ "reason": "replaced by a new connection" }).to_string();
            append(store, room_id, "participant_reconnected", Some(participant_id), None, detail, *at_ms).await
        }
        MediaEvent::QualityReport {
            participant_id, bitrate_kbps, packet_loss, rtt_ms, jitter_ms, video_layer, layer_changes, at_ms, ..
        } => {
            store
                .upsert_quality(QualityRow {
                    participant_id: participant_id.clone(),
                    bitrate_kbps: *bitrate_kbps,
                    packet_loss: *packet_loss,
                    rtt_ms: *rtt_ms,
                    layer_changes: i64::try_from(*layer_changes).unwrap_or(i64::MAX),
                    updated_at_ms: *at_ms,
                    jitter_ms: *jitter_ms,
                    video_layer: video_layer.clone(),
                })
                .await
        }
        MediaEvent::QualityAlert { room_id, participant_id, raised, packet_loss, rtt_ms, at_ms } => {
            let detail = serde_json::json!({
                "state": if *raised { "raised" } else { "cleared" },
                "packet_loss": packet_loss,
                "rtt_ms": rtt_ms,
            })
            .to_string();
            append(store, room_id, "quality_alert", Some(participant_id), None, detail, *at_ms).await
        }
        MediaEvent::TrackPublished { room_id, participant_id, track_id, kind, codec, at_ms } => {
            store
                .track_published(NewTrack {
                    track_id: track_id.clone(),
                    room_id: room_id.clone(),
                    participant_id: participant_id.clone(),
                    kind: kind.as_str().to_owned(),
                    codec: codec.clone(),
                    published_at_ms: *at_ms,
                })
                .await?;
            let detail = serde_json::json!({ "kind": kind.as_str(), "codec": codec }).to_string();
            append(store, room_id, "track_published", Some(participant_id), Some(track_id), detail, *at_ms).await
        }
        MediaEvent::TrackUnpublished { room_id, participant_id, track_id, at_ms } => {
            store.track_unpublished(track_id, *at_ms).await?;
            append(store, room_id, "track_unpublished", Some(participant_id), Some(track_id), String::new(), *at_ms)
                .await
        }
    }
}

async fn append(
    store: &Store,
    room_id: &str,
    kind: &str,
    participant_id: Option<&String>,
    track_id: Option<&String>,
    detail: String,
    at_ms: i64,
) -> Result<(), vpr_store::StoreError> {
    store
        .append_event(NewEvent {
            room_id: room_id.to_owned(),
            kind: kind.to_owned(),
            participant_id: participant_id.cloned(),
            track_id: track_id.cloned(),
            detail,
            at_ms,
        })
        .await
        .map(|_| ())
}
