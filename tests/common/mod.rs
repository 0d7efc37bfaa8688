//! Harness for end-to-end tests: runs the real `vpr-server` binary on free
//! loopback ports with its own config and SQLite file, and gives tests an
//! authenticated gRPC client, the HTTP base URL and process control
//! (SIGTERM, restart).

#![allow(dead_code)]

pub mod frames;

use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use vpr_control::pb::room_service_client::RoomServiceClient;
use vpr_control::pb::{
    Consent,
    AdmitParticipantRequest, AdmitParticipantResponse, CreateRoomRequest, Role, Room,
};

/// API key id of the test config.
pub const API_KEY_ID: &str = "test";
/// API key secret of the test config.
pub const API_KEY_SECRET: &str = "test-api-secret";
/// Join token signing secret of the test config.
pub const JOIN_TOKEN_SECRET: &str = "test-join-secret";
/// `shutdown.drain_timeout_s` of the test config.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Maximum time from spawning the server until `/healthz` returns 200.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the path of the test clip's VP8 video (see tests/media/README.md).
pub fn clip_ivf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/media/clip.ivf")
}

/// Returns the path of the test clip's Opus audio (see tests/media/README.md).
pub fn clip_ogg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/media/clip.ogg")
}

/// gRPC client that sends a fresh API JWT with every call.
pub type RoomClient = RoomServiceClient<InterceptedService<Channel, BearerAuth>>;

/// Interceptor adding `authorization: Bearer <API JWT>` to every call.
#[derive(Clone)]
pub struct BearerAuth;

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let jwt = vpr_control::mint_api_jwt(API_KEY_ID, API_KEY_SECRET, Duration::from_secs(300));
        let value = MetadataValue::try_from(format!("Bearer {jwt}"))
            .map_err(|error| Status::internal(format!("invalid authorization value: {error}")))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Ports the server listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// HTTP listener (WHIP, WHEP, health, metrics).
    pub http: u16,
    /// gRPC control plane.
    pub grpc: u16,
    /// Media UDP socket.
    pub media_udp: u16,
}

impl Ports {
    /// Finds three free ports by binding port 0 on 127.0.0.1 and releasing it.
    ///
    /// NOTE: another process can take a port between this check and the
    /// server's bind; the server then fails to start and the test says so.
    pub fn find_free() -> Self {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tcp = || {
            TcpListener::bind((localhost, 0))
                .and_then(|listener| listener.local_addr())
                .expect("binding a TCP port on 127.0.0.1 failed")
                .port()
        };
        let http = tcp();
        let grpc = tcp();
        let media_udp = UdpSocket::bind((localhost, 0))
            .and_then(|socket| socket.local_addr())
            .expect("binding a UDP port on 127.0.0.1 failed")
            .port();
        Self {
            http,
            grpc,
            media_udp,
        }
    }
}

/// An edit of the server's configuration table before it starts.
pub type ConfigEdit = Box<dyn Fn(&mut toml::Table) + Send + Sync>;

/// How to run the server.
pub struct ServerOptions {
    /// Words put before the server command, e.g. `["ip", "netns", "exec", "vpr0"]`.
    pub command_prefix: Vec<String>,
    /// Address the listeners bind and clients connect to.
    pub listen_ip: IpAddr,
    /// Edits applied to the generated config before it is written.
    pub configure: Option<ConfigEdit>,
    /// Log filter for the server; `RUST_LOG` or `info` when `None`.
    pub log_filter: Option<String>,
}

impl ServerOptions {
    /// Returns the defaults with the media worker's debug log on, which
    /// carries a `bandwidth estimate` line per subscriber every 500 ms and
    /// each layer target change.
    pub fn with_estimate_log() -> Self {
        Self { log_filter: Some("info,vpr_sfu::worker=debug,rtc=warn,webrtc=warn".to_owned()), ..Self::default() }
    }
}

/// Returns the server's newest `bandwidth estimate` log line about
/// `participant_id`, if it logged one ([`ServerOptions::with_estimate_log`]).
pub fn newest_estimate_line(server: &TestServer, participant_id: &str) -> Option<String> {
    let log = server.log_tail(400);
    log.lines()
        .rev()
        .find(|line| line.contains("bandwidth estimate") && line.contains(participant_id))
        .map(str::to_owned)
}

/// Reads the number in ` field=<number>` of a log line.
pub fn log_field(line: &str, field: &str) -> Option<u64> {
    let value = line.split(&format!(" {field}=")).nth(1)?;
    value.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            command_prefix: Vec::new(),
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            configure: None,
            log_filter: None,
        }
    }
}

/// A running `vpr-server` child process with its own temp directory.
pub struct TestServer {
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    ports: Ports,
    options: ServerOptions,
    child: Option<Child>,
}

impl TestServer {
    /// Starts a server with the default options and waits until it is healthy.
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server with `options` and waits until it is healthy.
    pub async fn start_with(options: ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir failed");
        let ports = Ports::find_free();
        let config_path = dir.path().join("vpr.toml");
        let log_path = dir.path().join("server.log");

        let mut config = test_config(&ports, options.listen_ip, &dir.path().join("vpr.db"));
        if let Some(configure) = &options.configure {
            configure(&mut config);
        }
        fs::write(
            &config_path,
            toml::to_string(&config).expect("serializing the config failed"),
        )
        .expect("writing the config failed");

        let mut server = Self {
            dir,
            config_path,
            log_path,
            ports,
            options,
            child: None,
        };
        server.spawn_and_wait_healthy().await;
        server
    }

    /// Ports of this server.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// Base URL of the HTTP listener, e.g. `http://127.0.0.1:38211`.
    pub fn http_base(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::new(self.options.listen_ip, self.ports.http)
        )
    }

    /// Address of the media UDP socket.
    pub fn media_addr(&self) -> SocketAddr {
        SocketAddr::new(self.options.listen_ip, self.ports.media_udp)
    }

    /// Path of the server's config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Temp directory holding config, database and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connects an authenticated RoomService client.
    pub async fn grpc_client(&self) -> RoomClient {
        let endpoint = format!(
            "http://{}",
            SocketAddr::new(self.options.listen_ip, self.ports.grpc)
        );
        let channel = Channel::from_shared(endpoint.clone())
            .expect("the gRPC endpoint URL is valid")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "connecting to gRPC at {endpoint} failed: {error}\n{}",
                    self.log_tail(40)
                )
            });
        RoomServiceClient::with_interceptor(channel, BearerAuth)
    }

    /// Returns the last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- server log ({}) ---\n{}",
            self.log_path.display(),
            all[start..].join("\n")
        )
    }

    /// Returns the Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.http_base());
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|error| panic!("GET {url} failed: {error}"));
        assert_eq!(response.status(), reqwest::StatusCode::OK, "GET {url}");
        response.text().await.expect("reading /metrics failed")
    }

    /// Returns the sum of every sample of metric `name`, or `None` if
    /// `/metrics` has no sample of it.
    pub async fn metric_sum(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        sum_metric(&text, name)
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    /// Panics with the log tail if it does not.
    pub async fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the server is not running");
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill failed");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");

        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = child.try_wait().expect("waiting for the server failed") {
                self.child = None;
                return exit;
            }
            if Instant::now() >= deadline {
                panic!(
                    "server did not exit within {timeout:?} of SIGTERM\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the server again on the same config (ports, database); kills a
    /// running one first.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait_healthy().await;
    }

    /// Kills the server (SIGKILL) if it is running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn spawn_and_wait_healthy(&mut self) {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the server log failed");
        writeln!(log, "=== starting vpr-server ===").expect("writing the server log failed");
        let stderr = log.try_clone().expect("cloning the log handle failed");

        let server_binary = env!("CARGO_BIN_EXE_vpr-server");
        let mut words: Vec<String> = self.options.command_prefix.clone();
        words.push(server_binary.to_owned());
        words.push("--config".to_owned());
        words.push(self.config_path.display().to_string());

        let child = Command::new(&words[0])
            .args(&words[1..])
            .env(
                "RUST_LOG",
                self.options.log_filter.clone().unwrap_or_else(|| {
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())
                }),
            )
            .env_remove("VPR_JOIN_TOKEN_SECRET")
            .env_remove("VPR_API_KEYS")
            .env_remove("VPR_STORE_URL")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {words:?} failed: {error}"));
        self.child = Some(child);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let url = format!("{}/healthz", self.http_base());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("building an HTTP client failed");
        let deadline = Instant::now() + STARTUP_TIMEOUT;

        loop {
            if let Some(exit) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "server exited during startup with {exit}\n{}",
                    self.log_tail(60)
                );
            }
            if let Ok(response) = http.get(&url).send().await {
                if response.status() == reqwest::StatusCode::OK {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "GET {url} did not return 200 within {STARTUP_TIMEOUT:?}\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Builds the test config: the shape of config/default.toml with free ports,
/// a fresh SQLite file and test secrets.
fn test_config(ports: &Ports, listen_ip: IpAddr, database: &Path) -> toml::Table {
    let http = SocketAddr::new(listen_ip, ports.http);
    let grpc = SocketAddr::new(listen_ip, ports.grpc);
    let media = SocketAddr::new(listen_ip, ports.media_udp);
    let text = format!(
        r#"
[http]
listen = "{http}"
public_url = "http://{http}"
max_body_bytes = 65536
cors_allowed_origins = ["*"]

[grpc]
listen = "{grpc}"

[media]
udp_listen = "{media}"
announced_ips = []
keyframe_request_interval_ms = 500
connect_timeout_s = 30

[store]
url = "sqlite://{database}"

[rooms]
default_max_participants = 8
default_token_ttl_s = 3600

[auth]
join_token_secret = "{JOIN_TOKEN_SECRET}"

[[auth.api_keys]]
key_id = "{API_KEY_ID}"
secret = "{API_KEY_SECRET}"

[shutdown]
drain_timeout_s = {drain}

[snapshots]
dir = "{snapshots}"
max_bytes = 4194304
"#,
        database = database.display(),
        snapshots = database.with_file_name("snapshots").display(),
        drain = DRAIN_TIMEOUT.as_secs(),
    );
    text.parse()
        .expect("the test config template is valid TOML")
}

/// Sums every sample of metric `name` in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse::<f64>().ok());
        if let Some(value) = value {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Creates a room for `incident_id` and returns it.
pub async fn create_room(client: &mut RoomClient, incident_id: &str) -> Room {
    let response = client
        .create_room(CreateRoomRequest {
            incident_id: incident_id.to_owned(),
            request_id: format!("{incident_id}-create"),
            call_type: "burglary".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("CreateRoom for {incident_id} failed: {status}"))
        .into_inner();
    response.room.expect("CreateRoom returned no room")
}

/// Admits `identity` with `role` into `room_id`: a resident with consent to
/// share live video and audio by SMS link, an officer with a badge id.
pub async fn admit(
    client: &mut RoomClient,
    room_id: &str,
    identity: &str,
    role: Role,
) -> AdmitParticipantResponse {
    client
        .admit_participant(AdmitParticipantRequest {
            room_id: room_id.to_owned(),
            identity: identity.to_owned(),
            display_name: identity.to_owned(),
            role: role as i32,
            token_ttl_seconds: 0,
            badge_id: if role == Role::Officer { format!("B-{identity}") } else { String::new() },
            can_publish: None,
            can_subscribe: None,
            consent: (role == Role::Resident).then(|| Consent {
                live_video: true,
                audio: true,
                recording: false,
                channel: "sms-link".to_owned(),
                consented_at_unix_ms: 0,
            }),
        })
        .await
        .unwrap_or_else(|status| {
            panic!("AdmitParticipant {identity} into {room_id} failed: {status}")
        })
        .into_inner()
}

/// A live call: a room where the officer receives over WHEP and the
/// resident publishes the looping clip over WHIP, both connected.
pub struct LiveCall {
    pub room: Room,
    pub resident: AdmitParticipantResponse,
    pub officer: AdmitParticipantResponse,
    pub publisher: vpr_bench::client::WhipPublisher,
    pub subscriber: vpr_bench::client::WhepSubscriber,
}

/// Opens a room for `incident_id` and starts a live call in it: the officer
/// subscribes first, then the resident publishes.
pub async fn start_live_call(client: &mut RoomClient, incident_id: &str) -> LiveCall {
    use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    let room = create_room(client, incident_id).await;
    let resident = admit(client, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(client, &room.room_id, "officer", Role::Officer).await;

    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .expect("WHEP subscribe");
    subscriber.wait_connected(CONNECT_TIMEOUT).await.expect("subscriber connects");
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP publish");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");

    LiveCall { room, resident, officer, publisher, subscriber }
}

/// Starts `resident`'s simulcast WHIP publisher with `options` and waits
/// until it is connected. A failure panics with the server's log tail.
pub async fn publish_simulcast(
    server: &TestServer,
    resident: &AdmitParticipantResponse,
    options: vpr_bench::client::simulcast::SimulcastOptions,
) -> vpr_bench::client::simulcast::SimulcastPublisher {
    use vpr_bench::client::simulcast::SimulcastPublisher;
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    let publisher = SimulcastPublisher::start_with(&resident.whip_url, &resident.join_token, options)
        .await
        .unwrap_or_else(|error| panic!("simulcast publish failed: {error}\n{}", server.log_tail(40)));
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("simulcast publisher did not connect: {error}\n{}", server.log_tail(40)));
    publisher
}
