//! An officer's snapshot is stored on the server and appears in the session
//! record with the SHA-256 of the stored file.

mod common;

use std::path::PathBuf;

use common::{admit, create_room, TestServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use vpr_control::pb::{GetSessionRequest, Role};

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00,
    0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff,
    0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

async fn post(url: &str, token: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("POST /snapshots");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn officer_snapshot_is_recorded_with_hash() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-snapshot").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;
    let url = format!("{}/snapshots", server.http_base());

    let (status, body) = post(&url, &officer.join_token, "image/png", PNG.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
    assert_eq!(reply["sha256"], hex_sha256(PNG));

    let (status, body) = post(&url, &resident.join_token, "image/png", PNG.to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "resident snapshot: {body}");
    let (status, body) = post(&url, &officer.join_token, "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, body) = post(&url, &officer.join_token, "image/png", b"not a png".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut oversized = PNG.to_vec();
    oversized.resize(5 * 1024 * 1024, 0);
    let (status, _) = post(&url, &officer.join_token, "image/png", oversized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "5 MiB snapshot");

    let session = grpc
        .get_session(GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    assert_eq!(session.snapshots.len(), 1, "snapshots: {:?}", session.snapshots);
    let snapshot = &session.snapshots[0];
    assert_eq!(snapshot.participant_id, officer.participant_id);
    assert_eq!(snapshot.sha256, hex_sha256(PNG));
    assert_eq!(snapshot.size_bytes, PNG.len() as i64);
    assert!(session.events.iter().any(|e| e.kind == "snapshot_saved"), "events: {:?}", session.events);

    // The stored file hashes to the recorded value.
    let stored = PathBuf::from(server.dir()).join("snapshots").join(&room.room_id).join(format!("{}.png", snapshot.snapshot_id));
    let bytes = std::fs::read(&stored).unwrap_or_else(|err| panic!("reading {}: {err}", stored.display()));
    assert_eq!(hex_sha256(&bytes), snapshot.sha256);
}
