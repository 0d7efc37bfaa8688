//! `vpr-bench`: WHIP/WHEP clients for trying a VPR server from a terminal.
//!
//! `publish` sends the test clip as a resident's phone would, or with
//! `--synthetic-rate` a VP8-shaped stream at a fixed packet rate; `subscribe`
//! receives a room as an officer's browser would and prints what arrives
//! each second. Both bind 127.0.0.1 only. `run` loads a server with a
//! scenario of many rooms built from these clients (against VPR, or with
//! `--target janus` against Janus VideoRoom), prints a summary, writes
//! JSON and SVG reports and exits with status 1 when a threshold is missed
//! (2 when the run could not start).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vpr_bench::client::synthetic::{SyntheticConfig, SyntheticPublisher, SyntheticStats};
use vpr_bench::client::{PublisherMedia, PublisherStats, SubscriberStats, WhepSubscriber, WhipPublisher};

mod run_command;

#[derive(Parser)]
#[command(name = "vpr-bench", about = "WHIP/WHEP clients for VPR (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the VP8/Opus test clip over WHIP, looping, or a synthetic
    /// VP8 stream with --synthetic-rate.
    Publish {
        /// WHIP URL from AdmitParticipant.
        #[arg(long)]
        whip: String,
        /// Join token from AdmitParticipant.
        #[arg(long)]
        token: String,
        /// VP8 video in an IVF file.
        #[arg(long, default_value = "tests/media/clip.ivf")]
        video: PathBuf,
        /// Opus audio in an Ogg file.
        #[arg(long, default_value = "tests/media/clip.ogg")]
        audio: PathBuf,
        /// How long to publish, in seconds.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Send a synthetic VP8 stream of this many RTP packets per second
        /// (keyframe once a second) instead of the clip.
        #[arg(long)]
        synthetic_rate: Option<u32>,
        /// RTP payload bytes of each synthetic packet.
        #[arg(long, default_value_t = 1200)]
        payload: usize,
    },
    /// Receive the room over WHEP and print frames and packets per second.
    Subscribe {
        /// WHEP URL from AdmitParticipant.
        #[arg(long)]
        whep: String,
        /// Join token from AdmitParticipant.
        #[arg(long)]
        token: String,
        /// How long to receive, in seconds.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
    },
    /// Run a load scenario: rooms, participants, thresholds.
    Run(Box<run_command::RunArgs>),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    match Cli::parse().command {
        Command::Run(args) => std::process::exit(run_command::run(*args).await),
        Command::Publish { whip, token, duration_s, synthetic_rate: Some(rate), payload, .. } => {
            let config = SyntheticConfig {
                packets_per_second: rate,
                payload_bytes: payload,
                ..SyntheticConfig::default()
            };
            let started = Instant::now();
            let publisher = SyntheticPublisher::start_whip(&whip, &token, config).await?;
            let connected = publisher.wait_connected(CONNECT_TIMEOUT).await?;
            println!("connected after {:?}; publishing {rate} packets/s for {duration_s} s", connected - started);
            let line = |stats: SyntheticStats| {
                format!("{} packets, {} frames ({} keyframes) sent", stats.packets_sent, stats.frames_sent, stats.keyframes_sent)
            };
            tick(duration_s, || println!("{}", line(publisher.stats()))).await;
            if let Some(error) = publisher.media_error() {
                eprintln!("media error: {error}");
            }
            let stats = publisher.stop().await?;
            println!("done: {}", line(stats));
        }
        Command::Publish { whip, token, video, audio, duration_s, synthetic_rate: None, .. } => {
            let started = Instant::now();
            let publisher = WhipPublisher::start(&whip, &token, PublisherMedia::looping(video, audio)).await?;
            let connected = publisher.wait_connected(CONNECT_TIMEOUT).await?;
            println!("connected after {:?}; publishing for {duration_s} s", connected - started);
            let line = |stats: PublisherStats| {
                let mut line = format!(
                    "{} video frames ({} keyframes), {} audio packets sent",
                    stats.video_frames_sent, stats.video_keyframes_sent, stats.audio_packets_sent
                );
                if let Some(error) = stats.media_error {
                    line.push_str(&format!("; media error: {error}"));
                }
                line
            };
            tick(duration_s, || println!("{}", line(publisher.stats()))).await;
            let stats = publisher.stop().await?;
            println!("done: {}", line(stats));
        }
        Command::Subscribe { whep, token, duration_s } => {
            let started = Instant::now();
            let subscriber = WhepSubscriber::start(&whep, &token).await?;
            let connected = subscriber.wait_connected(CONNECT_TIMEOUT).await?;
            println!("connected after {:?}; receiving for {duration_s} s", connected - started);
            let line = |stats: SubscriberStats| {
                format!(
                    "video frames {} (keyframes {}, sequence gaps {}), audio packets {}",
                    stats.video.frames, stats.video.keyframes, stats.video.sequence_gaps, stats.audio.packets
                )
            };
            tick(duration_s, || println!("{}", line(subscriber.stats()))).await;
            let stats = subscriber.stop().await?;
            println!("done: {}", line(stats));
        }
    }
    Ok(())
}

/// Calls `report` once a second for `duration_s` seconds or until Ctrl-C.
async fn tick(duration_s: u64, mut report: impl FnMut()) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(duration_s);
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = interval.tick() => report(),
        }
    }
}
