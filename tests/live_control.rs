//! The dispatch system acting on a live call: RemoveParticipant cuts the
//! participant's media and voids its token; MuteTrack stops and resumes a
//! track for every subscriber.

mod common;

use std::time::Duration;

use common::{start_live_call, LiveCall, TestServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use vpr_bench::client::prepare_publish_offer;
use vpr_control::pb::{GetSessionRequest, MuteTrackRequest, RemoveParticipantRequest};

#[tokio::test]
async fn removed_participant_is_cut_off() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let LiveCall { room, resident, publisher, subscriber, .. } = start_live_call(&mut grpc, "INC-remove").await;
    let (reached, _) = subscriber.wait_until(Duration::from_secs(5), |s| s.video.frames >= 20).await;
    assert!(reached, "no video before the removal");

    grpc.remove_participant(RemoveParticipantRequest {
        room_id: room.room_id.clone(),
        participant_id: resident.participant_id.clone(),
        reason: "caller became abusive".to_owned(),
    })
    .await
    .expect("RemoveParticipant");

    // Media stops: no frame arrives in a full second, one second after removal.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let frames_after_removal = subscriber.stats().video.frames;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(subscriber.stats().video.frames, frames_after_removal, "video still flows after removal");

    // The token is void, also for a new connection.
    let offer = prepare_publish_offer().await.expect("offer");
    let response = reqwest::Client::new()
        .post(&resident.whip_url)
        .header(AUTHORIZATION, format!("Bearer {}", resident.join_token))
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("removed"), "{body}");
    let _ = offer.peer.close().await;

    publisher.abandon().await;
    subscriber.stop().await.expect("WHEP stop");

    let session = grpc
        .get_session(GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    let record = session
        .participants
        .iter()
        .find(|p| p.participant_id == resident.participant_id)
        .expect("resident in record");
    assert!(record.left_at_unix_ms > 0, "resident has no leave time: {record:?}");
    assert!(record.removed_at_unix_ms > 0, "resident has no removal time: {record:?}");
    assert!(
        session.events.iter().any(|e| e.kind == "participant_removed" && e.participant_id == resident.participant_id),
        "events: {:?}",
        session.events
    );
}

#[tokio::test]
async fn muted_track_stops_and_resumes() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let LiveCall { room, publisher, subscriber, .. } = start_live_call(&mut grpc, "INC-mute").await;
    let (reached, _) = subscriber.wait_until(Duration::from_secs(5), |s| s.video.frames >= 20).await;
    assert!(reached, "no video before muting");

    let session = grpc
        .get_session(GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    let video = session.tracks.iter().find(|t| t.kind == "video").expect("video track recorded");
    let mute = |muted| MuteTrackRequest { room_id: room.room_id.clone(), track_id: video.track_id.clone(), muted };

    grpc.mute_track(mute(true)).await.expect("MuteTrack");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted = subscriber.stats();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let still_muted = subscriber.stats();
    assert_eq!(still_muted.video.frames, muted.video.frames, "video flows while muted");
    assert!(still_muted.audio.packets > muted.audio.packets + 40, "audio stopped with the video");

    grpc.mute_track(mute(false)).await.expect("unmute");
    let target = still_muted.video.frames + 30;
    let (reached, resumed) = subscriber.wait_until(Duration::from_secs(4), |s| s.video.frames >= target).await;
    publisher.stop().await.expect("WHIP stop");
    subscriber.stop().await.expect("WHEP stop");
    assert!(reached, "video did not resume: {resumed:?}");
    assert_eq!(resumed.video.sequence_gaps, 0, "sequence gap across mute");
    assert_eq!(resumed.video.incomplete_frames, 0, "incomplete frame after unmute");
}
