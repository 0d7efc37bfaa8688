//! The control plane listener: TLS, gRPC health, server reflection and
//! shutdown with open event streams.

mod harness;

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use vpr_control::pb;
use vpr_control::ServeOptions;

use harness::*;

#[tokio::test]
async fn tls_listener_serves_room_service() {
    let dir = tempfile::tempdir().unwrap();
    let (files, cert_pem) = self_signed_tls(dir.path());
    let harness = Harness::start_with(ServeOptions { tls: Some(files) }, "https").await;

    let channel = Channel::from_shared(harness.address.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = vpr_control::mint_api_jwt(KEY_ID, KEY_SECRET, Duration::from_secs(60));
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut client = pb::room_service_client::RoomServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", value.clone());
            Ok(request)
        },
    );

    let room = client
        .create_room(create_request("INC-TLS", "req-1"))
        .await
        .unwrap()
        .into_inner()
        .room
        .unwrap();
    assert!(room.room_id.starts_with("rm_"));

    // A plaintext client cannot talk to the TLS listener.
    let plain_address = harness.address.replace("https://", "http://");
    let plain = Channel::from_shared(plain_address).unwrap().connect().await;
    if let Ok(plain) = plain {
        let mut health = HealthClient::new(plain);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            health.check(HealthCheckRequest::default()),
        )
        .await;
        assert!(
            !matches!(result, Ok(Ok(_))),
            "plaintext call succeeded on the TLS listener"
        );
    }
}

#[tokio::test]
async fn vprctl_connects_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = self_signed_tls(dir.path());
    let cert_path = files.cert_path.clone();
    let harness = Harness::start_with(ServeOptions { tls: Some(files) }, "https").await;
    let server = harness.address.replace("127.0.0.1", "localhost");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vprctl"))
        .args(["--server", &server, "--key-id", KEY_ID, "--json"])
        .args(["--ca-cert", cert_path.to_str().unwrap()])
        .args(["create-room", "--incident", "INC-TLS-CLI"])
        .env("VPR_API_KEY_SECRET", KEY_SECRET)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let room: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(room["incident_id"], "INC-TLS-CLI");
}

#[tokio::test]
async fn health_reports_serving_without_auth() {
    let harness = Harness::start().await;
    let mut health = HealthClient::new(harness.channel().await);

    let response = health
        .check(HealthCheckRequest {
            service: "vpr.control.v1.RoomService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status, ServingStatus::Serving as i32);

    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);

    let unknown = health
        .check(HealthCheckRequest {
            service: "vpr.control.v1.Nothing".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_room_service() {
    let harness = Harness::start().await;
    let mut reflection = ServerReflectionClient::new(harness.channel().await);

    let requests = tokio_stream::iter(vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "vpr.control.v1.RoomService".to_owned(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let listed = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"vpr.control.v1.RoomService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let file = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(descriptors)) = file.message_response else {
        panic!("expected a file descriptor, got {file:?}");
    };
    assert!(!descriptors.file_descriptor_proto.is_empty());
    let decoded = <prost_types::FileDescriptorProto as prost::Message>::decode(
        descriptors.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(decoded.package(), "vpr.control.v1");
    let methods: Vec<&str> = decoded.service[0]
        .method
        .iter()
        .map(|method| method.name())
        .collect();
    assert!(methods.contains(&"WatchEvents"), "{methods:?}");
    assert!(methods.contains(&"ListAuditEntries"), "{methods:?}");
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let mut harness = Harness::start().await;
    let mut client = harness.read_client().await;
    let mut stream = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Harness::stop fails the test if the server waits on the stream.
    harness.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream did not end");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
