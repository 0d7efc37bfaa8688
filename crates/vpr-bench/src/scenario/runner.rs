//! Runs a load scenario against a server: creates the rooms over gRPC,
//! starts participant joins at the join rate, samples while the clients
//! run, stops everything at the end of the duration (or on Ctrl-C) and
//! builds the report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use tokio::sync::watch;
use tokio::task::JoinSet;
use vpr_control::pb::Role;

use super::config::{Scenario, ScenarioError};
use super::control::{ControlClient, ControlError};
use super::join::{join_publisher, join_subscriber, JoinContext, Registry, RoomInfo};
use super::metrics::fetch_metric_sum;
use super::process::{ProcessError, ProcessRef};
use super::report::{Counts, Egress, ProcessFigures, Report};
use super::sampler::Sampler;
use super::summarize::{summarize, SubscriberOutcome};
use super::thresholds::{check, Measured};
use crate::client::PublisherMedia;

/// Time allowed for packets in flight to arrive after the publishers stop.
const DRAIN: Duration = Duration::from_millis(500);

/// Server counter of UDP bytes sent.
const EGRESS_METRIC: &str = "vpr_udp_bytes_sent_total";

/// Failure that prevents a run; failures of single joins are counted in the
/// report instead.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),

    /// The control plane could not be reached.
    #[error(transparent)]
    Control(#[from] ControlError),

    /// A media file of the residents is missing or unreadable.
    #[error("media file {path} is not readable: {source}; run from the repository root or pass --video and --audio")]
    Media {
        /// Path of the file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The server process given by `--server-pid` cannot be read.
    #[error("server process: {0}")]
    ServerProcess(#[from] ProcessError),
}

/// Figures read before the clients start, to subtract at the end.
struct StartMarks {
    started: Instant,
    started_unix_ms: u64,
    harness_cpu_s: f64,
    server_cpu_s: Option<f64>,
    egress_bytes: Option<f64>,
}

/// Runs `scenario` and returns its report; `progress` shows the elapsed
/// seconds and what is connected.
pub async fn run(scenario: &Scenario, progress: ProgressBar) -> Result<Report, RunError> {
    scenario.validate()?;
    for path in [&scenario.video, &scenario.audio] {
        std::fs::metadata(path).map_err(|source| RunError::Media {
            path: path.display().to_string(),
            source,
        })?;
    }
    let control = ControlClient::connect(&scenario.server_grpc, &scenario.key_id, &scenario.key_secret).await?;
    let server = scenario.server_pid.map(ProcessRef::Pid);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client with a timeout builds");
    let marks = StartMarks {
        server_cpu_s: server.map(ProcessRef::cpu_seconds).transpose()?,
        harness_cpu_s: ProcessRef::SelfProcess.cpu_seconds().unwrap_or(0.0),
        egress_bytes: read_egress(&http, scenario).await,
        started: Instant::now(),
        started_unix_ms: unix_ms(),
    };
    tracing::info!(?scenario, "load run started");

    let registry = Arc::new(Registry::default());
    let context = JoinContext {
        control: control.clone(),
        media: PublisherMedia::looping(&scenario.video, &scenario.audio),
        registry: registry.clone(),
    };
    progress.set_length(scenario.duration_s);
    let (stop_sampler, stop_signal) = watch::channel(false);
    let sampler = tokio::spawn(
        Sampler {
            registry: registry.clone(),
            started: marks.started,
            server,
            progress: progress.clone(),
            subscribers_requested: scenario.total_subscribers(),
        }
        .run(stop_signal),
    );

    let deadline = tokio::time::Instant::from_std(marks.started + Duration::from_secs(scenario.duration_s));
    let mut rooms = Vec::new();
    let mut joins = JoinSet::new();
    tokio::select! {
        () = ramp(scenario, &context, marks.started_unix_ms, &mut rooms, &mut joins) => {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                _ = tokio::signal::ctrl_c() => tracing::warn!("interrupted; stopping the run early"),
            }
        }
        () = tokio::time::sleep_until(deadline) => tracing::warn!("the run ended before every join was started"),
        _ = tokio::signal::ctrl_c() => tracing::warn!("interrupted; stopping the run early"),
    }
    abort_unfinished_joins(&mut joins, &registry).await;
    let _ = stop_sampler.send(true);
    let timeline = sampler.await.unwrap_or_default();
    progress.finish_and_clear();

    let ended = stop_clients(&registry, &rooms).await;
    close_rooms(control, &rooms).await;
    Ok(build_report(scenario, &registry, &marks, ended, timeline, &http, server).await)
}

/// Creates the rooms one after another and spawns each participant's join
/// at the join rate: residents first, then officers, then observers.
async fn ramp(
    scenario: &Scenario,
    context: &JoinContext,
    run_id: u64,
    rooms: &mut Vec<Arc<RoomInfo>>,
    joins: &mut JoinSet<()>,
) {
    let interval = Duration::from_secs_f64(1.0 / scenario.join_rate);
    let mut next_join = tokio::time::Instant::now();
    let mut control = context.control.clone();
    for index in 0..scenario.rooms {
        let incident_id = format!("BENCH-{run_id}-{index}");
        let created_at = Instant::now();
        let room = match control.create_room(&incident_id, scenario.participants_per_room()).await {
            Ok(room) => Arc::new(RoomInfo {
                index,
                room_id: room.room_id,
                created_at,
            }),
            Err(error) => {
                tracing::warn!(%incident_id, %error, "CreateRoom failed");
                let mut failures = context.registry.failures();
                failures.rooms += 1;
                failures.note(format!("room {index}: {error}"));
                continue;
            }
        };
        rooms.push(room.clone());

        let roles = std::iter::repeat_n(Role::Resident, scenario.residents_per_room as usize)
            .chain(std::iter::repeat_n(Role::Officer, scenario.officers_per_room as usize))
            .chain(std::iter::repeat_n(Role::Observer, scenario.observers_per_room as usize));
        let mut counters: HashMap<Role, u32> = HashMap::new();
        for role in roles {
            tokio::time::sleep_until(next_join).await;
            next_join += interval;
            let counter = counters.entry(role).or_default();
            let position = *counter;
            *counter += 1;
            if role == Role::Resident {
                joins.spawn(join_publisher(context.clone(), room.clone(), position));
            } else {
                joins.spawn(join_subscriber(context.clone(), room.clone(), role, position));
            }
        }
    }
}

/// Aborts joins that are still running; they count as failed.
async fn abort_unfinished_joins(joins: &mut JoinSet<()>, registry: &Registry) {
    while joins.try_join_next().is_some() {}
    let unfinished = joins.len();
    if unfinished > 0 {
        tracing::warn!(unfinished, "joins still in progress at the end of the run were aborted");
        registry
            .failures()
            .note(format!("{unfinished} joins were still in progress at the end and were aborted"));
    }
    joins.shutdown().await;
}

/// Final figures of the clients.
struct Ended {
    media_stopped_at: Instant,
    publishers_connected: u64,
    frames_sent: u64,
    outcomes: Vec<SubscriberOutcome>,
}

/// Stops the publishers, lets packets in flight arrive, then stops the
/// subscribers and returns their final state.
async fn stop_clients(registry: &Registry, rooms: &[Arc<RoomInfo>]) -> Ended {
    let media_stopped_at = Instant::now();
    let publishers = std::mem::take(&mut *registry.publishers());
    let publishers_connected = publishers.len() as u64;
    let mut stopping = JoinSet::new();
    for entry in publishers {
        stopping.spawn(async move {
            let stats = match entry.publisher.stop().await {
                Ok(stats) => stats,
                Err(error) => {
                    tracing::warn!(%error, room = entry.room, "WHIP DELETE failed");
                    Default::default()
                }
            };
            (entry.room, entry.resident, stats.video_frames_sent)
        });
    }
    let mut frames_sent = 0;
    let mut source_frames: HashMap<u32, u64> = HashMap::new();
    while let Some(Ok((room, resident, sent))) = stopping.join_next().await {
        frames_sent += sent;
        if resident == 0 {
            source_frames.insert(room, sent);
        }
    }
    tokio::time::sleep(DRAIN).await;

    let subscribers = std::mem::take(&mut *registry.subscribers());
    let mut outcomes = Vec::with_capacity(subscribers.len());
    let mut stopping = JoinSet::new();
    for mut entry in subscribers {
        entry.freeze.finish(media_stopped_at);
        let sent = source_frames.get(&entry.room).copied();
        outcomes.push(SubscriberOutcome {
            stats: entry.subscriber.stats(),
            room_created_at: entry.room_created_at,
            join_started_at: entry.join_started_at,
            connected_at: entry.connected_at,
            media_stopped_at,
            expected_frames: sent.map_or(0, |sent| {
                let baseline = entry.first_frame_baseline_frames.unwrap_or(entry.connect_baseline_frames);
                sent.saturating_sub(baseline)
            }),
            room_has_publisher: sent.is_some(),
            freeze: entry.freeze,
        });
        stopping.spawn(async move {
            if let Err(error) = entry.subscriber.stop().await {
                tracing::warn!(%error, room = entry.room, "WHEP DELETE failed");
            }
        });
    }
    while stopping.join_next().await.is_some() {}
    tracing::debug!(rooms = rooms.len(), "clients stopped");
    Ended {
        media_stopped_at,
        publishers_connected,
        frames_sent,
        outcomes,
    }
}

async fn close_rooms(mut control: ControlClient, rooms: &[Arc<RoomInfo>]) {
    for room in rooms {
        if let Err(error) = control.close_room(&room.room_id).await {
            tracing::warn!(room_id = %room.room_id, %error, "CloseRoom failed");
        }
    }
}

async fn build_report(
    scenario: &Scenario,
    registry: &Registry,
    marks: &StartMarks,
    ended: Ended,
    timeline: Vec<super::report::TimelinePoint>,
    http: &reqwest::Client,
    server: Option<ProcessRef>,
) -> Report {
    let wall = marks.started.elapsed();
    let run_s = (ended.media_stopped_at - marks.started).as_secs_f64();
    let receive = summarize(&ended.outcomes, ended.frames_sent);
    let subscribers_connected = ended.outcomes.len() as u64;
    let failures = std::mem::take(&mut *registry.failures());

    let server_egress = match (marks.egress_bytes, read_egress(http, scenario).await) {
        (Some(before), Some(after)) => {
            let kbps = (after - before) * 8.0 / 1000.0 / run_s;
            Some(Egress {
                bytes: after - before,
                kbps,
                kbps_per_subscriber: (subscribers_connected > 0).then(|| kbps / subscribers_connected as f64),
            })
        }
        _ => None,
    };
    let harness_cpu_s = ProcessRef::SelfProcess.cpu_seconds().unwrap_or(0.0) - marks.harness_cpu_s;
    let server_figures = match (server, marks.server_cpu_s) {
        (Some(process), Some(before)) => Some(process_figures(process, before, wall)),
        _ => None,
    };

    let requested_publishers = u64::from(scenario.rooms) * u64::from(scenario.residents_per_room);
    let requested_subscribers = scenario.total_subscribers();
    let measured = Measured {
        first_frame_p95_ms: receive.first_frame_ms.map(|p| p.p95),
        receive_ratio: receive.video.receive_ratio,
        failed_joins: (requested_publishers - ended.publishers_connected) + (requested_subscribers - subscribers_connected),
    };
    let thresholds = check(&scenario.thresholds, &measured);
    Report {
        scenario: scenario.clone(),
        started_at_unix_ms: marks.started_unix_ms,
        wall_s: wall.as_secs_f64(),
        rooms: Counts {
            requested: u64::from(scenario.rooms),
            connected: u64::from(scenario.rooms) - failures.rooms,
            failed: failures.rooms,
        },
        publishers: counts(requested_publishers, ended.publishers_connected),
        subscribers: counts(requested_subscribers, subscribers_connected),
        errors: failures.errors,
        tracks: receive.tracks,
        video: receive.video,
        audio: receive.audio,
        first_frame_ms: receive.first_frame_ms,
        join_to_first_frame_ms: receive.join_to_first_frame_ms,
        subscriber_connect_ms: receive.connect_ms,
        subscribers_without_frames: receive.without_frames,
        freezes: receive.freezes,
        server_egress,
        harness: ProcessFigures {
            cpu_s: harness_cpu_s,
            cpu_percent_of_one_core: 100.0 * harness_cpu_s / wall.as_secs_f64(),
            peak_rss_kib: ProcessRef::SelfProcess.peak_rss_kib().ok(),
        },
        server: server_figures,
        timeline,
        passed: thresholds.iter().all(|threshold| threshold.passed),
        thresholds,
    }
}

fn counts(requested: u64, connected: u64) -> Counts {
    Counts {
        requested,
        connected,
        failed: requested.saturating_sub(connected),
    }
}

fn process_figures(process: ProcessRef, cpu_before: f64, wall: Duration) -> ProcessFigures {
    let cpu_s = match process.cpu_seconds() {
        Ok(now) => now - cpu_before,
        Err(error) => {
            tracing::warn!(%error, "reading the server's CPU time at the end failed");
            0.0
        }
    };
    ProcessFigures {
        cpu_s,
        cpu_percent_of_one_core: 100.0 * cpu_s / wall.as_secs_f64(),
        peak_rss_kib: process.peak_rss_kib().ok(),
    }
}

/// Returns the server's UDP bytes sent, or `None` (logged) when `/metrics`
/// cannot be read.
async fn read_egress(http: &reqwest::Client, scenario: &Scenario) -> Option<f64> {
    match fetch_metric_sum(http, &scenario.server_http, EGRESS_METRIC).await {
        Ok(value) => value,
        Err(error) => {
            tracing::warn!(%error, "reading server egress from /metrics failed");
            None
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
