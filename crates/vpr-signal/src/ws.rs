//! WebSocket join: one peer connection per participant for both directions,
//! renegotiated by the server as tracks come and go.
//!
//! `GET /ws?token=<join token>` upgrades to a WebSocket. Messages are JSON
//! objects with `"v": 1` and a `type`:
//!
//! | from   | type        | fields                 | meaning |
//! |--------|-------------|------------------------|---------|
//! | client | `offer`     | `sdp`                  | first offer: the client's tracks; later offers: ICE restart (see below) |
//! | client | `answer`    | `sdp`                  | answer to the server's last `offer` |
//! | client | `candidate` | `candidate`            | trickle ICE; accepted and ignored (the server is ICE-lite), so offers carry their candidates |
//! | client | `resume`    |                        | instead of a first offer: attach this socket to the participant's session whose socket dropped |
//! | client | `ping`      |                        | liveness check; answered with `pong` |
//! | client | `leave`     |                        | ends the session |
//! | server | `joined`    | `participant_id`, `room_id`, `role` | after the upgrade |
//! | server | `answer`    | `sdp`                  | answer to a client `offer` |
//! | server | `resumed`   |                        | `resume` succeeded; the session and its peer connection are kept |
//! | server | `pong`      |                        | reply to `ping` |
//! | server | `offer`     | `sdp`                  | the room's tracks changed; answer it |
//! | server | `room`      | `participants` [{`participant_id`, `resident`}], `tracks` [{`track_id`, `participant_id`, `kind`}] | who is connected and what they publish, after every change |
//! | server | `active_speaker` | `participant_id` | the loudest participant changed (RFC 6464 audio levels) |
//! | server | `quality`   | `bitrate_kbps`, `packet_loss`, `rtt_ms` | this participant's connection quality, every 2 s |
//! | server | `restart_ice` |                      | the server lost the media path; the client restarts ICE with a later `offer` |
//! | server | `layers`    | `mid`, `active` [RID]  | send only these simulcast encodings of the track in m-section `mid` (`encodings[i].active` in `RTCRtpSender.setParameters`); the others have had no subscriber for 10 s |
//! | server | `ended`     | `reason`               | the server ended the session (removed, room closed) |
//! | server | `error`     | `message`              | a message was invalid; the socket stays open |
//!
//! Messages over 256 KiB close the socket with code 1009 (message too big).
//!
//! **ICE restart.** The client restarts ICE on the same peer connection by
//! sending a later `offer` with new `a=ice-ufrag`/`a=ice-pwd`
//! (`createOffer({iceRestart: true})`), once its signalling state is
//! `stable`. The server answers with `answer`; the participant, its tracks
//! and its session record stay the same. The server sends `restart_ice`
//! when its side of the connection goes disconnected or failed, and ends
//! the session if a failed connection is not restarted within 15 s. The
//! server wins glare: an offer
//! that arrives while a server `offer` waits for its answer is not applied,
//! and the server replies with an `error`. The client then rolls its offer
//! back, answers the server's offer and offers again.
//!
//! **Resume.** When the socket closes without `leave`, the session keeps its
//! media for [`RESUME_GRACE`] and then ends. A new socket with the same
//! token sends `resume` in place of a first offer; the server replies
//! `resumed` (and repeats its offer if one was waiting for an answer), or
//! `error` when there is no session to resume, and then the client joins
//! again with a first `offer`. A `resume` also takes a session over from a
//! socket that has not closed yet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vpr_control::{JoinClaims, Role};
use vpr_sfu::{Direction, OfferReply, PeerSignal, SessionRequest};

use crate::error::SignalError;
use crate::state::SignalState;

/// Protocol version in every message.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest accepted message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// How long a session whose socket closed without `leave` waits for a
/// `resume` before it ends.
pub const RESUME_GRACE: Duration = Duration::from_secs(15);

/// Query of the upgrade request.
#[derive(Debug, Deserialize)]
pub struct JoinQuery {
    /// The join token from AdmitParticipant.
    pub token: Option<String>,
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate {
        #[allow(dead_code)]
        candidate: serde_json::Value,
    },
    Resume,
    Ping,
    Leave,
}

/// A message to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    Joined { participant_id: &'a str, room_id: &'a str, role: &'a str },
    Answer { sdp: &'a str },
    Offer { sdp: &'a str },
    Resumed,
    Pong,
    RestartIce,
    Room { participants: Vec<serde_json::Value>, tracks: Vec<serde_json::Value> },
    Quality { bitrate_kbps: f64, packet_loss: f64, rtt_ms: f64 },
    ActiveSpeaker { participant_id: &'a str },
    Layers { mid: &'a str, active: &'a [String] },
    Ended { reason: &'a str },
    Error { message: &'a str },
}

/// `GET /ws?token=...`: checks the token, then upgrades.
pub async fn upgrade(
    State(state): State<SignalState>,
    Query(query): Query<JoinQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, SignalError> {
    let token = query.token.filter(|t| !t.is_empty()).ok_or(vpr_control::TokenError::Missing)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = state.signer.verify(&token, now)?;
    crate::whip::check_admitted(&state, &claims.room_id, &claims.participant_id).await?;
    if !state.media.is_room_open(&claims.room_id) {
        return Err(vpr_sfu::MediaError::RoomNotOpen(claims.room_id).into());
    }
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run(state, claims, socket)))
}

async fn run(state: SignalState, claims: JoinClaims, mut socket: WebSocket) {
    let room_id = claims.room_id.clone();
    let participant_id = claims.participant_id.clone();
    info!(room_id = %room_id, participant_id = %participant_id, "websocket joined");
    let joined = ServerMessage::Joined { participant_id: &participant_id, room_id: &room_id, role: claims.role.as_str() };
    if send(&mut socket, &joined).await.is_err() {
        return;
    }

    let (signal_sender, mut signals) = mpsc::unbounded_channel();
    let mut signal_sender = Some(signal_sender);
    let mut session_id: Option<String> = None;
    let mut left = false;

    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => break,
                    Message::Binary(_) => {
                        let _ = send(&mut socket, &ServerMessage::Error { message: "binary messages are not supported; send JSON text" }).await;
                        continue;
                    }
                    _ => continue,
                };
                match parse(&text) {
                    Ok(ClientMessage::Offer { sdp }) => {
                        if let Some(id) = &session_id {
                            let reply = match state.media.apply_offer(id, sdp).await {
                                Ok(OfferReply::Answer(answer)) => send(&mut socket, &ServerMessage::Answer { sdp: &answer }).await,
                                Ok(OfferReply::Glare) => {
                                    let message = "offer not applied: the server's offer is waiting for an answer; roll back, answer it, then offer again";
                                    send(&mut socket, &ServerMessage::Error { message }).await
                                }
                                Err(err) => {
                                    warn!(room_id = %room_id, participant_id = %participant_id, error = %err, "client offer rejected");
                                    let message = format!("offer rejected: {err}");
                                    send(&mut socket, &ServerMessage::Error { message: &message }).await
                                }
                            };
                            if reply.is_err() {
                                break;
                            }
                            continue;
                        }
                        let request = SessionRequest {
                            room_id: room_id.clone(),
                            participant_id: participant_id.clone(),
                            is_resident: claims.role == Role::Resident,
                            direction: Direction::Participate,
                            offer_sdp: sdp,
                            signals: signal_sender.take(),
                        };
                        match state.media.start_session(request).await {
                            Ok(answer) => {
                                session_id = Some(answer.session_id.clone());
                                if send(&mut socket, &ServerMessage::Answer { sdp: &answer.answer_sdp }).await.is_err() {
                                    break;
                                }
                            }
                            Err(err) => {
                                warn!(room_id = %room_id, participant_id = %participant_id, error = %err, "websocket session rejected");
                                let message = err.to_string();
                                let _ = send(&mut socket, &ServerMessage::Error { message: &message }).await;
                                break;
                            }
                        }
                    }
                    Ok(ClientMessage::Answer { sdp }) => {
                        let Some(id) = &session_id else {
                            let _ = send(&mut socket, &ServerMessage::Error { message: "no session yet; send an offer first" }).await;
                            continue;
                        };
                        if let Err(err) = state.media.apply_answer(id, sdp).await {
                            let message = format!("answer rejected: {err}");
                            let _ = send(&mut socket, &ServerMessage::Error { message: &message }).await;
                        }
                    }
                    Ok(ClientMessage::Candidate { .. }) => {}
                    Ok(ClientMessage::Resume) => {
                        if session_id.is_some() {
                            let _ = send(&mut socket, &ServerMessage::Error { message: "session already started on this socket" }).await;
                            continue;
                        }
                        let Some(sender) = signal_sender.take() else { continue };
                        match state.media.resume_session(&room_id, &participant_id, sender).await {
                            Ok(id) => {
                                info!(room_id = %room_id, participant_id = %participant_id, session_id = %id, "websocket resumed a session");
                                session_id = Some(id);
                                if send(&mut socket, &ServerMessage::Resumed).await.is_err() {
                                    break;
                                }
                            }
                            Err(err) => {
                                // A fresh channel, so that a first offer can still start a session.
                                let (sender, receiver) = mpsc::unbounded_channel();
                                signal_sender = Some(sender);
                                signals = receiver;
                                let message = format!("nothing to resume ({err}); send an offer to join again");
                                let _ = send(&mut socket, &ServerMessage::Error { message: &message }).await;
                            }
                        }
                    }
                    Ok(ClientMessage::Ping) => {
                        if send(&mut socket, &ServerMessage::Pong).await.is_err() {
                            break;
                        }
                    }
                    Ok(ClientMessage::Leave) => {
                        left = true;
                        break;
                    }
                    Err(problem) => {
                        let _ = send(&mut socket, &ServerMessage::Error { message: &problem }).await;
                    }
                }
            }
            signal = signals.recv() => {
                match signal {
                    Some(PeerSignal::Offer(sdp)) => {
                        if send(&mut socket, &ServerMessage::Offer { sdp: &sdp }).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::Room { participants, tracks }) => {
                        let participants = participants
                            .iter()
                            .map(|p| serde_json::json!({ "participant_id": p.participant_id, "resident": p.is_resident }))
                            .collect();
                        let tracks = tracks
                            .iter()
                            .map(|t| serde_json::json!({ "track_id": t.track_id, "participant_id": t.participant_id, "kind": t.kind.as_str() }))
                            .collect();
                        if send(&mut socket, &ServerMessage::Room { participants, tracks }).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::ActiveSpeaker { participant_id }) => {
                        if send(&mut socket, &ServerMessage::ActiveSpeaker { participant_id: &participant_id }).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::Quality { bitrate_kbps, packet_loss, rtt_ms }) => {
                        if send(&mut socket, &ServerMessage::Quality { bitrate_kbps, packet_loss, rtt_ms }).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::RestartIce) => {
                        if send(&mut socket, &ServerMessage::RestartIce).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::Layers { mid, active }) => {
                        if send(&mut socket, &ServerMessage::Layers { mid: &mid, active: &active }).await.is_err() {
                            break;
                        }
                    }
                    Some(PeerSignal::Ended { reason }) => {
                        let _ = send(&mut socket, &ServerMessage::Ended { reason: &reason }).await;
                        session_id = None;
                        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "session ended".into() }))).await;
                        break;
                    }
                    // Only after the session took the sender: the media worker
                    // dropped it because the session is gone, or a `resume`
                    // on another socket took the session over.
                    None => {
                        session_id = None;
                        break;
                    }
                }
            }
        }
    }

    if let Some(id) = session_id {
        if left {
            let _ = state.media.end_session(&id, "client left").await;
        } else {
            // Dropped first, so that the worker sees this channel closed and
            // detaches the session only if no other socket resumed it.
            drop(signals);
            state.media.detach_session(&id, RESUME_GRACE);
        }
    }
    info!(room_id = %room_id, participant_id = %participant_id, "websocket closed");
}

/// Parses a client message, naming what is wrong when it fails.
fn parse(text: &str) -> Result<ClientMessage, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => return Err(format!("unsupported protocol version {v}; this server speaks {PROTOCOL_VERSION}")),
        None => return Err("missing field v (protocol version)".into()),
    }
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("").to_owned();
    serde_json::from_value(value).map_err(|err| match kind.as_str() {
        "" => "missing field type".to_owned(),
        "offer" | "answer" | "candidate" | "resume" | "ping" | "leave" => format!("invalid {kind} message: {err}"),
        other => format!("unknown message type {other:?}"),
    })
}

async fn send(socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<(), axum::Error> {
    let mut value = serde_json::to_value(message).expect("server messages serialise");
    value["v"] = serde_json::Value::from(PROTOCOL_VERSION);
    socket.send(Message::Text(value.to_string().into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_problem() {
        assert!(parse("{").unwrap_err().starts_with("invalid JSON"));
        assert_eq!(parse(r#"{"type":"offer","sdp":"x"}"#).unwrap_err(), "missing field v (protocol version)");
        assert!(parse(r#"{"v":2,"type":"leave"}"#).unwrap_err().contains("unsupported protocol version 2"));
        assert_eq!(parse(r#"{"v":1,"type":"dance"}"#).unwrap_err(), "unknown message type \"dance\"");
        assert!(parse(r#"{"v":1,"type":"offer"}"#).unwrap_err().starts_with("invalid offer message"));
        assert!(matches!(parse(r#"{"v":1,"type":"leave"}"#), Ok(ClientMessage::Leave)));
        assert!(matches!(parse(r#"{"v":1,"type":"resume"}"#), Ok(ClientMessage::Resume)));
        assert!(matches!(parse(r#"{"v":1,"type":"ping"}"#), Ok(ClientMessage::Ping)));
    }
}
