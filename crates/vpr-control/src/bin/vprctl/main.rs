//! vprctl: operator CLI for the VPR control plane. Creates, lists, shows and
//! closes rooms, admits and manages participants, prints session records,
//! tails the event log and verifies the audit chain over gRPC, signing each
//! call with an API key. Prints tables by default and JSON with `--json`.

mod audit;
mod json;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vpr_control::pb;
use vpr_control::pb::room_service_client::RoomServiceClient;

/// Lifetime of the API JWT minted for each vprctl run. `tail` streams may run
/// longer; the server checks the JWT when the stream starts.
const API_JWT_TTL: Duration = Duration::from_secs(300);

/// Page size of the List requests that read every page.
const PAGE_SIZE: u32 = 500;

/// Interceptor that adds the API JWT to a call.
type AuthInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

/// RoomService client that sends the API JWT with every call.
type Client = RoomServiceClient<InterceptedService<Channel, AuthInterceptor>>;

#[derive(Parser)]
#[command(name = "vprctl", about = "Operator CLI for the VPR control plane")]
struct Cli {
    /// gRPC address of the control plane; https:// for TLS.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// PEM file of the CA certificate that signed the server's TLS certificate
    /// (with an https:// --server); the system roots are not used.
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// API key id to sign calls with.
    #[arg(long, global = true, env = "VPR_API_KEY_ID", default_value = "dev")]
    key_id: String,
    /// API key secret to sign calls with.
    #[arg(
        long,
        global = true,
        env = "VPR_API_KEY_SECRET",
        default_value = "dev-secret-change-me",
        hide_default_value = true,
        hide_env_values = true
    )]
    key_secret: String,
    /// Print responses as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a room for an incident (a retry with the same request id returns the same room).
    CreateRoom {
        /// CAD incident id.
        #[arg(long)]
        incident: String,
        /// Idempotency key; defaults to a new random id.
        #[arg(long)]
        request_id: Option<String>,
        /// Call type, e.g. "burglary".
        #[arg(long, default_value = "")]
        call_type: String,
        /// Maximum participants; 0 selects the server default.
        #[arg(long, default_value_t = 0)]
        max_participants: u32,
        /// Opaque CAD metadata, at most 4096 bytes.
        #[arg(long, default_value = "")]
        metadata: String,
        /// Seconds an empty room may stay open (stored only); 0 = no limit.
        #[arg(long, default_value_t = 0)]
        empty_timeout: u32,
    },
    /// List rooms, oldest first; every page unless --page-size is given.
    ListRooms {
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[arg(long, default_value = "")]
        incident: String,
        /// Print only one page of this many rooms.
        #[arg(long)]
        page_size: Option<u32>,
    },
    /// Print one room.
    ShowRoom {
        #[arg(long)]
        room: String,
    },
    /// Close a room with a disposition; disconnects every participant.
    CloseRoom {
        #[arg(long)]
        room: String,
        #[arg(long, value_enum)]
        disposition: DispositionArg,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Admit a participant and print the join link, token and WHIP/WHEP URLs.
    Admit {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Officer badge id; required for --role officer.
        #[arg(long, default_value = "")]
        badge: String,
        /// Join token lifetime in seconds; 0 selects the server default.
        #[arg(long, default_value_t = 0)]
        token_ttl: u32,
        /// Publish permission; the role's default when omitted.
        #[arg(long)]
        can_publish: Option<bool>,
        /// Subscribe permission; true when omitted.
        #[arg(long)]
        can_subscribe: Option<bool>,
        /// Resident consents to live video.
        #[arg(long)]
        consent_video: bool,
        /// Resident consents to audio.
        #[arg(long)]
        consent_audio: bool,
        /// Resident consents to recording.
        #[arg(long)]
        consent_recording: bool,
        /// Channel of the resident's consent, e.g. "web_form". Giving it sends
        /// the consent, which --role resident requires.
        #[arg(long)]
        consent_channel: Option<String>,
    },
    /// Remove a participant from a room and disconnect it.
    Remove {
        #[arg(long)]
        room: String,
        #[arg(long)]
        participant: String,
        #[arg(long)]
        reason: String,
    },
    /// Mute (or with --unmute resume) a published track.
    Mute {
        #[arg(long)]
        room: String,
        #[arg(long)]
        track: String,
        #[arg(long)]
        unmute: bool,
    },
    /// Set a participant's publish and subscribe permissions.
    Permissions {
        #[arg(long)]
        room: String,
        #[arg(long)]
        participant: String,
        #[arg(long)]
        can_publish: bool,
        #[arg(long)]
        can_subscribe: bool,
    },
    /// List the participants of a room.
    Participants {
        #[arg(long)]
        room: String,
    },
    /// Print a room's session record: participants, tracks, consent, quality, events.
    Session {
        #[arg(long)]
        room: String,
    },
    /// List session records, oldest first; every page unless --page-size is given.
    ListSessions {
        /// Created at or after this unix ms.
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// Created before this unix ms.
        #[arg(long, default_value_t = 0)]
        to: i64,
        #[arg(long, default_value = "")]
        incident: String,
        #[arg(long, value_enum)]
        disposition: Option<DispositionArg>,
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Print only one page of this many sessions.
        #[arg(long)]
        page_size: Option<u32>,
    },
    /// Print events as they are stored, from after --after on.
    Tail {
        /// Only events of this room.
        #[arg(long, default_value = "")]
        room: String,
        /// Start after this event seq (0 = from the first event).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Stop after this many events; follow until interrupted when omitted.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Audit trail commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Read the whole audit trail and check its hash chain; exits 1 if broken.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Resident,
    Officer,
    Observer,
    Dispatcher,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    Open,
    Closed,
}

#[derive(Clone, Copy, ValueEnum)]
enum DispositionArg {
    ResolvedVirtually,
    PatrolDispatched,
    ForensicUnitDispatched,
    Referred,
    Abandoned,
}

impl RoleArg {
    fn to_pb(self) -> pb::Role {
        match self {
            RoleArg::Resident => pb::Role::Resident,
            RoleArg::Officer => pb::Role::Officer,
            RoleArg::Observer => pb::Role::Observer,
            RoleArg::Dispatcher => pb::Role::Dispatcher,
        }
    }
}

impl StateArg {
    fn to_pb(self) -> pb::RoomState {
        match self {
            StateArg::Open => pb::RoomState::Open,
            StateArg::Closed => pb::RoomState::Closed,
        }
    }
}

impl DispositionArg {
    fn to_pb(self) -> pb::Disposition {
        match self {
            DispositionArg::ResolvedVirtually => pb::Disposition::ResolvedVirtually,
            DispositionArg::PatrolDispatched => pb::Disposition::PatrolDispatched,
            DispositionArg::ForensicUnitDispatched => pb::Disposition::ForensicUnitDispatched,
            DispositionArg::Referred => pb::Disposition::Referred,
            DispositionArg::Abandoned => pb::Disposition::Abandoned,
        }
    }
}

/// Output of a command: one object, or a list shown as a table of columns.
enum Output {
    Object(Value),
    List {
        /// Rows printed as a JSON array with --json.
        rows: Vec<Value>,
        /// Rows of the table, when they differ from `rows`.
        table_rows: Option<Vec<Value>>,
        columns: &'static [&'static str],
    },
    /// Already printed (streamed output).
    Done,
}

const ROOM_COLUMNS: &[&str] = &["room_id", "incident_id", "state", "call_type", "max_participants", "created_at_unix_ms", "disposition"];
const PARTICIPANT_COLUMNS: &[&str] = &["participant_id", "identity", "role", "badge_id", "can_publish", "can_subscribe", "left_at_unix_ms", "removed_reason"];
const SESSION_COLUMNS: &[&str] = &["room_id", "incident_id", "state", "disposition", "participants", "tracks", "events", "created_at_unix_ms"];
const EVENT_COLUMNS: &[&str] = &["seq", "room_id", "kind", "participant_id", "track_id", "detail"];

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(exit_code) => std::process::exit(exit_code),
        Err(message) => {
            eprintln!("vprctl: {message}");
            std::process::exit(1);
        }
    }
}

/// Runs the command and returns the process exit code.
async fn run(cli: Cli) -> Result<i32, String> {
    let mut client = connect(&cli).await?;
    let as_json = cli.json;

    let output = match cli.command {
        Command::Audit { command: AuditCommand::Verify } => {
            return audit::verify(&mut client, as_json).await;
        }
        Command::Tail { room, after, limit } => {
            tail(&mut client, room, after, limit, as_json).await?;
            Output::Done
        }
        command => run_call(&mut client, command).await?,
    };

    match output {
        Output::Object(value) if as_json => println!("{value:#}"),
        Output::Object(value) => output::print_plain(&value, ""),
        Output::List { rows, .. } if as_json => println!("{:#}", Value::Array(rows)),
        Output::List { rows, table_rows, columns } => {
            output::print_table(&table_rows.unwrap_or(rows), columns)
        }
        Output::Done => {}
    }
    Ok(0)
}

async fn connect(cli: &Cli) -> Result<Client, String> {
    let mut endpoint = Channel::from_shared(cli.server.clone())
        .map_err(|error| format!("invalid --server {:?}: {error}", cli.server))?;
    if let Some(ca_cert) = &cli.ca_cert {
        let pem = std::fs::read(ca_cert)
            .map_err(|error| format!("reading --ca-cert {} failed: {error}", ca_cert.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|error| format!("TLS configuration rejected: {error}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("connecting to {} failed: {error}", cli.server))?;

    let authorization = format!(
        "Bearer {}",
        vpr_control::mint_api_jwt(&cli.key_id, &cli.key_secret, API_JWT_TTL)
    );
    let authorization: MetadataValue<_> = authorization
        .parse()
        .map_err(|_| "API key id contains characters not allowed in metadata".to_owned())?;
    let interceptor: AuthInterceptor = Box::new(move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            Ok(request)
        });
    Ok(RoomServiceClient::with_interceptor(channel, interceptor))
}

fn status_message(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Runs one unary command.
async fn run_call(client: &mut Client, command: Command) -> Result<Output, String> {
    let output = match command {
        Command::CreateRoom {
            incident,
            request_id,
            call_type,
            max_participants,
            metadata,
            empty_timeout,
        } => {
            let request = pb::CreateRoomRequest {
                incident_id: incident,
                request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                call_type,
                max_participants,
                metadata,
                empty_timeout_seconds: empty_timeout,
            };
            let response = client.create_room(request).await.map_err(status_message)?.into_inner();
            let mut value = json::room(response.room.as_ref());
            value["created"] = json!(response.created);
            Output::Object(value)
        }
        Command::ListRooms { state, incident, page_size } => {
            let mut request = pb::ListRoomsRequest {
                state: state.map(StateArg::to_pb).unwrap_or_default() as i32,
                incident_id: incident,
                page_size: page_size.unwrap_or(PAGE_SIZE),
                page_token: String::new(),
            };
            let mut rows = Vec::new();
            loop {
                let response = client.list_rooms(request.clone()).await.map_err(status_message)?.into_inner();
                rows.extend(response.rooms.iter().map(|room| json::room(Some(room))));
                if page_size.is_some() || response.next_page_token.is_empty() {
                    break;
                }
                request.page_token = response.next_page_token;
            }
            Output::List { rows, table_rows: None, columns: ROOM_COLUMNS }
        }
        Command::ShowRoom { room } => {
            let response = client
                .get_room(pb::GetRoomRequest { room_id: room })
                .await
                .map_err(status_message)?
                .into_inner();
            Output::Object(json::room(Some(&response)))
        }
        Command::CloseRoom { room, disposition, notes } => {
            let request = pb::CloseRoomRequest {
                room_id: room,
                disposition: disposition.to_pb() as i32,
                notes,
            };
            let response = client.close_room(request).await.map_err(status_message)?.into_inner();
            Output::Object(json::room(Some(&response)))
        }
        Command::Admit {
            room,
            identity,
            role,
            display_name,
            badge,
            token_ttl,
            can_publish,
            can_subscribe,
            consent_video,
            consent_audio,
            consent_recording,
            consent_channel,
        } => {
            let consent = consent_channel.map(|channel| pb::Consent {
                live_video: consent_video,
                audio: consent_audio,
                recording: consent_recording,
                channel,
                consented_at_unix_ms: 0,
            });
            let request = pb::AdmitParticipantRequest {
                room_id: room,
                identity,
                display_name,
                role: role.to_pb() as i32,
                token_ttl_seconds: token_ttl,
                badge_id: badge,
                can_publish,
                can_subscribe,
                consent,
            };
            let response = client.admit_participant(request).await.map_err(status_message)?.into_inner();
            Output::Object(json::admitted(&response))
        }
        Command::Remove { room, participant, reason } => {
            let request = pb::RemoveParticipantRequest {
                room_id: room,
                participant_id: participant,
                reason,
            };
            let response = client.remove_participant(request).await.map_err(status_message)?.into_inner();
            Output::Object(json::participant(&response))
        }
        Command::Mute { room, track, unmute } => {
            let request = pb::MuteTrackRequest {
                room_id: room,
                track_id: track,
                muted: !unmute,
            };
            let response = client.mute_track(request).await.map_err(status_message)?.into_inner();
            Output::Object(json::track(&response))
        }
        Command::Permissions { room, participant, can_publish, can_subscribe } => {
            let request = pb::UpdateParticipantPermissionsRequest {
                room_id: room,
                participant_id: participant,
                can_publish,
                can_subscribe,
            };
            let response = client
                .update_participant_permissions(request)
                .await
                .map_err(status_message)?
                .into_inner();
            Output::Object(json::participant(&response))
        }
        Command::Participants { room } => {
            let response = client
                .list_participants(pb::ListParticipantsRequest { room_id: room })
                .await
                .map_err(status_message)?
                .into_inner();
            let rows = response.participants.iter().map(json::participant).collect();
            Output::List { rows, table_rows: None, columns: PARTICIPANT_COLUMNS }
        }
        Command::Session { room } => {
            let response = client
                .get_session(pb::GetSessionRequest { room_id: room })
                .await
                .map_err(status_message)?
                .into_inner();
            Output::Object(json::session(&response))
        }
        Command::ListSessions { from, to, incident, disposition, state, page_size } => {
            let mut request = pb::ListSessionsRequest {
                created_from_unix_ms: from,
                created_to_unix_ms: to,
                incident_id: incident,
                disposition: disposition.map(DispositionArg::to_pb).unwrap_or_default() as i32,
                state: state.map(StateArg::to_pb).unwrap_or_default() as i32,
                page_size: page_size.unwrap_or(PAGE_SIZE),
                page_token: String::new(),
            };
            let mut sessions = Vec::new();
            loop {
                let response = client.list_sessions(request.clone()).await.map_err(status_message)?.into_inner();
                sessions.extend(response.sessions);
                if page_size.is_some() || response.next_page_token.is_empty() {
                    break;
                }
                request.page_token = response.next_page_token;
            }
            sessions_output(&sessions)
        }
        Command::Tail { .. } | Command::Audit { .. } => unreachable!("handled in run"),
    };
    Ok(output)
}

/// Full records in JSON; a summary row per session in a table.
fn sessions_output(sessions: &[pb::Session]) -> Output {
    let rows = sessions.iter().map(json::session).collect();
    let summaries = sessions
        .iter()
        .map(|session| {
            let mut summary = json::room(session.room.as_ref());
            summary["participants"] = json!(session.participants.len());
            summary["tracks"] = json!(session.tracks.len());
            summary["events"] = json!(session.events.len());
            summary
        })
        .collect();
    Output::List {
        rows,
        table_rows: Some(summaries),
        columns: SESSION_COLUMNS,
    }
}

/// Prints events from WatchEvents as they arrive, one line (or JSON object)
/// each.
async fn tail(
    client: &mut Client,
    room: String,
    after: i64,
    limit: Option<usize>,
    as_json: bool,
) -> Result<(), String> {
    let request = pb::WatchEventsRequest {
        room_id: room,
        after_seq: after,
    };
    let mut stream = client.watch_events(request).await.map_err(status_message)?.into_inner();
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let Some(event) = stream.message().await.map_err(status_message)? else {
            break;
        };
        let value = json::event(&event);
        if as_json {
            println!("{value}");
        } else {
            let line: Vec<String> = EVENT_COLUMNS
                .iter()
                .map(|column| match &value[*column] {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect();
            println!("{}", line.join("  "));
        }
        printed += 1;
    }
    Ok(())
}
