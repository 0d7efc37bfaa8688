//! vprctl: operator CLI for the VPR control plane. Creates rooms, admits
//! participants, closes rooms and prints session records over gRPC, signing
//! each call with an API key.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vpr_control::pb;
use vpr_control::pb::room_service_client::RoomServiceClient;

/// Lifetime of the API JWT minted for each vprctl call.
const API_JWT_TTL: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(name = "vprctl", about = "Operator CLI for the VPR control plane")]
struct Cli {
    /// gRPC address of the control plane.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    server: String,
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
    /// Print responses as JSON.
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
    },
    /// Admit a participant and print the join token with the WHIP and WHEP URLs.
    Admit {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Join token lifetime in seconds; 0 selects the server default.
        #[arg(long, default_value_t = 0)]
        token_ttl: u32,
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
    /// Print a room's session record: participants, tracks and events.
    Session {
        #[arg(long)]
        room: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Resident,
    Officer,
    Observer,
}

#[derive(Clone, Copy, ValueEnum)]
enum DispositionArg {
    ResolvedVirtually,
    PatrolDispatched,
    ForensicUnitDispatched,
    Referred,
    Abandoned,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(message) = run(cli).await {
        eprintln!("vprctl: {message}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let channel = Channel::from_shared(cli.server.clone())
        .map_err(|error| format!("invalid --server {:?}: {error}", cli.server))?
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
    let mut client =
        RoomServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            Ok(request)
        });

    let output = match cli.command {
        Command::CreateRoom {
            incident,
            request_id,
            call_type,
            max_participants,
        } => {
            let request = pb::CreateRoomRequest {
                incident_id: incident,
                request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                call_type,
                max_participants,
                metadata: String::new(),
            };
            let response = client
                .create_room(request)
                .await
                .map_err(status_message)?
                .into_inner();
            let mut value = room_json(response.room.as_ref());
            value["created"] = json!(response.created);
            value
        }
        Command::Admit {
            room,
            identity,
            role,
            display_name,
            token_ttl,
        } => {
            let role = match role {
                RoleArg::Resident => pb::Role::Resident,
                RoleArg::Officer => pb::Role::Officer,
                RoleArg::Observer => pb::Role::Observer,
            };
            let request = pb::AdmitParticipantRequest {
                room_id: room,
                identity,
                display_name,
                role: role as i32,
                token_ttl_seconds: token_ttl,
            };
            let response = client
                .admit_participant(request)
                .await
                .map_err(status_message)?
                .into_inner();
            json!({
                "participant_id": response.participant_id,
                "join_token": response.join_token,
                "whip_url": response.whip_url,
                "whep_url": response.whep_url,
                "expires_at_unix_ms": response.expires_at_unix_ms,
            })
        }
        Command::CloseRoom {
            room,
            disposition,
            notes,
        } => {
            let disposition = match disposition {
                DispositionArg::ResolvedVirtually => pb::Disposition::ResolvedVirtually,
                DispositionArg::PatrolDispatched => pb::Disposition::PatrolDispatched,
                DispositionArg::ForensicUnitDispatched => pb::Disposition::ForensicUnitDispatched,
                DispositionArg::Referred => pb::Disposition::Referred,
                DispositionArg::Abandoned => pb::Disposition::Abandoned,
            };
            let request = pb::CloseRoomRequest {
                room_id: room,
                disposition: disposition as i32,
                notes,
            };
            let response = client
                .close_room(request)
                .await
                .map_err(status_message)?
                .into_inner();
            room_json(Some(&response))
        }
        Command::Session { room } => {
            let request = pb::GetSessionRequest { room_id: room };
            let response = client
                .get_session(request)
                .await
                .map_err(status_message)?
                .into_inner();
            session_json(&response)
        }
    };

    if cli.json {
        println!("{output:#}");
    } else {
        print_plain(&output, "");
    }
    Ok(())
}

fn status_message(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn room_json(room: Option<&pb::Room>) -> Value {
    let Some(room) = room else { return json!({}) };
    json!({
        "room_id": room.room_id,
        "incident_id": room.incident_id,
        "call_type": room.call_type,
        "max_participants": room.max_participants,
        "metadata": room.metadata,
        "state": pb::RoomState::try_from(room.state).map(|state| state.as_str_name()).unwrap_or("UNKNOWN"),
        "created_at_unix_ms": room.created_at_unix_ms,
        "ended_at_unix_ms": room.ended_at_unix_ms,
        "end_reason": room.end_reason,
        "disposition": pb::Disposition::try_from(room.disposition).map(|d| d.as_str_name()).unwrap_or("UNKNOWN"),
        "notes": room.notes,
    })
}

fn session_json(session: &pb::Session) -> Value {
    let participants: Vec<Value> = session
        .participants
        .iter()
        .map(|participant| {
            json!({
                "participant_id": participant.participant_id,
                "identity": participant.identity,
                "display_name": participant.display_name,
                "role": pb::Role::try_from(participant.role).map(|role| role.as_str_name()).unwrap_or("UNKNOWN"),
                "admitted_at_unix_ms": participant.admitted_at_unix_ms,
                "joined_at_unix_ms": participant.joined_at_unix_ms,
                "left_at_unix_ms": participant.left_at_unix_ms,
                "leave_reason": participant.leave_reason,
            })
        })
        .collect();
    let tracks: Vec<Value> = session
        .tracks
        .iter()
        .map(|track| {
            json!({
                "track_id": track.track_id,
                "participant_id": track.participant_id,
                "kind": track.kind,
                "codec": track.codec,
                "published_at_unix_ms": track.published_at_unix_ms,
                "unpublished_at_unix_ms": track.unpublished_at_unix_ms,
            })
        })
        .collect();
    let events: Vec<Value> = session
        .events
        .iter()
        .map(|event| {
            json!({
                "seq": event.seq,
                "kind": event.kind,
                "participant_id": event.participant_id,
                "track_id": event.track_id,
                "detail": event.detail,
                "at_unix_ms": event.at_unix_ms,
            })
        })
        .collect();
    json!({
        "room": room_json(session.room.as_ref()),
        "participants": participants,
        "tracks": tracks,
        "events": events,
    })
}

/// Prints `value` as indented `key: value` lines.
fn print_plain(value: &Value, indent: &str) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    Value::Object(_) | Value::Array(_) => {
                        println!("{indent}{key}:");
                        print_plain(field, &format!("{indent}  "));
                    }
                    Value::String(text) => println!("{indent}{key}: {text}"),
                    other => println!("{indent}{key}: {other}"),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                println!("{indent}- [{index}]");
                print_plain(item, &format!("{indent}  "));
            }
        }
        other => println!("{indent}{other}"),
    }
}
