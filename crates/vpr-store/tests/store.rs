//! Tests of the session lifecycle (sessions, participants, tracks, events)
//! on a fresh database of each backend: an SQLite file in a temporary folder
//! and a PostgreSQL database created on the server in `VPR_TEST_POSTGRES_URL`.

mod common;

use common::{new_event, new_participant, new_session, new_track, TestDb};
use vpr_store::{EventRow, NewEvent, ParticipantRow, SessionRow, Store, StoreError, TrackRow};

on_both_backends!(
    create_session_is_idempotent,
    full_lifecycle_is_recorded,
    lifecycle_errors_name_the_cause,
    close_all_open_survives_reopen,
    events_after_orders_filters_and_resumes,
    concurrent_writers_all_succeed,
);

async fn create_session_is_idempotent(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();

    let (first, created) = store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.room_id, "room-1");
    assert_eq!(first.state, "open");
    assert_eq!(first.max_participants, 4);
    assert_eq!(first.created_at_ms, 1_000);
    assert_eq!(first.ended_at_ms, None);

    // A retry generates a new room id, but the stored session wins.
    let (retry, created) = store
        .create_session(new_session("room-2", "inc-1", "req-1", 2_000))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(retry, first);
    assert_eq!(store.session_row("room-2").await.unwrap(), None);

    let (other, created) = store
        .create_session(new_session("room-3", "inc-1", "req-2", 3_000))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(other.room_id, "room-3");
    assert_eq!(other.request_id, "req-2");

    let reused = store
        .create_session(new_session("room-1", "inc-9", "req-9", 4_000))
        .await;
    assert!(
        matches!(reused, Err(StoreError::Conflict { what: "session", ref id, .. }) if id == "room-1"),
        "{reused:?}"
    );

    store.close().await;
}

async fn full_lifecycle_is_recorded(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();

    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("officer-1", "room-1", "officer", 1_100))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("resident-1", "room-1", "resident", 1_200))
        .await
        .unwrap();
    store.participant_joined("officer-1", 1_300).await.unwrap();
    store.participant_joined("resident-1", 1_400).await.unwrap();
    // A reconnect keeps the first join time.
    store.participant_joined("resident-1", 1_450).await.unwrap();

    store
        .track_published(new_track(
            "t-officer-audio",
            "room-1",
            "officer-1",
            "audio",
            1_500,
        ))
        .await
        .unwrap();
    store
        .track_published(new_track(
            "t-resident-video",
            "room-1",
            "resident-1",
            "video",
            1_600,
        ))
        .await
        .unwrap();
    store
        .track_published(new_track(
            "t-resident-audio",
            "room-1",
            "resident-1",
            "audio",
            1_700,
        ))
        .await
        .unwrap();
    store
        .track_unpublished("t-resident-video", 1_800)
        .await
        .unwrap();

    let seq_joined = store
        .append_event(NewEvent {
            participant_id: Some("resident-1".to_owned()),
            detail: r#"{"role":"resident"}"#.to_owned(),
            ..new_event("room-1", "participant_joined", 1_400)
        })
        .await
        .unwrap();

    // Leaving unpublishes the resident's remaining audio track.
    store
        .participant_left("resident-1", "hung up", 1_900)
        .await
        .unwrap();
    store
        .participant_left("resident-1", "duplicate signal", 1_950)
        .await
        .unwrap();

    let seq_closed = store
        .append_event(new_event("room-1", "session_closed", 2_000))
        .await
        .unwrap();
    assert!(seq_closed > seq_joined);

    let closed = store
        .close_session(
            "room-1",
            "call ended",
            Some("resolved"),
            Some("no further action"),
            2_000,
        )
        .await
        .unwrap();

    let expected_session = SessionRow {
        room_id: "room-1".to_owned(),
        incident_id: "inc-1".to_owned(),
        request_id: "req-1".to_owned(),
        call_type: "welfare-check".to_owned(),
        max_participants: 4,
        metadata: r#"{"district":"north"}"#.to_owned(),
        state: "closed".to_owned(),
        created_at_ms: 1_000,
        ended_at_ms: Some(2_000),
        end_reason: Some("call ended".to_owned()),
        disposition: Some("resolved".to_owned()),
        notes: Some("no further action".to_owned()),
    };
    assert_eq!(closed, expected_session);

    let record = store.session("room-1").await.unwrap().unwrap();
    assert_eq!(record.session, expected_session);
    assert_eq!(
        record.participants,
        vec![
            ParticipantRow {
                participant_id: "officer-1".to_owned(),
                room_id: "room-1".to_owned(),
                identity: "officer-1@example.test".to_owned(),
                display_name: "Name of officer-1".to_owned(),
                role: "officer".to_owned(),
                admitted_at_ms: 1_100,
                joined_at_ms: Some(1_300),
                left_at_ms: Some(2_000),
                leave_reason: Some("call ended".to_owned()),
                badge_id: "4711".to_owned(),
                can_publish: true,
                can_subscribe: true,
                removed_at_ms: None,
                removed_reason: None,
            },
            ParticipantRow {
                participant_id: "resident-1".to_owned(),
                room_id: "room-1".to_owned(),
                identity: "resident-1@example.test".to_owned(),
                display_name: "Name of resident-1".to_owned(),
                role: "resident".to_owned(),
                admitted_at_ms: 1_200,
                joined_at_ms: Some(1_400),
                left_at_ms: Some(1_900),
                leave_reason: Some("hung up".to_owned()),
                badge_id: String::new(),
                can_publish: true,
                can_subscribe: true,
                removed_at_ms: None,
                removed_reason: None,
            },
        ]
    );
    assert_eq!(
        record.tracks,
        vec![
            TrackRow {
                track_id: "t-officer-audio".to_owned(),
                room_id: "room-1".to_owned(),
                participant_id: "officer-1".to_owned(),
                kind: "audio".to_owned(),
                codec: "audio/opus".to_owned(),
                published_at_ms: 1_500,
                unpublished_at_ms: Some(2_000),
                muted: false,
            },
            TrackRow {
                track_id: "t-resident-video".to_owned(),
                room_id: "room-1".to_owned(),
                participant_id: "resident-1".to_owned(),
                kind: "video".to_owned(),
                codec: "video/VP8".to_owned(),
                published_at_ms: 1_600,
                unpublished_at_ms: Some(1_800),
                muted: false,
            },
            TrackRow {
                track_id: "t-resident-audio".to_owned(),
                room_id: "room-1".to_owned(),
                participant_id: "resident-1".to_owned(),
                kind: "audio".to_owned(),
                codec: "audio/opus".to_owned(),
                published_at_ms: 1_700,
                unpublished_at_ms: Some(1_900),
                muted: false,
            },
        ]
    );
    assert_eq!(
        record.events,
        vec![
            EventRow {
                seq: seq_joined,
                room_id: "room-1".to_owned(),
                kind: "participant_joined".to_owned(),
                participant_id: Some("resident-1".to_owned()),
                track_id: None,
                detail: r#"{"role":"resident"}"#.to_owned(),
                at_ms: 1_400,
            },
            EventRow {
                seq: seq_closed,
                room_id: "room-1".to_owned(),
                kind: "session_closed".to_owned(),
                participant_id: None,
                track_id: None,
                detail: String::new(),
                at_ms: 2_000,
            },
        ]
    );

    assert_eq!(record.consents, Vec::new());
    assert_eq!(record.quality, Vec::new());

    store.close().await;
}

async fn lifecycle_errors_name_the_cause(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .create_session(new_session("room-2", "inc-2", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "officer", 1_100))
        .await
        .unwrap();

    let duplicate = store
        .admit_participant(new_participant("p-1", "room-1", "observer", 1_200))
        .await;
    assert!(
        matches!(
            duplicate,
            Err(StoreError::Conflict {
                what: "participant",
                ..
            })
        ),
        "{duplicate:?}"
    );

    let unknown_room = store
        .admit_participant(new_participant("p-2", "room-404", "officer", 1_200))
        .await;
    assert!(
        matches!(unknown_room, Err(StoreError::NotFound { what: "session", ref id }) if id == "room-404"),
        "{unknown_room:?}"
    );

    let unknown_join = store.participant_joined("p-404", 1_300).await;
    assert!(
        matches!(
            unknown_join,
            Err(StoreError::NotFound {
                what: "participant",
                ..
            })
        ),
        "{unknown_join:?}"
    );

    let wrong_room = store
        .track_published(new_track("t-1", "room-2", "p-1", "audio", 1_300))
        .await;
    assert!(
        matches!(
            wrong_room,
            Err(StoreError::NotFound {
                what: "participant",
                ..
            })
        ),
        "{wrong_room:?}"
    );

    let unknown_track = store.track_unpublished("t-404", 1_300).await;
    assert!(
        matches!(
            unknown_track,
            Err(StoreError::NotFound { what: "track", .. })
        ),
        "{unknown_track:?}"
    );

    store
        .close_session("room-1", "call ended", None, None, 2_000)
        .await
        .unwrap();

    let closed_twice = store
        .close_session("room-1", "call ended", None, None, 2_100)
        .await;
    assert!(
        matches!(closed_twice, Err(StoreError::AlreadyClosed { ref room_id }) if room_id == "room-1"),
        "{closed_twice:?}"
    );
    let row = store.session_row("room-1").await.unwrap().unwrap();
    assert_eq!(row.ended_at_ms, Some(2_000));

    let closed_unknown = store
        .close_session("room-404", "call ended", None, None, 2_100)
        .await;
    assert!(
        matches!(
            closed_unknown,
            Err(StoreError::NotFound {
                what: "session",
                ..
            })
        ),
        "{closed_unknown:?}"
    );

    let admit_closed = store
        .admit_participant(new_participant("p-3", "room-1", "officer", 2_200))
        .await;
    assert!(
        matches!(admit_closed, Err(StoreError::AlreadyClosed { .. })),
        "{admit_closed:?}"
    );

    let publish_after_close = store
        .track_published(new_track("t-2", "room-1", "p-1", "video", 2_200))
        .await;
    assert!(
        matches!(
            publish_after_close,
            Err(StoreError::Conflict {
                what: "participant",
                ..
            })
        ),
        "{publish_after_close:?}"
    );

    let join_after_close = store.participant_joined("p-1", 2_200).await;
    assert!(
        matches!(
            join_after_close,
            Err(StoreError::Conflict {
                what: "participant",
                ..
            })
        ),
        "{join_after_close:?}"
    );

    let event_unknown_room = store
        .append_event(new_event("room-404", "note", 2_300))
        .await;
    assert!(
        matches!(
            event_unknown_room,
            Err(StoreError::NotFound {
                what: "session",
                ..
            })
        ),
        "{event_unknown_room:?}"
    );

    assert_eq!(store.session("room-404").await.unwrap(), None);
    store.close().await;
}

async fn close_all_open_survives_reopen(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();

    for (room_id, request_id) in [
        ("room-a", "req-a"),
        ("room-b", "req-b"),
        ("room-c", "req-c"),
    ] {
        store
            .create_session(new_session(room_id, "inc-1", request_id, 1_000))
            .await
            .unwrap();
    }
    store
        .admit_participant(new_participant("p-a", "room-a", "officer", 1_100))
        .await
        .unwrap();
    store.participant_joined("p-a", 1_150).await.unwrap();
    store
        .track_published(new_track("t-a", "room-a", "p-a", "video", 1_200))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-b", "room-b", "resident", 1_100))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-c", "room-c", "observer", 1_100))
        .await
        .unwrap();
    store
        .close_session("room-c", "call ended", Some("resolved"), None, 1_500)
        .await
        .unwrap();

    if let TestDb::Sqlite { dir } = db {
        assert!(
            dir.join("sessions.db-wal").exists(),
            "file database is not in WAL mode"
        );
    }

    let closed = store.close_all_open("server restart", 3_000).await.unwrap();
    assert_eq!(closed, vec!["room-a".to_owned(), "room-b".to_owned()]);
    assert_eq!(store.open_sessions().await.unwrap(), Vec::new());
    store.close().await;

    let reopened = Store::open(&db.url()).await.unwrap();

    for room_id in ["room-a", "room-b"] {
        let record = reopened.session(room_id).await.unwrap().unwrap();
        assert_eq!(record.session.state, "closed", "{room_id}");
        assert_eq!(record.session.ended_at_ms, Some(3_000), "{room_id}");
        assert_eq!(
            record.session.end_reason.as_deref(),
            Some("server restart"),
            "{room_id}"
        );
        assert_eq!(record.session.disposition, None, "{room_id}");
        assert_eq!(record.participants.len(), 1, "{room_id}");
        assert_eq!(record.participants[0].left_at_ms, Some(3_000), "{room_id}");
        assert_eq!(
            record.participants[0].leave_reason.as_deref(),
            Some("server restart"),
            "{room_id}"
        );
    }

    let room_a = reopened.session("room-a").await.unwrap().unwrap();
    assert_eq!(room_a.participants[0].joined_at_ms, Some(1_150));
    assert_eq!(room_a.tracks.len(), 1);
    assert_eq!(room_a.tracks[0].unpublished_at_ms, Some(3_000));

    // The session closed earlier keeps its own end time and reason.
    let room_c = reopened.session("room-c").await.unwrap().unwrap();
    assert_eq!(room_c.session.ended_at_ms, Some(1_500));
    assert_eq!(room_c.session.end_reason.as_deref(), Some("call ended"));
    assert_eq!(room_c.session.disposition.as_deref(), Some("resolved"));
    assert_eq!(room_c.participants[0].left_at_ms, Some(1_500));
    assert_eq!(
        room_c.participants[0].leave_reason.as_deref(),
        Some("call ended")
    );

    let again = reopened
        .close_all_open("server shutdown", 4_000)
        .await
        .unwrap();
    assert_eq!(again, Vec::<String>::new());

    reopened.close().await;
}

async fn events_after_orders_filters_and_resumes(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-a", "inc-1", "req-a", 1_000))
        .await
        .unwrap();
    store
        .create_session(new_session("room-b", "inc-2", "req-b", 1_000))
        .await
        .unwrap();

    // Interleave rooms: a, b, a, b, a, b.
    let mut appended = Vec::new();
    for i in 0..6_i64 {
        let room_id = if i % 2 == 0 { "room-a" } else { "room-b" };
        let seq = store
            .append_event(NewEvent {
                detail: format!(r#"{{"i":{i}}}"#),
                ..new_event(room_id, "test_event", 1_000 + i)
            })
            .await
            .unwrap();
        appended.push((seq, room_id));
    }
    for pair in appended.windows(2) {
        assert!(pair[1].0 > pair[0].0, "seq not increasing: {appended:?}");
    }

    let all = store.events_after(None, 0, 100).await.unwrap();
    let all_seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    let appended_seqs: Vec<i64> = appended.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(all_seqs, appended_seqs);
    assert_eq!(all[3].room_id, "room-b");
    assert_eq!(all[3].detail, r#"{"i":3}"#);
    assert_eq!(all[3].at_ms, 1_003);

    let room_a = store.events_after(Some("room-a"), 0, 100).await.unwrap();
    let room_a_seqs: Vec<i64> = room_a.iter().map(|e| e.seq).collect();
    assert_eq!(
        room_a_seqs,
        vec![appended[0].0, appended[2].0, appended[4].0]
    );
    assert!(room_a.iter().all(|e| e.room_id == "room-a"));

    // Resume after the second event of room-a.
    let resumed = store
        .events_after(Some("room-a"), appended[2].0, 100)
        .await
        .unwrap();
    let resumed_seqs: Vec<i64> = resumed.iter().map(|e| e.seq).collect();
    assert_eq!(resumed_seqs, vec![appended[4].0]);

    // Page through all rooms two at a time.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(None, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(paged, appended_seqs);

    let after_last = store
        .events_after(None, *appended_seqs.last().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(after_last, Vec::new());
    assert_eq!(store.events_after(None, 0, 0).await.unwrap(), Vec::new());

    store.close().await;
}

async fn concurrent_writers_all_succeed(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();

    // Writers on several pooled connections contend for SQLite's one write lock.
    let mut tasks = Vec::new();
    for i in 0..16_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let participant_id = format!("p-{i}");
            store
                .admit_participant(new_participant(
                    &participant_id,
                    "room-1",
                    "observer",
                    1_000 + i,
                ))
                .await?;
            store
                .append_event(NewEvent {
                    participant_id: Some(participant_id.clone()),
                    ..new_event("room-1", "participant_admitted", 1_000 + i)
                })
                .await?;
            store
                .participant_left(&participant_id, "done", 2_000 + i)
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let record = store.session("room-1").await.unwrap().unwrap();
    assert_eq!(record.participants.len(), 16);
    assert!(record
        .participants
        .iter()
        .all(|p| p.leave_reason.as_deref() == Some("done")));
    assert_eq!(record.events.len(), 16);
    for pair in record.events.windows(2) {
        assert!(pair[1].seq > pair[0].seq);
    }

    store.close().await;
}

#[tokio::test]
async fn in_memory_store_keeps_rows() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "officer", 1_100))
        .await
        .unwrap();

    let participants = store.list_participants("room-1").await.unwrap();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].badge_id, "4711");
    store.close().await;
}

#[tokio::test]
async fn unsupported_url_names_the_scheme() {
    let opened = Store::open("mysql://user:secret@127.0.0.1/vpr").await;
    let Err(StoreError::UnsupportedUrl { scheme }) = opened else {
        panic!("expected UnsupportedUrl, got {opened:?}");
    };
    assert_eq!(scheme, "mysql");
}
