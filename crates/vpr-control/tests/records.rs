//! Listing rooms and sessions, the WatchEvents stream, the audit trail and
//! key scopes, over real gRPC and SQLite.

mod harness;

use std::time::Duration;

use tonic::Code;
use vpr_control::pb;

use harness::*;

async fn room_ids(client: &mut Client, mut request: pb::ListRoomsRequest) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let response = client.list_rooms(request.clone()).await.unwrap().into_inner();
        pages.push(response.rooms.iter().map(|room| room.room_id.clone()).collect());
        if response.next_page_token.is_empty() {
            return pages;
        }
        request.page_token = response.next_page_token;
    }
}

#[tokio::test]
async fn list_rooms_pages_and_filters() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;

    let mut created = Vec::new();
    for (incident, request) in [("INC-A", "1"), ("INC-A", "2"), ("INC-B", "1"), ("INC-A", "3"), ("INC-B", "2")] {
        let room = client
            .create_room(create_request(incident, request))
            .await
            .unwrap()
            .into_inner()
            .room
            .unwrap();
        created.push(room.room_id);
        // Distinct creation times keep the expected order independent of ids.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    client
        .close_room(pb::CloseRoomRequest {
            room_id: created[1].clone(),
            disposition: pb::Disposition::Referred as i32,
            notes: String::new(),
        })
        .await
        .unwrap();

    let pages = room_ids(
        &mut client,
        pb::ListRoomsRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        pages,
        vec![
            created[0..2].to_vec(),
            created[2..4].to_vec(),
            created[4..5].to_vec()
        ]
    );

    let open_a = room_ids(
        &mut client,
        pb::ListRoomsRequest {
            state: pb::RoomState::Open as i32,
            incident_id: "INC-A".to_owned(),
            page_size: 10,
            page_token: String::new(),
        },
    )
    .await;
    assert_eq!(open_a, vec![vec![created[0].clone(), created[3].clone()]]);

    let closed = room_ids(
        &mut client,
        pb::ListRoomsRequest {
            state: pb::RoomState::Closed as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(closed, vec![vec![created[1].clone()]]);

    let status = client
        .list_rooms(pb::ListRoomsRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_size"), "{}", status.message());
    let status = client
        .list_rooms(pb::ListRoomsRequest {
            page_token: "not-a-token".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_token"), "{}", status.message());
}

#[tokio::test]
async fn list_sessions_filters_full_records() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;

    let first = create_room(&mut client, "INC-S1").await;
    client
        .admit_participant(admit_request(&first, "caller", pb::Role::Resident))
        .await
        .unwrap();
    client
        .close_room(pb::CloseRoomRequest {
            room_id: first.clone(),
            disposition: pb::Disposition::PatrolDispatched as i32,
            notes: "unit 4".to_owned(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let boundary_ms = unix_now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = create_room(&mut client, "INC-S2").await;

    let dispatched = client
        .list_sessions(pb::ListSessionsRequest {
            disposition: pb::Disposition::PatrolDispatched as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dispatched.sessions.len(), 1);
    let record = &dispatched.sessions[0];
    assert_eq!(record.room.as_ref().unwrap().room_id, first);
    assert_eq!(record.room.as_ref().unwrap().notes, "unit 4");
    assert_eq!(record.participants.len(), 1);
    assert_eq!(record.consents.len(), 1);
    assert_eq!(
        record.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["room_created", "participant_admitted", "room_closed"]
    );

    let later = client
        .list_sessions(pb::ListSessionsRequest {
            created_from_unix_ms: boundary_ms,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let later_ids: Vec<&str> = later
        .sessions
        .iter()
        .map(|s| s.room.as_ref().unwrap().room_id.as_str())
        .collect();
    assert_eq!(later_ids, vec![second.as_str()]);

    let earlier = client
        .list_sessions(pb::ListSessionsRequest {
            created_to_unix_ms: boundary_ms,
            incident_id: "INC-S1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(earlier.sessions.len(), 1);
    assert_eq!(earlier.sessions[0].room.as_ref().unwrap().room_id, first);

    let status = client
        .list_sessions(pb::ListSessionsRequest {
            created_from_unix_ms: boundary_ms,
            created_to_unix_ms: boundary_ms - 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("created_to_unix_ms"), "{}", status.message());
}

/// Reads `count` events from a WatchEvents stream, failing after 5 s.
async fn read_events(
    stream: &mut tonic::Streaming<pb::Event>,
    count: usize,
) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("no event within 5 s")
            .unwrap()
            .expect("stream ended early");
        events.push(event);
    }
    events
}

#[tokio::test]
async fn watch_events_resumes_without_gaps_or_repeats() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-W1").await;
    client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap();

    // A watcher reads the two stored events and one that arrives live.
    let mut watcher = harness.read_client().await;
    let mut stream = watcher
        .watch_events(pb::WatchEventsRequest {
            room_id: room_id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = read_events(&mut stream, 2).await;
    client
        .admit_participant(admit_request(&room_id, "officer-1", pb::Role::Officer))
        .await
        .unwrap();
    seen.extend(read_events(&mut stream, 1).await);
    assert_eq!(
        seen.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["room_created", "participant_admitted", "participant_admitted"]
    );
    drop(stream);

    // Events while disconnected, in this room and in another one.
    let other_room = create_room(&mut client, "INC-W2").await;
    client
        .admit_participant(admit_request(&room_id, "dispatch-1", pb::Role::Observer))
        .await
        .unwrap();
    client
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::ResolvedVirtually as i32,
            notes: String::new(),
        })
        .await
        .unwrap();

    let last_seq = seen.last().unwrap().seq;
    let mut stream = watcher
        .watch_events(pb::WatchEventsRequest {
            room_id: room_id.clone(),
            after_seq: last_seq,
        })
        .await
        .unwrap()
        .into_inner();
    let missed = read_events(&mut stream, 2).await;

    let stored: Vec<pb::Event> = harness
        .store
        .events_after(Some(&room_id), last_seq, 100)
        .await
        .unwrap()
        .iter()
        .map(vpr_control::convert::event)
        .collect();
    assert_eq!(missed, stored, "exactly the stored events after the last seq");
    assert_eq!(
        missed.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["participant_admitted", "room_closed"]
    );
    assert!(missed.iter().all(|e| e.room_id == room_id));
    assert!(missed[0].seq > last_seq);

    // Nothing more arrives for this room, even when another room has events.
    client
        .admit_participant(admit_request(&other_room, "caller-2", pb::Role::Resident))
        .await
        .unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(extra.is_err(), "no event repeated or leaked: {extra:?}");

    // The unfiltered stream from 0 sends every stored event once, in order.
    let mut all = watcher
        .watch_events(pb::WatchEventsRequest {
            room_id: String::new(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let total = harness.store.events_after(None, 0, 1000).await.unwrap().len();
    let everything = read_events(&mut all, total).await;
    let seqs: Vec<i64> = everything.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
}

#[tokio::test]
async fn watch_events_rejects_bad_arguments() {
    let harness = Harness::start().await;
    let mut client = harness.read_client().await;

    let status = client
        .watch_events(pb::WatchEventsRequest {
            room_id: String::new(),
            after_seq: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("after_seq"), "{}", status.message());

    let status = client
        .watch_events(pb::WatchEventsRequest {
            room_id: "rm_0000000000000000".to_owned(),
            after_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn read_scope_key_cannot_change_rooms() {
    let harness = Harness::start().await;
    let mut writer = harness.client().await;
    let room_id = create_room(&mut writer, "INC-K1").await;
    let mut reader = harness.read_client().await;

    let status = reader
        .create_room(create_request("INC-K2", "req-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("rooms:write"), "{}", status.message());
    let status = reader
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::Abandoned as i32,
            notes: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = reader
        .admit_participant(admit_request(&room_id, "x", pb::Role::Observer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let room = reader
        .get_room(pb::GetRoomRequest {
            room_id: room_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(room.state, pb::RoomState::Open as i32);
    reader
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap();
    reader
        .list_audit_entries(pb::ListAuditEntriesRequest::default())
        .await
        .unwrap();
    assert_eq!(
        harness.media_calls().len(),
        1,
        "only the writer's CreateRoom reached the media plane"
    );
}

#[tokio::test]
async fn audit_records_actions_and_detects_tampering() {
    let harness = Harness::start().await;
    let mut client = harness.client().await;
    let room_id = create_room(&mut client, "INC-AU1").await;
    let resident = client
        .admit_participant(admit_request(&room_id, "caller", pb::Role::Resident))
        .await
        .unwrap()
        .into_inner();
    client
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: room_id.clone(),
            participant_id: resident.participant_id.clone(),
            reason: "test".to_owned(),
        })
        .await
        .unwrap();
    client
        .close_room(pb::CloseRoomRequest {
            room_id: room_id.clone(),
            disposition: pb::Disposition::Abandoned as i32,
            notes: String::new(),
        })
        .await
        .unwrap();

    let mut reader = harness.read_client().await;
    let first_page = reader
        .list_audit_entries(pb::ListAuditEntriesRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.entries.len(), 3);
    assert!(!first_page.next_page_token.is_empty());
    let second_page = reader
        .list_audit_entries(pb::ListAuditEntriesRequest {
            page_size: 3,
            page_token: first_page.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.next_page_token, "");
    let entries: Vec<pb::AuditEntry> = first_page
        .entries
        .into_iter()
        .chain(second_page.entries)
        .collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["CreateRoom", "AdmitParticipant", "RemoveParticipant", "CloseRoom"]
    );
    assert!(entries.iter().all(|e| e.key_id == KEY_ID));
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let admit_arguments: serde_json::Value = serde_json::from_str(&entries[1].arguments).unwrap();
    assert_eq!(admit_arguments["room_id"], room_id.as_str());
    assert_eq!(admit_arguments["identity"], "caller");
    assert_eq!(admit_arguments["consent"]["channel"], "web_form");
    assert!(
        !entries[1].arguments.contains(&resident.join_token),
        "the join token is never audited"
    );

    let intact = vprctl(&harness, &["audit", "verify"]).await;
    assert!(intact.status.success(), "{intact:?}");
    assert_eq!(
        String::from_utf8_lossy(&intact.stdout).trim(),
        "audit chain intact: 4 entries"
    );

    // Rewrite the arguments of entry 3 behind the store's back.
    let url = format!("sqlite://{}", harness.database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let updated = sqlx::query("UPDATE audit_log SET arguments = '{}' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 1);
    pool.close().await;

    let broken = vprctl(&harness, &["audit", "verify"]).await;
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert_eq!(
        String::from_utf8_lossy(&broken.stdout).trim(),
        "audit chain broken at seq 3"
    );
    let broken_json = vprctl(&harness, &["--json", "audit", "verify"]).await;
    let value: serde_json::Value = serde_json::from_slice(&broken_json.stdout).unwrap();
    assert_eq!(value["intact"], false);
    assert_eq!(value["broken_seq"], 3);
}

/// Runs vprctl with the read-only key against the harness.
async fn vprctl(harness: &Harness, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_vprctl"))
        .args(["--server", &harness.address, "--key-id", READ_KEY_ID])
        .args(args)
        .env("VPR_API_KEY_SECRET", READ_KEY_SECRET)
        .output()
        .await
        .unwrap()
}
