//! Participant and track calls over real gRPC and SQLite: consent, badge
//! ids, re-admission, removal, track mute and permissions.

mod harness;

use tonic::Code;
use vpr_control::pb;
use vpr_control::{JoinTokenSigner, Role};
use vpr_store::NewTrack;

use harness::*;

#[tokio::test]
async fn resident_without_consent_gets_no_token() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-C1").await;

    let mut request = admit_request(&room_id, "caller", pb::Role::Resident);
    request.consent = None;
    let status = client.admit_participant(request).await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "resident consent is required before a join token is issued"
    );
    let participants = harness.store.list_participants(&room_id).await.unwrap();
    assert!(participants.is_empty(), "no participant was admitted");
    let audit = harness.store.list_audit(0, 100).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|row| row.action.as_str()).collect();
    assert_eq!(actions, vec!["CreateRoom"], "a rejected admission is not audited");
}

#[tokio::test]
async fn resident_consent_is_stored_with_admission() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-C2").await;

    let mut request = admit_request(&room_id, "caller", pb::Role::Resident);
    request.consent = Some(pb::Consent {
        live_video: true,
        audio: true,
        recording: false,
        channel: "verbal_call_taker".to_owned(),
        consented_at_unix_ms: 1_700_000_000_000,
    });
    let admitted = client.admit_participant(request).await.unwrap().into_inner();

    let stored = harness
        .store
        .consent(&admitted.participant_id)
        .await
        .unwrap()
        .expect("consent stored");
    assert_eq!(stored.room_id, room_id);
    assert!(stored.live_video);
    assert!(stored.audio);
    assert!(!stored.recording);
    assert_eq!(stored.channel, "verbal_call_taker");
    assert_eq!(stored.consented_at_ms, 1_700_000_000_000);

    let session = client
        .get_session(pb::GetSessionRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.consents.len(), 1);
    assert_eq!(session.consents[0].participant_id, admitted.participant_id);
    assert_eq!(
        session.consents[0].consent.as_ref().unwrap().channel,
        "verbal_call_taker"
    );
}

#[tokio::test]
async fn officer_needs_badge_id() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-B1").await;

    let mut request = admit_request(&room_id, "officer-1", pb::Role::Officer);
    request.badge_id = String::new();
    let status = client.admit_participant(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("badge_id") && status.message().contains("officer"),
        "message: {}",
        status.message()
    );

    let admitted = client
        .admit_participant(admit_request(&room_id, "officer-1", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();
    let participants = client
        .list_participants(pb::ListParticipantsRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].participant_id, admitted.participant_id);
    assert_eq!(participants[0].badge_id, "B-officer-1");
    assert!(participants[0].can_publish);
    assert!(participants[0].can_subscribe);
}

#[tokio::test]
async fn same_identity_readmitted_keeps_participant_id() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-R1").await;

    let first = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap()
        .into_inner();

    assert!(!first.readmitted);
    assert!(second.readmitted);
    assert_eq!(second.participant_id, first.participant_id);
    let claims = JoinTokenSigner::new(JOIN_SECRET)
        .verify(&second.join_token, unix_now_s())
        .unwrap();
    assert_eq!(claims.participant_id, first.participant_id);
    assert_eq!(
        second.join_url,
        format!("{BASE_URL}/join?token={}", second.join_token)
    );

    let session = client
        .get_session(pb::GetSessionRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.participants.len(), 1);
    let kinds: Vec<&str> = session.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["room_created", "participant_admitted", "participant_readmitted"]
    );
    assert_eq!(session.events[2].participant_id, first.participant_id);

    // Another role under the same identity is refused while it is present.
    let status = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Observer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn removed_participant_is_not_reused() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-X1").await;
    let other_room = client
        .create_room(create_request("INC-X2", "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;

    let officer = client
        .admit_participant(admit_request(&room_id, "officer-9", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();

    let removed = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: officer.participant_id.clone(),
            reason: "disruptive".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.participant_id, officer.participant_id);
    assert!(removed.removed_at_unix_ms > 0);
    assert_eq!(removed.removed_reason, "disruptive");
    assert_eq!(
        harness.media_calls().last(),
        Some(&MediaCall::RemoveParticipant {
            room_id: room_id.clone(),
            participant_id: officer.participant_id.clone(),
            reason: "disruptive".to_owned(),
        })
    );

    let stored = harness
        .store
        .participant_row(&officer.participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.removed_reason.as_deref(), Some("disruptive"));

    let status = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: officer.participant_id.clone(),
            reason: "again".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let again = client
        .admit_participant(admit_request(&room_id, "officer-9", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.participant_id, officer.participant_id);
    assert!(!again.readmitted);

    // A participant of another room, an unknown one and a malformed id.
    let status = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: other_room,
            participant_id: again.participant_id.clone(),
            reason: "wrong room".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: "pt_0000000000000000".to_owned(),
            reason: "unknown".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: "officer-9".to_owned(),
            reason: "bad id".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("participant_id"), "{}", status.message());
    let status = client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: again.participant_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("reason"), "{}", status.message());

    let session = client
        .get_session(pb::GetSessionRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let removed_events: Vec<&pb::Event> = session
        .events
        .iter()
        .filter(|event| event.kind == "participant_removed")
        .collect();
    assert_eq!(removed_events.len(), 1);
    assert_eq!(removed_events[0].participant_id, officer.participant_id);
    assert!(removed_events[0].detail.contains("disruptive"));
}

#[tokio::test]
async fn mute_track_updates_store_media_and_events() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-M1").await;
    let resident = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap()
        .into_inner();
    let track_id = "tr_00000000000000aa";
    harness
        .store
        .track_published(NewTrack {
            track_id: track_id.to_owned(),
            room_id: room_id.clone(),
            participant_id: resident.participant_id.clone(),
            kind: "video".to_owned(),
            codec: "video/VP8".to_owned(),
            published_at_ms: unix_now_ms(),
        })
        .await
        .unwrap();

    let muted = client
        .mute_track(pb::MuteTrackRequest {
            room_id: room_id.clone(),
            track_id: track_id.to_owned(),
            muted: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(muted.muted);
    assert_eq!(muted.participant_id, resident.participant_id);
    assert!(harness.store.track_row(track_id).await.unwrap().unwrap().muted);
    assert_eq!(
        harness.media_calls().last(),
        Some(&MediaCall::MuteTrack {
            room_id: room_id.clone(),
            track_id: track_id.to_owned(),
            muted: true,
        })
    );

    let unmuted = client
        .mute_track(pb::MuteTrackRequest {
            room_id: room_id.clone(),
            track_id: track_id.to_owned(),
            muted: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unmuted.muted);
    assert!(!harness.store.track_row(track_id).await.unwrap().unwrap().muted);

    let session = client
        .get_session(pb::GetSessionRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let track_events: Vec<(&str, &str)> = session
        .events
        .iter()
        .filter(|event| !event.track_id.is_empty())
        .map(|event| (event.kind.as_str(), event.track_id.as_str()))
        .collect();
    assert_eq!(
        track_events,
        vec![("track_muted", track_id), ("track_unmuted", track_id)]
    );
    assert_eq!(session.tracks[0].codec, "video/VP8");
    assert!(!session.tracks[0].muted);

    let status = client
        .mute_track(pb::MuteTrackRequest {
            room_id: room_id.clone(),
            track_id: "tr_00000000000000bb".to_owned(),
            muted: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .mute_track(pb::MuteTrackRequest {
            room_id: room_id.clone(),
            track_id: "video-1".to_owned(),
            muted: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("track_id"), "{}", status.message());
}

#[tokio::test]
async fn permissions_update_store_media_and_token() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-P1").await;
    let officer = client
        .admit_participant(admit_request(&room_id, "officer-2", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();
    assert!(officer.can_publish);
    assert!(!officer.whip_url.is_empty());

    let updated = client
        .update_participant_permissions(pb::UpdateParticipantPermissionsRequest {
            room_id: room_id.clone(),
            participant_id: officer.participant_id.clone(),
            can_publish: false,
            can_subscribe: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.can_publish);
    assert!(updated.can_subscribe);
    assert_eq!(
        harness.media_calls().last(),
        Some(&MediaCall::Permissions {
            room_id: room_id.clone(),
            participant_id: officer.participant_id.clone(),
            can_publish: false,
            can_subscribe: true,
        })
    );
    let stored = harness
        .store
        .participant_row(&officer.participant_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.can_publish);

    // A fresh token for the same identity carries the stored permissions.
    let again = client
        .admit_participant(admit_request(&room_id, "officer-2", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();
    assert!(again.readmitted);
    assert!(!again.can_publish);
    assert_eq!(again.whip_url, "");
    let claims = JoinTokenSigner::new(JOIN_SECRET)
        .verify(&again.join_token, unix_now_s())
        .unwrap();
    assert!(!claims.can_publish());
    assert!(claims.can_subscribe());

    let session = client
        .get_session(pb::GetSessionRequest { room_id })
        .await
        .unwrap()
        .into_inner();
    assert!(session
        .events
        .iter()
        .any(|event| event.kind == "participant_permissions_updated"
            && event.participant_id == officer.participant_id));
}

#[tokio::test]
async fn dispatcher_receives_only_by_default() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-D1").await;

    let dispatcher = client
        .admit_participant(admit_request(&room_id, "dispatch-3", pb::Role::Dispatcher))
        .await
        .unwrap()
        .into_inner();
    assert!(!dispatcher.can_publish);
    assert!(dispatcher.can_subscribe);
    assert_eq!(dispatcher.whip_url, "");
    assert_eq!(dispatcher.whep_url, format!("{BASE_URL}/whep/{room_id}"));
    let claims = JoinTokenSigner::new(JOIN_SECRET)
        .verify(&dispatcher.join_token, unix_now_s())
        .unwrap();
    assert_eq!(claims.role, Role::Dispatcher);
    assert!(!claims.can_publish());

    // An explicit permission overrides the role's default.
    let mut request = admit_request(&room_id, "observer-4", pb::Role::Observer);
    request.can_publish = Some(true);
    request.can_subscribe = Some(false);
    let observer = client.admit_participant(request).await.unwrap().into_inner();
    assert!(observer.can_publish);
    assert!(!observer.can_subscribe);
    assert_eq!(observer.whep_url, "");
}
