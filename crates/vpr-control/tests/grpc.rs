//! RoomService rooms, authentication, validation and vprctl over a real gRPC
//! connection on 127.0.0.1 with a real SQLite file. The media plane is a
//! recorder that stores the calls it receives.

mod harness;

use std::time::Duration;

use tonic::Code;
use vpr_control::pb;
use vpr_control::{mint_api_jwt, mint_api_jwt_at, JoinTokenSigner, Role};

use harness::*;

#[tokio::test]
async fn missing_authorization_is_unauthenticated() {
    let harness = Harness::start().await;
    let mut client = harness.client_with(None).await;

    let status = client
        .create_room(create_request("INC-1", "req-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization metadata missing"),
        "message: {}",
        status.message()
    );
    assert!(harness.media_calls().is_empty());
}

#[tokio::test]
async fn wrong_secret_is_unauthenticated() {
    let harness = Harness::start().await;
    let token = mint_api_jwt(KEY_ID, "not-the-secret", Duration::from_secs(60));
    let mut client = harness.client_with(Some(format!("Bearer {token}"))).await;

    let status = client
        .create_room(create_request("INC-1", "req-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("signature invalid"),
        "message: {}",
        status.message()
    );
    assert!(!status.message().contains(&token));
}

#[tokio::test]
async fn expired_jwt_is_unauthenticated() {
    let harness = Harness::start().await;
    let token = mint_api_jwt_at(KEY_ID, KEY_SECRET, unix_now_s() - 600, 60);
    let mut client = harness.client_with(Some(format!("Bearer {token}"))).await;

    let status = client
        .get_room(pb::GetRoomRequest {
            room_id: "rm_0".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("expired"),
        "message: {}",
        status.message()
    );
}

#[tokio::test]
async fn unknown_key_and_long_lifetime_are_unauthenticated() {
    let harness = Harness::start().await;

    let unknown = mint_api_jwt("someone-else", KEY_SECRET, Duration::from_secs(60));
    let mut client = harness.client_with(Some(format!("Bearer {unknown}"))).await;
    let status = client
        .get_room(pb::GetRoomRequest {
            room_id: "rm_0".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("unknown"),
        "message: {}",
        status.message()
    );

    let long = mint_api_jwt(KEY_ID, KEY_SECRET, Duration::from_secs(2 * 3600));
    let mut client = harness.client_with(Some(format!("Bearer {long}"))).await;
    let status = client
        .get_room(pb::GetRoomRequest {
            room_id: "rm_0".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("lifetime"),
        "message: {}",
        status.message()
    );
}

#[tokio::test]
async fn create_room_retry_returns_same_room() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;

    let first = client
        .create_room(create_request("INC-7", "req-a"))
        .await
        .unwrap()
        .into_inner();
    let room = first.room.unwrap();
    assert!(first.created);
    assert!(room.room_id.starts_with("rm_"));
    assert_eq!(room.room_id.len(), 3 + 16);
    assert_eq!(room.incident_id, "INC-7");
    assert_eq!(room.call_type, "burglary");
    assert_eq!(room.max_participants, 3, "server default applies for 0");
    assert_eq!(room.metadata, r#"{"address":"1 Main St"}"#);
    assert_eq!(room.state, pb::RoomState::Open as i32);
    assert!(room.created_at_unix_ms > 0);
    assert_eq!(room.ended_at_unix_ms, 0);

    let retry = client
        .create_room(create_request("INC-7", "req-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(!retry.created);
    assert_eq!(retry.room.unwrap().room_id, room.room_id);

    let other = client
        .create_room(create_request("INC-7", "req-b"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.created);
    assert_ne!(other.room.as_ref().unwrap().room_id, room.room_id);

    let fetched = client
        .get_room(pb::GetRoomRequest {
            room_id: room.room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, room);

    // The media plane opens each room once, not again on the retry.
    let other_id = other.room.unwrap().room_id;
    assert_eq!(
        harness.media_calls(),
        vec![
            MediaCall::Open {
                room_id: room.room_id.clone(),
                max_participants: 3
            },
            MediaCall::Open {
                room_id: other_id,
                max_participants: 3
            },
        ]
    );
}

#[tokio::test]
async fn admit_returns_verifiable_join_token() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = client
        .create_room(create_request("INC-9", "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;

    let before_s = unix_now_s();
    let officer = client
        .admit_participant(admit_request(&room_id, "badge-4411", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();

    assert!(officer.participant_id.starts_with("pt_"));
    assert_eq!(officer.participant_id.len(), 3 + 16);
    assert_eq!(officer.whip_url, format!("{BASE_URL}/whip/{room_id}"));
    assert_eq!(officer.whep_url, format!("{BASE_URL}/whep/{room_id}"));

    let signer = JoinTokenSigner::new(JOIN_SECRET);
    let claims = signer.verify(&officer.join_token, unix_now_s()).unwrap();
    assert_eq!(claims.room_id, room_id);
    assert_eq!(claims.participant_id, officer.participant_id);
    assert_eq!(claims.identity, "badge-4411");
    assert_eq!(claims.role, Role::Officer);
    assert!(claims.can_publish());
    assert_eq!(
        claims.exp - claims.iat,
        300,
        "server default TTL applies for 0"
    );
    assert!(claims.iat >= before_s);
    assert_eq!(
        officer.expires_at_unix_ms,
        i64::try_from(claims.exp).unwrap() * 1000
    );

    // The token stops verifying at its expiry and under another secret.
    assert!(signer.verify(&officer.join_token, claims.exp).is_err());
    assert!(JoinTokenSigner::new(b"other")
        .verify(&officer.join_token, unix_now_s())
        .is_err());

    let mut observer_request = admit_request(&room_id, "sergeant-2", pb::Role::Observer);
    observer_request.token_ttl_seconds = 120;
    let observer = client
        .admit_participant(observer_request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(observer.whip_url, "", "observers receive only");
    assert_eq!(observer.whep_url, format!("{BASE_URL}/whep/{room_id}"));
    let observer_claims = signer.verify(&observer.join_token, unix_now_s()).unwrap();
    assert_eq!(observer_claims.role, Role::Observer);
    assert!(!observer_claims.can_publish());
    assert_eq!(observer_claims.exp - observer_claims.iat, 120);
}

#[tokio::test]
async fn admit_enforces_max_participants() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let mut request = create_request("INC-10", "req-1");
    request.max_participants = 2;
    let room_id = client
        .create_room(request)
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;

    client
        .admit_participant(admit_request(&room_id, "resident", pb::Role::Resident))
        .await
        .unwrap();
    client
        .admit_participant(admit_request(&room_id, "officer", pb::Role::Officer))
        .await
        .unwrap();
    let status = client
        .admit_participant(admit_request(&room_id, "third", pb::Role::Observer))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted);
    let session = client
        .get_session(pb::GetSessionRequest { room_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.participants.len(), 2);
}

#[tokio::test]
async fn close_room_records_disposition_and_participants() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = client
        .create_room(create_request("INC-11", "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;
    let resident = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap()
        .into_inner();
    let officer = client
        .admit_participant(admit_request(&room_id, "badge-1", pb::Role::Officer))
        .await
        .unwrap()
        .into_inner();

    let closed = client
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::PatrolDispatched as i32,
            notes: "unit 12 sent".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.state, pb::RoomState::Closed as i32);
    assert_eq!(closed.disposition, pb::Disposition::PatrolDispatched as i32);
    assert_eq!(closed.end_reason, "room_closed");
    assert_eq!(closed.notes, "unit 12 sent");
    assert!(closed.ended_at_unix_ms >= closed.created_at_unix_ms);

    let session = client
        .get_session(pb::GetSessionRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.room.as_ref(), Some(&closed));

    let participants: Vec<(&str, &str, i32)> = session
        .participants
        .iter()
        .map(|p| (p.participant_id.as_str(), p.identity.as_str(), p.role))
        .collect();
    assert_eq!(
        participants,
        vec![
            (
                resident.participant_id.as_str(),
                "caller",
                pb::Role::Resident as i32
            ),
            (
                officer.participant_id.as_str(),
                "badge-1",
                pb::Role::Officer as i32
            ),
        ]
    );
    for participant in &session.participants {
        assert_eq!(
            participant.display_name,
            format!("{} display", participant.identity)
        );
        assert!(participant.admitted_at_unix_ms > 0);
        assert_eq!(participant.joined_at_unix_ms, 0);
        assert_eq!(participant.left_at_unix_ms, closed.ended_at_unix_ms);
        assert_eq!(participant.leave_reason, "room_closed");
    }
    assert!(session.tracks.is_empty());

    let kinds: Vec<&str> = session
        .events
        .iter()
        .map(|event| event.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "room_created",
            "participant_admitted",
            "participant_admitted",
            "room_closed"
        ]
    );
    assert_eq!(session.events[1].participant_id, resident.participant_id);
    assert!(
        session.events[3].detail.contains("patrol_dispatched"),
        "detail: {}",
        session.events[3].detail
    );
    assert!(session
        .events
        .windows(2)
        .all(|pair| pair[0].seq < pair[1].seq));

    assert_eq!(
        harness.media_calls().last(),
        Some(&MediaCall::Close {
            room_id: room_id.clone(),
            reason: "room_closed".to_owned()
        })
    );

    let status = client
        .admit_participant(admit_request(&room_id, "late", pb::Role::Officer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let status = client
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::Referred as i32,
            notes: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn unknown_room_is_not_found() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;

    let status = client
        .get_room(pb::GetRoomRequest {
            room_id: "rm_0000000000000000".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .admit_participant(admit_request("rm_0000000000000000", "x", pb::Role::Officer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .get_session(pb::GetSessionRequest {
            room_id: "rm_0000000000000000".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .close_room(pb::CloseRoomRequest {
            room_id: "rm_0000000000000000".to_owned(),
            disposition: pb::Disposition::Abandoned as i32,
            notes: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_arguments_name_the_field() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;

    let mut cases: Vec<(pb::CreateRoomRequest, &str)> = Vec::new();
    cases.push((create_request("", "req-1"), "incident_id"));
    cases.push((create_request("INC-1", ""), "request_id"));
    cases.push((create_request(&"i".repeat(129), "req-1"), "incident_id"));
    let mut big_metadata = create_request("INC-1", "req-1");
    big_metadata.metadata = "m".repeat(4097);
    cases.push((big_metadata, "metadata"));
    let mut too_many = create_request("INC-1", "req-1");
    too_many.max_participants = 11;
    cases.push((too_many, "max_participants"));

    for (request, field) in cases {
        let status = client.create_room(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "field {field}");
        assert!(
            status.message().contains(field),
            "field {field}, message: {}",
            status.message()
        );
    }
    assert!(
        harness.media_calls().is_empty(),
        "no room opened for invalid requests"
    );

    let room_id = client
        .create_room(create_request("INC-1", "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id;

    let no_role = admit_request(&room_id, "x", pb::Role::Unspecified);
    let no_identity = admit_request(&room_id, "", pb::Role::Officer);
    let mut long_ttl = admit_request(&room_id, "x", pb::Role::Officer);
    long_ttl.token_ttl_seconds = 3601;
    for (request, field) in [
        (no_role, "role"),
        (no_identity, "identity"),
        (long_ttl, "token_ttl_seconds"),
    ] {
        let status = client.admit_participant(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "field {field}");
        assert!(
            status.message().contains(field),
            "field {field}, message: {}",
            status.message()
        );
    }

    let status = client
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::Unspecified as i32,
            notes: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("disposition"),
        "message: {}",
        status.message()
    );

    let room = client
        .get_room(pb::GetRoomRequest { room_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        room.state,
        pb::RoomState::Open as i32,
        "invalid CloseRoom leaves the room open"
    );
}

/// Runs the vprctl binary against the harness and returns its parsed JSON output.
async fn vprctl_json(harness: &Harness, args: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vprctl"))
        .args(["--server", &harness.address, "--key-id", KEY_ID, "--json"])
        .args(args)
        .env("VPR_API_KEY_SECRET", KEY_SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "vprctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn vprctl_runs_room_lifecycle() {
    let harness = Harness::start().await;

    let room = vprctl_json(
        &harness,
        &["create-room", "--incident", "INC-CLI", "--request-id", "r1"],
    )
    .await;
    assert_eq!(room["created"], true);
    assert_eq!(room["state"], "ROOM_STATE_OPEN");
    let room_id = room["room_id"].as_str().unwrap().to_owned();

    let admitted = vprctl_json(
        &harness,
        &[
            "admit",
            "--room",
            &room_id,
            "--identity",
            "badge-9",
            "--role",
            "observer",
        ],
    )
    .await;
    assert_eq!(admitted["whip_url"], "");
    assert_eq!(admitted["whep_url"], format!("{BASE_URL}/whep/{room_id}"));
    let claims = JoinTokenSigner::new(JOIN_SECRET)
        .verify(admitted["join_token"].as_str().unwrap(), unix_now_s())
        .unwrap();
    assert_eq!(claims.role, Role::Observer);
    assert_eq!(claims.room_id, room_id);

    let closed = vprctl_json(
        &harness,
        &[
            "close-room",
            "--room",
            &room_id,
            "--disposition",
            "resolved-virtually",
        ],
    )
    .await;
    assert_eq!(closed["state"], "ROOM_STATE_CLOSED");
    assert_eq!(closed["disposition"], "DISPOSITION_RESOLVED_VIRTUALLY");

    let session = vprctl_json(&harness, &["session", "--room", &room_id]).await;
    assert_eq!(session["participants"][0]["identity"], "badge-9");
    assert_eq!(session["participants"][0]["role"], "ROLE_OBSERVER");
    assert_eq!(session["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn create_room_retry_after_close_returns_closed_room() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let mut request = create_request("INC-12", "req-a");
    request.empty_timeout_seconds = 120;
    let first = client.create_room(request.clone()).await.unwrap().into_inner();
    let room = first.room.unwrap();
    assert_eq!(room.empty_timeout_seconds, 120);
    assert_eq!(room.metadata, r#"{"address":"1 Main St"}"#);

    client
        .close_room(pb::CloseRoomRequest {
            room_id: room.room_id.clone(),
            disposition: pb::Disposition::Referred as i32,
            notes: String::new(),
        })
        .await
        .unwrap();

    let retry = client.create_room(request).await.unwrap().into_inner();
    assert!(!retry.created);
    let retried = retry.room.unwrap();
    assert_eq!(retried.room_id, room.room_id);
    assert_eq!(retried.state, pb::RoomState::Closed as i32);

    let fresh = client
        .create_room(create_request("INC-12", "req-b"))
        .await
        .unwrap()
        .into_inner();
    assert!(fresh.created);
    let fresh_room = fresh.room.unwrap();
    assert_ne!(fresh_room.room_id, room.room_id);
    assert_eq!(fresh_room.state, pb::RoomState::Open as i32);

    let mut too_long = create_request("INC-12", "req-c");
    too_long.empty_timeout_seconds = 86_401;
    let status = client.create_room(too_long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("empty_timeout_seconds"), "{}", status.message());
}

#[tokio::test]
async fn vprctl_lists_admits_and_tails() {
    let harness = Harness::start().await;

    let room = vprctl_json(&harness, &["create-room", "--incident", "INC-CLI2"]).await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();

    let resident = vprctl_json(
        &harness,
        &[
            "admit", "--room", &room_id, "--identity", "caller", "--role", "resident",
            "--consent-video", "--consent-audio", "--consent-channel", "sms_link",
        ],
    )
    .await;
    let join_url = resident["join_url"].as_str().unwrap();
    assert_eq!(
        join_url,
        format!("{BASE_URL}/join?token={}", resident["join_token"].as_str().unwrap())
    );
    let officer = vprctl_json(
        &harness,
        &["admit", "--room", &room_id, "--identity", "cst-1", "--role", "officer", "--badge", "4411"],
    )
    .await;
    assert_eq!(officer["can_publish"], true);

    let rooms = vprctl_json(&harness, &["list-rooms", "--state", "open"]).await;
    assert_eq!(rooms.as_array().unwrap().len(), 1);
    assert_eq!(rooms[0]["room_id"], room_id.as_str());

    let participants = vprctl_json(&harness, &["participants", "--room", &room_id]).await;
    assert_eq!(participants[1]["badge_id"], "4411");

    let removed = vprctl_json(
        &harness,
        &["remove", "--room", &room_id, "--participant", officer["participant_id"].as_str().unwrap(), "--reason", "left scene"],
    )
    .await;
    assert_eq!(removed["removed_reason"], "left scene");

    vprctl_json(
        &harness,
        &["close-room", "--room", &room_id, "--disposition", "abandoned"],
    )
    .await;
    let sessions = vprctl_json(&harness, &["list-sessions", "--disposition", "abandoned"]).await;
    assert_eq!(sessions[0]["room"]["room_id"], room_id.as_str());
    assert_eq!(sessions[0]["consents"][0]["channel"], "sms_link");

    // tail prints one JSON object a line and stops after --limit.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vprctl"))
        .args(["--server", &harness.address, "--key-id", KEY_ID, "--json"])
        .args(["tail", "--room", &room_id, "--after", "1", "--limit", "3"])
        .env("VPR_API_KEY_SECRET", KEY_SECRET)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let kinds: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec!["participant_admitted", "participant_admitted", "participant_removed"]
    );

    // The default table output has a header row and one row per room.
    let table = tokio::process::Command::new(env!("CARGO_BIN_EXE_vprctl"))
        .args(["--server", &harness.address, "--key-id", KEY_ID, "list-rooms"])
        .env("VPR_API_KEY_SECRET", KEY_SECRET)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ROOM_ID"), "{text}");
    assert!(lines[1].starts_with(&room_id), "{text}");
}
