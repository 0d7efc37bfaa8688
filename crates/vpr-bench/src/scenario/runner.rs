//! Runs a load scenario against a server. It creates the rooms (over gRPC
//! for VPR, over the HTTP API for Janus) and starts participant joins at the
//! join rate. While the clients run it samples once a second and measures
//! the server's CPU over a steady window. At the end of the duration (or on
//! Ctrl-C) it stops everything and builds the report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use tokio::sync::watch;
use tokio::task::JoinSet;
use vpr_control::pb::Role;

use super::config::{Scenario, ScenarioError, Target};
use super::control::{ControlClient, ControlError};
use super::join::{join_publisher, join_subscriber, JoinContext, Registry, RoomInfo, TargetClient};
use super::metrics::{fetch_metric_sum, fetch_metrics, histogram_buckets, sum_metric, HistogramWindow};
use super::percentile::Percentiles;
use super::process::{CpuTimes, ProcessError, ProcessRef};
use super::report::{Counts, Egress, ProcessFigures, Report, SteadyWindow};
use super::sampler::Sampler;
use super::summarize::{summarize, SubscriberOutcome, TRACKS_PER_SUBSCRIBER};
use super::thresholds::{check, Measured};
use crate::client::PublisherMedia;
use crate::janus::JanusRoom;

/// Time allowed for packets in flight to arrive after the publishers stop.
const DRAIN: Duration = Duration::from_millis(500);

/// Server counter of UDP bytes sent.
const EGRESS_METRIC: &str = "vpr_udp_bytes_sent_total";

/// Server counter of RTP packets forwarded to subscribers.
const FORWARDED_METRIC: &str = "vpr_rtp_forwarded_total";
const RESIDENCE_METRIC: &str = "vpr_rtp_residence_seconds";

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
    let target = match scenario.target {
        Target::Vpr => TargetClient::Vpr(
            ControlClient::connect(&scenario.server_grpc, &scenario.key_id, &scenario.key_secret).await?,
        ),
        Target::Janus => TargetClient::Janus(scenario.janus_url.clone()),
    };
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
        target: target.clone(),
        media: PublisherMedia::looping(&scenario.video, &scenario.audio),
        synthetic: scenario.synthetic(),
        simulcast: scenario.simulcast,
        officers_publish: scenario.officers_publish,
        link: scenario.link.impairment(),
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
    let steady_start = marks.started + Duration::from_secs_f64(scenario.steady_start_s());
    let steady = tokio::spawn({
        let registry = registry.clone();
        let http = http.clone();
        let server_http = scenario.server_http.clone();
        let vpr = scenario.target == Target::Vpr;
        async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(steady_start)).await;
            SteadySample::take(&registry, server, &http, vpr.then_some(server_http.as_str())).await
        }
    });
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
    let steady_start_sample = if steady.is_finished() { steady.await.ok() } else { None };
    if steady_start_sample.is_none() {
        tracing::warn!("the run ended before the steady window started; raise duration_s or lower steady_after_s");
    }
    let vpr_http = (scenario.target == Target::Vpr).then_some(scenario.server_http.as_str());
    let steady_end_sample = SteadySample::take(&registry, server, &http, vpr_http).await;
    abort_unfinished_joins(&mut joins, &registry).await;
    let _ = stop_sampler.send(true);
    let timeline = sampler.await.unwrap_or_default();
    progress.finish_and_clear();

    let ended = stop_clients(&registry, &rooms).await;
    close_rooms(target, &rooms).await;
    let steady = steady_start_sample.as_ref().and_then(|start| steady_window(&marks, start, &steady_end_sample));
    let residence = steady_start_sample
        .and_then(|start| HistogramWindow::between(&start.server_residence, &steady_end_sample.server_residence));
    let mut report = build_report(scenario, &registry, &marks, ended, timeline, &http, server).await;
    report.steady = steady;
    report.server_residence = residence;
    Ok(report)
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
    for index in 0..scenario.rooms {
        let incident_id = format!("BENCH-{run_id}-{index}");
        let created_at = Instant::now();
        let room = match create_room(&context.target, &incident_id, scenario).await {
            Ok((room_id, janus)) => {
                let room = RoomInfo::new(index, room_id, created_at);
                *room.janus.lock().unwrap_or_else(|poison| poison.into_inner()) = janus;
                Arc::new(room)
            }
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

/// Creates a room on the target; returns its id and, for Janus, the room
/// with its control session.
async fn create_room(
    target: &TargetClient,
    incident_id: &str,
    scenario: &Scenario,
) -> Result<(String, Option<JanusRoom>), String> {
    match target {
        TargetClient::Vpr(control) => control
            .clone()
            .create_room(incident_id, scenario.participants_per_room())
            .await
            .map(|room| (room.room_id, None))
            .map_err(|error| error.to_string()),
        TargetClient::Janus(base_url) => JanusRoom::create(base_url, incident_id, scenario.residents_per_room)
            .await
            .map(|room| (room.room.to_string(), Some(room)))
            .map_err(|error| format!("Janus create room: {error}")),
    }
}

/// Figures read at the start and at the end of the steady window.
struct SteadySample {
    at: Instant,
    server: Option<CpuTimes>,
    packets_received: u64,
    server_forwarded: Option<f64>,
    /// Cumulative buckets of VPR's RTP residence histogram.
    server_residence: Vec<(f64, f64)>,
}

impl SteadySample {
    /// Reads the server's CPU times, the packets received by every
    /// subscriber and, from `vpr_http`'s `/metrics` when given, VPR's count
    /// of forwarded packets.
    async fn take(
        registry: &Registry,
        server: Option<ProcessRef>,
        http: &reqwest::Client,
        vpr_http: Option<&str>,
    ) -> Self {
        let metrics = match vpr_http {
            Some(base) => fetch_metrics(http, base).await.ok(),
            None => None,
        };
        let server_forwarded = metrics.as_deref().and_then(|text| sum_metric(text, FORWARDED_METRIC));
        let server_residence = metrics.as_deref().map_or_else(Vec::new, |text| histogram_buckets(text, RESIDENCE_METRIC));
        let cpu = server.map(ProcessRef::cpu_times).transpose().unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the server's CPU times failed");
            None
        });
        let packets_received = registry
            .subscribers()
            .iter()
            .map(|entry| {
                let stats = entry.subscriber.stats();
                stats.video.packets + stats.audio.packets
            })
            .sum();
        Self {
            at: Instant::now(),
            server: cpu,
            packets_received,
            server_forwarded,
            server_residence,
        }
    }
}

/// Server CPU per received packet between two samples; `None` without the
/// server's CPU times or without packets.
fn steady_window(marks: &StartMarks, start: &SteadySample, end: &SteadySample) -> Option<SteadyWindow> {
    let (cpu_start, cpu_end) = (start.server?, end.server?);
    let packets = end.packets_received.checked_sub(start.packets_received)?;
    if packets == 0 {
        return None;
    }
    let seconds = (end.at - start.at).as_secs_f64();
    let forwarded = end.server_forwarded.zip(start.server_forwarded).map(|(end, start)| end - start);
    let user_s = cpu_end.user_s - cpu_start.user_s;
    let system_s = cpu_end.system_s - cpu_start.system_s;
    Some(SteadyWindow {
        start_s: (start.at - marks.started).as_secs_f64(),
        seconds,
        packets_received: packets,
        packets_per_s: packets as f64 / seconds,
        server_forwarded_packets: forwarded,
        server_user_s: user_s,
        server_system_s: system_s,
        cpu_us_per_packet: 1e6 * (user_s + system_s) / packets as f64,
        cpu_us_per_forwarded_packet: forwarded
            .filter(|forwarded| *forwarded > 0.0)
            .map(|forwarded| 1e6 * (user_s + system_s) / forwarded),
        user_us_per_packet: 1e6 * user_s / packets as f64,
    })
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
    /// Residents that connected; publishing officers are not counted.
    publishers_connected: u64,
    /// Video frames the residents sent.
    frames_sent: u64,
    outcomes: Vec<SubscriberOutcome>,
}

/// Stops the publishers, lets packets in flight arrive, then stops the
/// subscribers and returns their final state.
async fn stop_clients(registry: &Registry, rooms: &[Arc<RoomInfo>]) -> Ended {
    let media_stopped_at = Instant::now();
    let publishers = std::mem::take(&mut *registry.publishers());
    // Officers that publish join as subscribers; only residents count here.
    let publishers_connected = publishers.iter().filter(|entry| entry.resident.is_some()).count() as u64;
    let mut stopping = JoinSet::new();
    for entry in publishers {
        stopping.spawn(async move {
            let sent = entry.publisher.video_frames_sent();
            if let Err(error) = entry.publisher.stop().await {
                tracing::warn!(%error, room = entry.room, "ending the publisher's session failed");
            }
            (entry.room, entry.resident, sent)
        });
    }
    let mut frames_sent = 0;
    let mut source_frames: HashMap<u32, u64> = HashMap::new();
    while let Some(Ok((room, resident, sent))) = stopping.join_next().await {
        if resident.is_none() {
            continue;
        }
        frames_sent += sent;
        if resident == Some(0) {
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
            link: entry.subscriber.link_stats(),
        });
        stopping.spawn(async move {
            if let Err(error) = entry.subscriber.stop().await {
                tracing::warn!(%error, room = entry.room, "ending the subscriber's session failed");
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

async fn close_rooms(target: TargetClient, rooms: &[Arc<RoomInfo>]) {
    for room in rooms {
        let result = match &target {
            TargetClient::Vpr(control) => control.clone().close_room(&room.room_id).await.map_err(|error| error.to_string()),
            TargetClient::Janus(_) => {
                let janus = room.janus.lock().unwrap_or_else(|poison| poison.into_inner()).take();
                match janus {
                    Some(janus) => janus.destroy().await.map_err(|error| error.to_string()),
                    None => Ok(()),
                }
            }
        };
        if let Err(error) = result {
            tracing::warn!(room_id = %room.room_id, %error, "closing the room failed");
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
    let mut receive = summarize(&ended.outcomes, ended.frames_sent);
    if scenario.synthetic().is_some() {
        // The synthetic stream has a video track only, not audio and video.
        receive.tracks.expected /= TRACKS_PER_SUBSCRIBER;
    }
    let first_keyframe: Vec<f64> = ended
        .outcomes
        .iter()
        .filter_map(|outcome| {
            let keyframe = outcome.stats.video.frame_log.iter().find(|record| record.keyframe)?;
            Some((keyframe.arrived_at - outcome.room_created_at).as_secs_f64() * 1000.0)
        })
        .collect();
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
        first_keyframe_ms: Percentiles::of(&first_keyframe),
        join_to_first_frame_ms: receive.join_to_first_frame_ms,
        capture_delay_ms: receive.capture_delay_ms,
        jitter_ms: receive.jitter_ms,
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
        steady: None,
        link: super::report::LinkFigures::sum(ended.outcomes.iter().filter_map(|outcome| outcome.link.as_ref())),
        server_residence: None,
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

/// Returns VPR's UDP bytes sent, or `None` (logged) when `/metrics` cannot
/// be read; `None` for other targets.
async fn read_egress(http: &reqwest::Client, scenario: &Scenario) -> Option<f64> {
    if scenario.target != Target::Vpr {
        return None;
    }
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
