//! Tests of the store API used by the control plane (session listing,
//! participant removal and permissions, track mute, consent, quality, the
//! audit chain and the event sequence channel) on a fresh database of each
//! backend: an SQLite file and a PostgreSQL database.

mod common;

use std::collections::BTreeSet;

use common::{new_event, new_participant, new_session, new_track, TestDb};
use vpr_store::{
    verify_audit_chain, ConsentRow, NewAuditEntry, NewConsent, QualityRow, SessionFilter,
    SessionRow, Store, StoreError, AUDIT_GENESIS_HASH,
};

on_both_backends!(
    list_sessions_filters,
    list_sessions_pages_without_gaps,
    participants_listed_and_found_by_identity,
    remove_participant_sets_left,
    participant_rejoins_after_leaving,
    remove_participant_before_join,
    update_permissions_changes_flags,
    set_track_muted_changes_flag,
    consent_recorded_and_replaced,
    quality_upserted_into_record,
    audit_chain_appends_in_order,
    audit_chain_concurrent_appends_do_not_fork,
    audit_chain_tamper_reports_seq,
    event_sequence_advances_after_append,
);

/// Creates sessions for the filter tests and closes some with a disposition.
async fn seed_sessions(store: &Store) {
    let seeds = [
        ("room-a", "inc-1", 1_000),
        ("room-b", "inc-1", 2_000),
        ("room-c", "inc-2", 3_000),
        ("room-d", "inc-2", 4_000),
        ("room-e", "inc-3", 5_000),
    ];
    for (room_id, incident_id, at_ms) in seeds {
        store
            .create_session(new_session(room_id, incident_id, room_id, at_ms))
            .await
            .unwrap();
    }
    store
        .close_session("room-b", "call ended", Some("resolved"), None, 6_000)
        .await
        .unwrap();
    store
        .close_session("room-c", "call ended", Some("referred"), None, 6_000)
        .await
        .unwrap();
    store
        .close_session("room-d", "call ended", Some("resolved"), None, 6_000)
        .await
        .unwrap();
}

fn room_ids(rows: &[SessionRow]) -> Vec<&str> {
    rows.iter().map(|r| r.room_id.as_str()).collect()
}

async fn list_sessions_filters(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    seed_sessions(&store).await;

    let all = store
        .list_sessions(&SessionFilter::default(), 100, None)
        .await
        .unwrap();
    assert_eq!(
        room_ids(&all),
        ["room-a", "room-b", "room-c", "room-d", "room-e"]
    );

    let open = SessionFilter {
        state: Some("open".to_owned()),
        ..SessionFilter::default()
    };
    let rows = store.list_sessions(&open, 100, None).await.unwrap();
    assert_eq!(room_ids(&rows), ["room-a", "room-e"]);

    let incident = SessionFilter {
        incident_id: Some("inc-2".to_owned()),
        ..SessionFilter::default()
    };
    let rows = store.list_sessions(&incident, 100, None).await.unwrap();
    assert_eq!(room_ids(&rows), ["room-c", "room-d"]);

    let resolved = SessionFilter {
        disposition: Some("resolved".to_owned()),
        ..SessionFilter::default()
    };
    let rows = store.list_sessions(&resolved, 100, None).await.unwrap();
    assert_eq!(room_ids(&rows), ["room-b", "room-d"]);

    // created_from_ms is inclusive and created_to_ms exclusive.
    let window = SessionFilter {
        created_from_ms: Some(2_000),
        created_to_ms: Some(4_000),
        ..SessionFilter::default()
    };
    let rows = store.list_sessions(&window, 100, None).await.unwrap();
    assert_eq!(room_ids(&rows), ["room-b", "room-c"]);

    let combined = SessionFilter {
        state: Some("closed".to_owned()),
        incident_id: Some("inc-2".to_owned()),
        disposition: Some("resolved".to_owned()),
        created_from_ms: Some(1),
        created_to_ms: Some(10_000),
    };
    let rows = store.list_sessions(&combined, 100, None).await.unwrap();
    assert_eq!(room_ids(&rows), ["room-d"]);
    assert_eq!(rows[0].disposition.as_deref(), Some("resolved"));
    assert_eq!(rows[0].ended_at_ms, Some(6_000));

    let none = SessionFilter {
        incident_id: Some("inc-404".to_owned()),
        ..SessionFilter::default()
    };
    assert_eq!(
        store.list_sessions(&none, 100, None).await.unwrap(),
        Vec::new()
    );
    assert_eq!(
        store
            .list_sessions(&SessionFilter::default(), 0, None)
            .await
            .unwrap(),
        Vec::new()
    );

    store.close().await;
}

async fn list_sessions_pages_without_gaps(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();

    // Ten sessions, several sharing a creation time, so that paging must
    // break ties on room_id. Created out of order on purpose.
    let mut expected = Vec::new();
    for i in [7, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
        let room_id = format!("room-{i:02}");
        let at_ms = 1_000 + (i / 3) * 100;
        store
            .create_session(new_session(&room_id, "inc-1", &room_id, at_ms))
            .await
            .unwrap();
        expected.push((at_ms, room_id));
    }
    expected.sort();

    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = store
            .list_sessions(&SessionFilter::default(), 4, after.clone())
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        let last = page.last().unwrap();
        after = Some((last.created_at_ms, last.room_id.clone()));
        seen.extend(page.iter().map(|r| (r.created_at_ms, r.room_id.clone())));
    }

    assert_eq!(pages, vec![4, 4, 2]);
    let unique: BTreeSet<&(i64, String)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row came twice: {seen:?}");
    assert_eq!(seen, expected);

    // Paging also applies on top of a filter.
    let early = SessionFilter {
        created_to_ms: Some(1_200),
        ..SessionFilter::default()
    };
    let first = store.list_sessions(&early, 4, None).await.unwrap();
    assert_eq!(
        room_ids(&first),
        ["room-00", "room-01", "room-02", "room-03"]
    );
    let second = store
        .list_sessions(&early, 4, Some((1_100, "room-03".to_owned())))
        .await
        .unwrap();
    assert_eq!(room_ids(&second), ["room-04", "room-05"]);

    store.close().await;
}

async fn participants_listed_and_found_by_identity(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .create_session(new_session("room-2", "inc-2", "req-2", 1_000))
        .await
        .unwrap();

    // The same resident is admitted three times (reconnects), and the same
    // identity exists in another room.
    for (participant_id, at_ms) in [("p-1", 1_100), ("p-2", 1_200), ("p-3", 1_300)] {
        store
            .admit_participant(vpr_store::NewParticipant {
                identity: "resident@example.test".to_owned(),
                ..new_participant(participant_id, "room-1", "resident", at_ms)
            })
            .await
            .unwrap();
    }
    store
        .admit_participant(new_participant("officer-1", "room-1", "officer", 1_050))
        .await
        .unwrap();
    store
        .admit_participant(vpr_store::NewParticipant {
            identity: "resident@example.test".to_owned(),
            ..new_participant("p-other", "room-2", "resident", 1_400)
        })
        .await
        .unwrap();

    let listed = store.list_participants("room-1").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|p| p.participant_id.as_str()).collect();
    assert_eq!(ids, ["officer-1", "p-1", "p-2", "p-3"]);
    assert_eq!(listed[0].badge_id, "4711");
    assert_eq!(listed[0].role, "officer");
    assert!(listed[0].can_publish);
    assert!(listed[0].can_subscribe);
    assert_eq!(
        store.list_participants("room-404").await.unwrap(),
        Vec::new()
    );

    let newest = store
        .participant_by_identity("room-1", "resident@example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest.participant_id, "p-3");

    // After the newest is removed, the lookup returns the one admitted before it.
    store
        .remove_participant("p-3", "kicked", 1_500)
        .await
        .unwrap();
    let after_removal = store
        .participant_by_identity("room-1", "resident@example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_removal.participant_id, "p-2");

    let other_room = store
        .participant_by_identity("room-2", "resident@example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other_room.participant_id, "p-other");

    assert_eq!(
        store
            .participant_by_identity("room-1", "nobody@example.test")
            .await
            .unwrap(),
        None
    );

    store.close().await;
}

async fn participant_rejoins_after_leaving(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "resident", 1_100))
        .await
        .unwrap();
    store.participant_joined("p-1", 1_200).await.unwrap();
    store.participant_left("p-1", "client left", 1_500).await.unwrap();

    // The same link used again: present again, first join time kept.
    store.participant_joined("p-1", 2_000).await.unwrap();
    let row = store.participant_row("p-1").await.unwrap().unwrap();
    assert_eq!(row.joined_at_ms, Some(1_200));
    assert_eq!(row.left_at_ms, None);
    assert_eq!(row.leave_reason, None);
    store
        .track_published(new_track("t-1", "room-1", "p-1", "video", 2_100))
        .await
        .expect("a rejoined participant publishes");
    assert_eq!(store.track_row("t-1").await.unwrap().unwrap().participant_id, "p-1");
}

async fn remove_participant_sets_left(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "resident", 1_100))
        .await
        .unwrap();
    store.participant_joined("p-1", 1_200).await.unwrap();
    store
        .track_published(new_track("t-1", "room-1", "p-1", "video", 1_300))
        .await
        .unwrap();

    let removed = store
        .remove_participant("p-1", "removed by officer", 2_000)
        .await
        .unwrap();
    assert_eq!(removed.participant_id, "p-1");
    assert_eq!(removed.removed_at_ms, Some(2_000));
    assert_eq!(
        removed.removed_reason.as_deref(),
        Some("removed by officer")
    );
    assert_eq!(removed.joined_at_ms, Some(1_200));
    assert_eq!(removed.left_at_ms, Some(2_000));
    assert_eq!(removed.leave_reason.as_deref(), Some("removed by officer"));
    assert_eq!(
        store.participant_row("p-1").await.unwrap(),
        Some(removed.clone())
    );

    let track = store.track_row("t-1").await.unwrap().unwrap();
    assert_eq!(track.unpublished_at_ms, Some(2_000));

    // A second removal keeps the first one.
    let again = store
        .remove_participant("p-1", "second try", 3_000)
        .await
        .unwrap();
    assert_eq!(again, removed);

    let rejoin = store.participant_joined("p-1", 3_100).await;
    assert!(
        matches!(
            rejoin,
            Err(StoreError::Conflict {
                what: "participant",
                ..
            })
        ),
        "{rejoin:?}"
    );

    let unknown = store.remove_participant("p-404", "kicked", 3_000).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { what: "participant", ref id }) if id == "p-404"),
        "{unknown:?}"
    );

    store.close().await;
}

async fn remove_participant_before_join(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "observer", 1_100))
        .await
        .unwrap();

    // Never joined, so there is nothing to leave.
    let removed = store
        .remove_participant("p-1", "admitted by mistake", 1_500)
        .await
        .unwrap();
    assert_eq!(removed.removed_at_ms, Some(1_500));
    assert_eq!(
        removed.removed_reason.as_deref(),
        Some("admitted by mistake")
    );
    assert_eq!(removed.joined_at_ms, None);
    assert_eq!(removed.left_at_ms, None);
    assert_eq!(removed.leave_reason, None);

    let join = store.participant_joined("p-1", 1_600).await;
    assert!(
        matches!(
            join,
            Err(StoreError::Conflict {
                reason: "participant was removed",
                ..
            })
        ),
        "{join:?}"
    );
    let publish = store
        .track_published(new_track("t-1", "room-1", "p-1", "audio", 1_600))
        .await;
    assert!(
        matches!(
            publish,
            Err(StoreError::Conflict {
                reason: "participant was removed",
                ..
            })
        ),
        "{publish:?}"
    );
    assert_eq!(store.track_row("t-1").await.unwrap(), None);

    store.close().await;
}

async fn update_permissions_changes_flags(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(vpr_store::NewParticipant {
            can_publish: false,
            ..new_participant("p-1", "room-1", "observer", 1_100)
        })
        .await
        .unwrap();
    let admitted = store.participant_row("p-1").await.unwrap().unwrap();
    assert!(!admitted.can_publish);
    assert!(admitted.can_subscribe);

    let updated = store.update_permissions("p-1", true, false).await.unwrap();
    assert!(updated.can_publish);
    assert!(!updated.can_subscribe);
    assert_eq!(updated.participant_id, "p-1");
    assert_eq!(store.participant_row("p-1").await.unwrap(), Some(updated));

    let back = store.update_permissions("p-1", false, true).await.unwrap();
    assert!(!back.can_publish);
    assert!(back.can_subscribe);

    let unknown = store.update_permissions("p-404", true, true).await;
    assert!(
        matches!(
            unknown,
            Err(StoreError::NotFound {
                what: "participant",
                ..
            })
        ),
        "{unknown:?}"
    );

    store.close().await;
}

async fn set_track_muted_changes_flag(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "officer", 1_100))
        .await
        .unwrap();
    store
        .track_published(new_track("t-1", "room-1", "p-1", "audio", 1_200))
        .await
        .unwrap();
    assert!(!store.track_row("t-1").await.unwrap().unwrap().muted);

    let muted = store.set_track_muted("t-1", true).await.unwrap();
    assert!(muted.muted);
    assert_eq!(muted.track_id, "t-1");
    assert_eq!(muted.unpublished_at_ms, None);
    assert!(store.track_row("t-1").await.unwrap().unwrap().muted);

    let unmuted = store.set_track_muted("t-1", false).await.unwrap();
    assert!(!unmuted.muted);
    let record = store.session("room-1").await.unwrap().unwrap();
    assert!(!record.tracks[0].muted);

    let unknown = store.set_track_muted("t-404", true).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { what: "track", .. })),
        "{unknown:?}"
    );

    store.close().await;
}

async fn consent_recorded_and_replaced(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store
        .create_session(new_session("room-2", "inc-2", "req-2", 1_000))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-1", "room-1", "resident", 1_100))
        .await
        .unwrap();
    store
        .admit_participant(new_participant("p-2", "room-1", "resident", 1_100))
        .await
        .unwrap();

    assert_eq!(store.consent("p-1").await.unwrap(), None);

    let first = NewConsent {
        participant_id: "p-1".to_owned(),
        room_id: "room-1".to_owned(),
        live_video: true,
        audio: true,
        recording: false,
        channel: "sms-link".to_owned(),
        consented_at_ms: 1_200,
    };
    store.record_consent(first).await.unwrap();
    assert_eq!(
        store.consent("p-1").await.unwrap(),
        Some(ConsentRow {
            participant_id: "p-1".to_owned(),
            room_id: "room-1".to_owned(),
            live_video: true,
            audio: true,
            recording: false,
            channel: "sms-link".to_owned(),
            consented_at_ms: 1_200,
        })
    );

    // Consent given again replaces the first.
    let second = NewConsent {
        participant_id: "p-1".to_owned(),
        room_id: "room-1".to_owned(),
        live_video: false,
        audio: true,
        recording: true,
        channel: "verbal".to_owned(),
        consented_at_ms: 1_500,
    };
    store.record_consent(second).await.unwrap();
    let replaced = store.consent("p-1").await.unwrap().unwrap();
    assert!(!replaced.live_video);
    assert!(replaced.recording);
    assert_eq!(replaced.channel, "verbal");
    assert_eq!(replaced.consented_at_ms, 1_500);

    let wrong_room = store
        .record_consent(NewConsent {
            participant_id: "p-2".to_owned(),
            room_id: "room-2".to_owned(),
            live_video: true,
            audio: true,
            recording: true,
            channel: "verbal".to_owned(),
            consented_at_ms: 1_600,
        })
        .await;
    assert!(
        matches!(wrong_room, Err(StoreError::NotFound { what: "participant", ref id }) if id == "p-2"),
        "{wrong_room:?}"
    );
    assert_eq!(store.consent("p-2").await.unwrap(), None);

    let record = store.session("room-1").await.unwrap().unwrap();
    assert_eq!(record.consents, vec![replaced]);
    assert_eq!(
        store.session("room-2").await.unwrap().unwrap().consents,
        Vec::new()
    );

    store.close().await;
}

async fn quality_upserted_into_record(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    for participant_id in ["p-2", "p-1"] {
        store
            .admit_participant(new_participant(participant_id, "room-1", "resident", 1_100))
            .await
            .unwrap();
    }

    let first = QualityRow {
        participant_id: "p-1".to_owned(),
        bitrate_kbps: 850.5,
        packet_loss: 0.012,
        rtt_ms: 48.25,
        layer_changes: 3,
        updated_at_ms: 2_000,
        jitter_ms: 4.5,
        video_layer: "h".to_owned(),
    };
    store.upsert_quality(first.clone()).await.unwrap();
    assert_eq!(store.quality("p-1").await.unwrap(), Some(first));

    let updated = QualityRow {
        participant_id: "p-1".to_owned(),
        bitrate_kbps: 1_200.0,
        packet_loss: 0.0,
        rtt_ms: 31.5,
        layer_changes: 4,
        updated_at_ms: 3_000,
        jitter_ms: 2.25,
        video_layer: "f".to_owned(),
    };
    store.upsert_quality(updated.clone()).await.unwrap();
    let other = QualityRow {
        participant_id: "p-2".to_owned(),
        bitrate_kbps: 64.0,
        packet_loss: 0.5,
        rtt_ms: 250.0,
        layer_changes: 0,
        updated_at_ms: 3_000,
        jitter_ms: 0.0,
        video_layer: String::new(),
    };
    store.upsert_quality(other.clone()).await.unwrap();

    let record = store.session("room-1").await.unwrap().unwrap();
    assert_eq!(record.quality, vec![updated, other]);

    let unknown = store
        .upsert_quality(QualityRow {
            participant_id: "p-404".to_owned(),
            bitrate_kbps: 1.0,
            packet_loss: 0.0,
            rtt_ms: 1.0,
            layer_changes: 0,
            updated_at_ms: 3_000,
            jitter_ms: 0.0,
            video_layer: String::new(),
        })
        .await;
    assert!(
        matches!(
            unknown,
            Err(StoreError::NotFound {
                what: "participant",
                ..
            })
        ),
        "{unknown:?}"
    );

    store.close().await;
}

fn audit_entry(i: i64) -> NewAuditEntry {
    NewAuditEntry {
        at_ms: 10_000 + i,
        key_id: format!("key-{}", i % 3),
        action: if i % 2 == 0 {
            "CreateRoom"
        } else {
            "RemoveParticipant"
        }
        .to_owned(),
        arguments: format!(r#"{{"room_id":"room-{i}","note":"line\nbreak"}}"#),
    }
}

async fn audit_chain_appends_in_order(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();

    let mut appended = Vec::new();
    for i in 0..5 {
        appended.push(store.append_audit(audit_entry(i)).await.unwrap());
    }

    assert_eq!(appended[0].seq, 1);
    assert_eq!(appended[0].prev_hash, AUDIT_GENESIS_HASH);
    assert_eq!(appended[0].key_id, "key-0");
    assert_eq!(appended[0].action, "CreateRoom");
    assert_eq!(appended[0].at_ms, 10_000);
    assert_eq!(appended[0].hash.len(), 64);
    for pair in appended.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }

    let listed = store.list_audit(0, 100).await.unwrap();
    assert_eq!(listed, appended);
    assert_eq!(verify_audit_chain(&listed, AUDIT_GENESIS_HASH), Ok(()));

    // A page verifies against the hash of the entry before it.
    let page = store.list_audit(2, 2).await.unwrap();
    let seqs: Vec<i64> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(verify_audit_chain(&page, &appended[1].hash), Ok(()));
    assert_eq!(store.list_audit(5, 100).await.unwrap(), Vec::new());
    assert_eq!(store.list_audit(0, 0).await.unwrap(), Vec::new());

    // The chain continues across a reopen.
    store.close().await;
    let reopened = Store::open(&db.url()).await.unwrap();
    let next = reopened.append_audit(audit_entry(5)).await.unwrap();
    assert_eq!(next.seq, 6);
    assert_eq!(next.prev_hash, appended[4].hash);
    reopened.close().await;
}

async fn audit_chain_concurrent_appends_do_not_fork(db: &TestDb) {
    // Two stores on the same database: appends from one store queue on its
    // mutex, and the two stores meet only in the database.
    let store = Store::open(&db.url()).await.unwrap();
    let second = Store::open(&db.url()).await.unwrap();

    let mut tasks = Vec::new();
    for task in 0..8_i64 {
        let store = if task % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..10 {
                let row = store.append_audit(audit_entry(task * 100 + i)).await?;
                seqs.push(row.seq);
            }
            Ok::<_, StoreError>(seqs)
        }));
    }
    let mut all_seqs = Vec::new();
    for task in tasks {
        all_seqs.extend(task.await.unwrap().unwrap());
    }
    all_seqs.sort();
    assert_eq!(all_seqs, (1..=80).collect::<Vec<i64>>());

    let rows = store.list_audit(0, 1_000).await.unwrap();
    assert_eq!(rows.len(), 80);
    assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Ok(()));
    let prev_hashes: BTreeSet<&str> = rows.iter().map(|r| r.prev_hash.as_str()).collect();
    assert_eq!(prev_hashes.len(), 80, "two entries share a parent");

    second.close().await;
    store.close().await;
}

async fn audit_chain_tamper_reports_seq(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    for i in 0..6 {
        store.append_audit(audit_entry(i)).await.unwrap();
    }
    assert_eq!(
        verify_audit_chain(&store.list_audit(0, 100).await.unwrap(), AUDIT_GENESIS_HASH),
        Ok(())
    );

    let changed = db
        .execute_raw(r#"UPDATE audit_log SET arguments = '{"room_id":"forged"}' WHERE seq = 4"#)
        .await;
    assert_eq!(changed, 1);

    let rows = store.list_audit(0, 100).await.unwrap();
    assert_eq!(rows[3].arguments, r#"{"room_id":"forged"}"#);
    assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Err(4));
    // Entries before the tampered one still verify.
    assert_eq!(verify_audit_chain(&rows[..3], AUDIT_GENESIS_HASH), Ok(()));

    store.close().await;
}

async fn event_sequence_advances_after_append(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-1", "inc-1", "req-1", 1_000))
        .await
        .unwrap();

    let mut sequence = store.event_sequence();
    assert_eq!(*sequence.borrow_and_update(), 0);

    let first = store
        .append_event(new_event("room-1", "participant_joined", 1_100))
        .await
        .unwrap();
    assert!(sequence.has_changed().unwrap());
    assert_eq!(*sequence.borrow_and_update(), first);

    // A clone shares the channel, and a waiting receiver wakes up.
    let clone = store.clone();
    let waiter = tokio::spawn(async move {
        sequence.changed().await.unwrap();
        let seen = *sequence.borrow_and_update();
        seen
    });
    let second = clone
        .append_event(new_event("room-1", "participant_left", 1_200))
        .await
        .unwrap();
    assert!(second > first);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("receiver was not woken by append_event")
        .unwrap();
    assert_eq!(seen, second);

    // A failed append leaves the value alone.
    let mut later = store.event_sequence();
    assert_eq!(*later.borrow_and_update(), second);
    assert!(store
        .append_event(new_event("room-404", "note", 1_300))
        .await
        .is_err());
    assert!(!later.has_changed().unwrap());

    // A store opened later starts at the highest stored seq.
    store.close().await;
    let reopened = Store::open(&db.url()).await.unwrap();
    assert_eq!(*reopened.event_sequence().borrow(), second);
    reopened.close().await;
}
