//! First call end to end: a resident publishes the test clip over WHIP, an
//! officer receives it over WHEP, and the session record shows both.

mod common;

use std::time::{Duration, Instant};

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer};
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::{GetSessionRequest, Role, Session};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_officer_receives_resident() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;

    let created_at = Instant::now();
    let room = create_room(&mut grpc, "INC-first-call").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-0412", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-17", Role::Officer).await;

    // The resident connects first but starts media only once the officer is
    // connected, so the officer can receive every frame sent.
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::once(clip_ivf(), clip_ogg()).paused(),
    )
    .await
    .unwrap_or_else(|error| panic!("WHIP publish failed: {error}\n{}", server.log_tail(40)));
    let publisher_connected = publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("publisher: {error}\n{}", server.log_tail(40)));

    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    let subscriber_connected = subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("subscriber: {error}\n{}", server.log_tail(40)));

    let media_started = Instant::now();
    publisher.resume();
    let sent = publisher
        .wait_media_finished(Duration::from_secs(20))
        .await
        .expect("the clip did not finish playing");
    assert_eq!(sent.media_error, None, "publisher media task failed");
    assert_eq!(sent.video_frames_sent, 180, "the clip has 180 frames");
    assert_eq!(
        sent.video_keyframes_sent, 6,
        "the clip has a keyframe every 30 frames"
    );

    // Let packets in flight arrive.
    let (_, received) = subscriber
        .wait_until(Duration::from_secs(3), |stats| {
            stats.video.frames >= sent.video_frames_sent
                && stats.audio.packets >= sent.audio_packets_sent
        })
        .await;

    let first_frame_at = received.video.first_frame_at;
    if let Some(first_frame_at) = first_frame_at {
        println!(
            "CreateRoom to first complete video frame: {:?} (publisher connected after {:?}, \
             subscriber connected after {:?}, first frame {:?} after media started)",
            first_frame_at - created_at,
            publisher_connected - created_at,
            subscriber_connected - created_at,
            first_frame_at - media_started,
        );
    }
    println!("sent: {sent:?}\nreceived: {received:?}");

    assert_eq!(
        received
            .video
            .codec_mime
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("video/vp8")
    );
    assert_eq!(
        received
            .audio
            .codec_mime
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("audio/opus")
    );
    assert!(
        first_frame_at.is_some(),
        "no complete video frame arrived\n{}",
        server.log_tail(40)
    );
    assert_eq!(
        received.video.first_frame_keyframe,
        Some(true),
        "the first complete frame is not a keyframe"
    );
    let min_frames = sent.video_frames_sent * 95 / 100;
    assert!(
        received.video.frames >= min_frames,
        "received {} complete frames of {} sent (minimum {min_frames})",
        received.video.frames,
        sent.video_frames_sent
    );
    assert!(
        received.video.frames <= sent.video_frames_sent,
        "received more frames than sent"
    );
    assert!(received.audio.packets > 0, "no Opus packets arrived");
    assert_eq!(
        received.video.missing_packets, 0,
        "video sequence gaps: {:?}",
        received.video
    );
    assert_eq!(
        received.audio.missing_packets, 0,
        "audio sequence gaps: {:?}",
        received.audio
    );

    subscriber.stop().await.expect("WHEP DELETE failed");
    publisher.stop().await.expect("WHIP DELETE failed");

    let session = wait_for_session(&mut grpc, &room.room_id, |session| {
        session
            .participants
            .iter()
            .all(|participant| participant.left_at_unix_ms > 0)
            && session
                .tracks
                .iter()
                .all(|track| track.unpublished_at_unix_ms > 0)
    })
    .await;

    assert_eq!(
        session.participants.len(),
        2,
        "participants: {:?}",
        session.participants
    );
    for participant in &session.participants {
        assert!(
            participant.joined_at_unix_ms > 0,
            "{} has no joined time",
            participant.identity
        );
        assert!(
            participant.left_at_unix_ms >= participant.joined_at_unix_ms,
            "{} left at {} before joining at {}",
            participant.identity,
            participant.left_at_unix_ms,
            participant.joined_at_unix_ms
        );
    }

    assert_eq!(session.tracks.len(), 2, "tracks: {:?}", session.tracks);
    let audio = session
        .tracks
        .iter()
        .find(|track| track.kind == "audio")
        .expect("no audio track recorded");
    let video = session
        .tracks
        .iter()
        .find(|track| track.kind == "video")
        .expect("no video track recorded");
    assert!(
        audio.codec.eq_ignore_ascii_case("audio/opus"),
        "audio codec {:?}",
        audio.codec
    );
    assert!(
        video.codec.eq_ignore_ascii_case("video/VP8"),
        "video codec {:?}",
        video.codec
    );
    for track in [audio, video] {
        assert_eq!(
            track.participant_id, resident.participant_id,
            "{} track publisher",
            track.kind
        );
        assert!(
            track.published_at_unix_ms > 0,
            "{} track has no published time",
            track.kind
        );
        assert!(
            track.unpublished_at_unix_ms >= track.published_at_unix_ms,
            "{} track unpublished at {} after WHIP DELETE",
            track.kind,
            track.unpublished_at_unix_ms
        );
    }
}

/// Polls GetSession until `done` holds or 5 s pass, then returns the last
/// session; the media plane writes leave times after the DELETE returns.
async fn wait_for_session(
    grpc: &mut common::RoomClient,
    room_id: &str,
    done: impl Fn(&Session) -> bool,
) -> Session {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let session = grpc
            .get_session(GetSessionRequest {
                room_id: room_id.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("GetSession {room_id} failed: {status}"))
            .into_inner();
        if done(&session) || Instant::now() >= deadline {
            return session;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
