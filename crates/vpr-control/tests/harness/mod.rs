//! Shared harness of the RoomService tests: a real gRPC server on 127.0.0.1
//! over a real SQLite file, with a media plane that records the calls it
//! receives, and clients signed with a write key or a read-only key.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use vpr_control::pb;
use vpr_control::pb::room_service_client::RoomServiceClient;
use vpr_control::{
    mint_api_jwt, ApiKey, JoinTokenSigner, MediaRooms, RoomServiceConfig, RoomServiceImpl,
    ServeOptions, TlsFiles,
};
use vpr_store::Store;

pub const KEY_ID: &str = "cad";
pub const KEY_SECRET: &str = "cad-secret";
pub const READ_KEY_ID: &str = "report";
pub const READ_KEY_SECRET: &str = "report-secret";
pub const JOIN_SECRET: &[u8] = b"join-secret";
pub const BASE_URL: &str = "http://127.0.0.1:8080";

/// A media plane call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCall {
    Open {
        room_id: String,
        max_participants: u32,
    },
    Close {
        room_id: String,
        reason: String,
    },
    RemoveParticipant {
        room_id: String,
        participant_id: String,
        reason: String,
    },
    MuteTrack {
        room_id: String,
        track_id: String,
        muted: bool,
    },
    Permissions {
        room_id: String,
        participant_id: String,
        can_publish: bool,
        can_subscribe: bool,
    },
}

#[derive(Default)]
pub struct RecordingMedia {
    calls: Mutex<Vec<MediaCall>>,
}

impl MediaRooms for RecordingMedia {
    fn open_room(&self, room_id: &str, max_participants: u32, _empty_timeout: Option<std::time::Duration>) {
        self.calls.lock().unwrap().push(MediaCall::Open {
            room_id: room_id.to_owned(),
            max_participants,
        });
    }

    fn close_room(&self, room_id: &str, reason: &str) {
        self.calls.lock().unwrap().push(MediaCall::Close {
            room_id: room_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    fn remove_participant(&self, room_id: &str, participant_id: &str, reason: &str) {
        self.calls.lock().unwrap().push(MediaCall::RemoveParticipant {
            room_id: room_id.to_owned(),
            participant_id: participant_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    fn set_track_muted(&self, room_id: &str, track_id: &str, muted: bool) {
        self.calls.lock().unwrap().push(MediaCall::MuteTrack {
            room_id: room_id.to_owned(),
            track_id: track_id.to_owned(),
            muted,
        });
    }

    fn set_permissions(
        &self,
        room_id: &str,
        participant_id: &str,
        can_publish: bool,
        can_subscribe: bool,
    ) {
        self.calls.lock().unwrap().push(MediaCall::Permissions {
            room_id: room_id.to_owned(),
            participant_id: participant_id.to_owned(),
            can_publish,
            can_subscribe,
        });
    }
}

/// Interceptor that sends a fixed `authorization` value, or none.
#[derive(Clone)]
pub struct FixedAuth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for FixedAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = RoomServiceClient<InterceptedService<Channel, FixedAuth>>;

pub struct Harness {
    pub address: String,
    pub media: Arc<RecordingMedia>,
    /// A second handle on the server's store, for set-up and checks.
    pub store: Store,
    pub database: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(ServeOptions::default(), "http").await
    }

    /// Starts the server with `options`; `scheme` is the client URL scheme.
    pub async fn start_with(options: ServeOptions, scheme: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("vpr.db");
        let url = format!("sqlite://{}", database.display());
        let store = Store::open(&url).await.unwrap();

        let media = Arc::new(RecordingMedia::default());
        let config = RoomServiceConfig {
            public_base_url: format!("{BASE_URL}/"),
            default_token_ttl: Duration::from_secs(300),
            max_token_ttl: Duration::from_secs(3600),
            default_max_participants: 3,
            max_participants_limit: 10,
        };
        let service = RoomServiceImpl::new(
            store.clone(),
            JoinTokenSigner::new(JOIN_SECRET),
            media.clone(),
            config,
        );
        let read_only = ApiKey {
            scopes: vec!["rooms:read".to_owned()],
            ..ApiKey::new(READ_KEY_ID, READ_KEY_SECRET)
        };
        let keys = vec![ApiKey::new(KEY_ID, KEY_SECRET), read_only];

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            vpr_control::serve_with(listener, service, &keys, options, async {
                let _ = shutdown_rx.await;
            })
            .await
            .unwrap();
        });

        Harness {
            address,
            media,
            store,
            database,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Returns a client that sends `authorization` verbatim, or nothing.
    pub async fn client_with(&self, authorization: Option<String>) -> Client {
        let value = authorization.map(|value| value.parse().unwrap());
        RoomServiceClient::with_interceptor(self.channel().await, FixedAuth(value))
    }

    /// Returns a client signed with the write key (both scopes).
    pub async fn client(&self) -> Client {
        let token = mint_api_jwt(KEY_ID, KEY_SECRET, Duration::from_secs(300));
        self.client_with(Some(format!("Bearer {token}"))).await
    }

    /// Returns a client signed with the read-only key.
    pub async fn read_client(&self) -> Client {
        let token = mint_api_jwt(READ_KEY_ID, READ_KEY_SECRET, Duration::from_secs(300));
        self.client_with(Some(format!("Bearer {token}"))).await
    }

    pub fn media_calls(&self) -> Vec<MediaCall> {
        self.media.calls.lock().unwrap().clone()
    }

    /// Stops the server gracefully and waits until it has returned.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server did not stop within 10 s")
                .unwrap();
        }
    }
}

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn unix_now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub fn create_request(incident_id: &str, request_id: &str) -> pb::CreateRoomRequest {
    pb::CreateRoomRequest {
        incident_id: incident_id.to_owned(),
        request_id: request_id.to_owned(),
        call_type: "burglary".to_owned(),
        max_participants: 0,
        metadata: r#"{"address":"1 Main St"}"#.to_owned(),
        empty_timeout_seconds: 0,
    }
}

pub fn consent() -> pb::Consent {
    pb::Consent {
        live_video: true,
        audio: true,
        recording: false,
        channel: "web_form".to_owned(),
        consented_at_unix_ms: 0,
    }
}

/// Builds an admission request with what each role needs: consent for
/// residents, a badge id for officers.
pub fn admit_request(room_id: &str, identity: &str, role: pb::Role) -> pb::AdmitParticipantRequest {
    pb::AdmitParticipantRequest {
        room_id: room_id.to_owned(),
        identity: identity.to_owned(),
        display_name: format!("{identity} display"),
        role: role as i32,
        badge_id: if role == pb::Role::Officer {
            format!("B-{identity}")
        } else {
            String::new()
        },
        consent: (role == pb::Role::Resident).then(consent),
        ..Default::default()
    }
}

pub async fn create_room(client: &mut Client, incident_id: &str) -> String {
    client
        .create_room(create_request(incident_id, "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap()
        .room_id
}

/// Writes a self-signed certificate for 127.0.0.1 and localhost and its key
/// to `dir`, and returns the files with the certificate's PEM.
pub fn self_signed_tls(dir: &std::path::Path) -> (TlsFiles, String) {
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .unwrap();
    let cert_pem = certified.cert.pem();
    let files = TlsFiles {
        cert_path: dir.join("cert.pem"),
        key_path: dir.join("key.pem"),
    };
    std::fs::write(&files.cert_path, &cert_pem).unwrap();
    std::fs::write(&files.key_path, certified.signing_key.serialize_pem()).unwrap();
    (files, cert_pem)
}
