//! The `vpr-bench run` subcommand: builds the scenario from a TOML file and
//! flags (flags win), runs it with a progress bar, prints the summary
//! table, writes the JSON and SVG reports and turns the outcome into the
//! exit status.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vpr_bench::scenario::{self, svg, Report, Scenario};

/// Exit status when every threshold was met.
const EXIT_PASSED: i32 = 0;
/// Exit status when a threshold was missed.
const EXIT_THRESHOLD_MISSED: i32 = 1;
/// Exit status when the run could not start or a report could not be written.
const EXIT_ERROR: i32 = 2;

/// Flags of `vpr-bench run`; each one overrides the scenario file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (TOML); fields it does not set keep their defaults.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// gRPC endpoint of the server [default: http://127.0.0.1:50051].
    #[arg(long)]
    server_grpc: Option<String>,
    /// HTTP base URL of the server, for /metrics [default: http://127.0.0.1:8080].
    #[arg(long)]
    server_http: Option<String>,
    /// API key id [default: dev].
    #[arg(long)]
    key_id: Option<String>,
    /// API key secret [default: the development secret]; VPR_BENCH_KEY_SECRET also sets it.
    #[arg(long, env = "VPR_BENCH_KEY_SECRET", hide_env_values = true)]
    key_secret: Option<String>,
    /// Rooms to create [default: 1].
    #[arg(long)]
    rooms: Option<u32>,
    /// Residents per room, each publishing the looping clip [default: 1].
    #[arg(long)]
    residents_per_room: Option<u32>,
    /// Officers per room, each receiving over WHEP [default: 1].
    #[arg(long)]
    officers_per_room: Option<u32>,
    /// Observers per room, each receiving over WHEP [default: 0].
    #[arg(long)]
    observers_per_room: Option<u32>,
    /// Participant joins started per second over all rooms [default: 10].
    #[arg(long)]
    join_rate: Option<f64>,
    /// Length of the run in seconds, join ramp included [default: 30].
    #[arg(long)]
    duration_s: Option<u64>,
    /// VP8 video (IVF) the residents publish [default: tests/media/clip.ivf].
    #[arg(long)]
    video: Option<PathBuf>,
    /// Opus audio (Ogg) the residents publish [default: tests/media/clip.ogg].
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Server process id, to read its CPU time and peak memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report to this path.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Write the SVG plot over time to this path.
    #[arg(long)]
    report_svg: Option<PathBuf>,
    /// Maximum 95th percentile of CreateRoom to first complete frame, in ms.
    #[arg(long)]
    max_first_frame_p95_ms: Option<f64>,
    /// Minimum ratio of video frames received to frames expected (0 to 1).
    #[arg(long)]
    min_receive_ratio: Option<f64>,
    /// Maximum number of participants whose join failed.
    #[arg(long)]
    max_failed_joins: Option<u64>,
    /// Server to load [default: vpr].
    #[arg(long, value_enum)]
    target: Option<scenario::config::Target>,
    /// Base URL of the Janus HTTP API [default: http://127.0.0.1:8088/janus].
    #[arg(long)]
    janus_url: Option<String>,
    /// Residents publish a synthetic VP8 stream of this many RTP packets per
    /// second instead of the clip.
    #[arg(long)]
    synthetic_rate: Option<u32>,
    /// RTP payload bytes of each synthetic packet [default: 1200].
    #[arg(long)]
    payload: Option<u32>,
    /// Residents publish a synthetic VP8 stream of this resolution and
    /// bitrate at 30 fps instead of the clip: low 320x180 at 150 kbit/s,
    /// medium 640x360 at 500 kbit/s, high 1280x720 at 1500 kbit/s.
    #[arg(long, value_enum)]
    video_profile: Option<scenario::config::VideoProfile>,
    /// Residents publish three synthetic VP8 simulcast layers (150, 500 and
    /// 1500 kbit/s) instead of the clip.
    #[arg(long)]
    simulcast: bool,
    /// Officers also publish (the clip, or the synthetic stream with
    /// --synthetic-rate) besides receiving. The report's publisher and
    /// track counts cover the residents only.
    #[arg(long)]
    officers_publish: bool,
    /// Each subscriber's link drops this fraction (0 to 1) of datagrams in
    /// each direction, through a relay of its own.
    #[arg(long)]
    link_loss: Option<f64>,
    /// One-way delay of each subscriber's link, ms.
    #[arg(long)]
    link_delay_ms: Option<u64>,
    /// Random extra delay of each subscriber's link, up to this many ms.
    #[arg(long)]
    link_jitter_ms: Option<u64>,
    /// Rate cap of each subscriber's link in each direction, kbit/s.
    #[arg(long)]
    link_rate_kbps: Option<u32>,
    /// Start of the steady window for server CPU per packet, in seconds
    /// from the start [default: join ramp + 5 s].
    #[arg(long)]
    steady_after_s: Option<f64>,
}

impl RunArgs {
    /// Loads the scenario file, if any, and applies the flags over it.
    fn scenario(self) -> Result<Scenario, scenario::ScenarioError> {
        let mut scenario = match &self.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::default(),
        };
        override_with(&mut scenario.server_grpc, self.server_grpc);
        override_with(&mut scenario.server_http, self.server_http);
        override_with(&mut scenario.key_id, self.key_id);
        override_with(&mut scenario.key_secret, self.key_secret);
        override_with(&mut scenario.rooms, self.rooms);
        override_with(&mut scenario.residents_per_room, self.residents_per_room);
        override_with(&mut scenario.officers_per_room, self.officers_per_room);
        override_with(&mut scenario.observers_per_room, self.observers_per_room);
        override_with(&mut scenario.join_rate, self.join_rate);
        override_with(&mut scenario.duration_s, self.duration_s);
        override_with(&mut scenario.video, self.video);
        override_with(&mut scenario.audio, self.audio);
        override_with(&mut scenario.target, self.target);
        override_with(&mut scenario.janus_url, self.janus_url);
        override_with(&mut scenario.payload_bytes, self.payload);
        scenario.synthetic_rate = self.synthetic_rate.or(scenario.synthetic_rate);
        scenario.video_profile = self.video_profile.or(scenario.video_profile);
        scenario.simulcast |= self.simulcast;
        scenario.officers_publish |= self.officers_publish;
        scenario.steady_after_s = self.steady_after_s.or(scenario.steady_after_s);
        override_with(&mut scenario.link.loss, self.link_loss);
        override_with(&mut scenario.link.delay_ms, self.link_delay_ms);
        override_with(&mut scenario.link.jitter_ms, self.link_jitter_ms);
        scenario.link.rate_kbps = self.link_rate_kbps.or(scenario.link.rate_kbps);
        let thresholds = &mut scenario.thresholds;
        thresholds.max_first_frame_p95_ms = self.max_first_frame_p95_ms.or(thresholds.max_first_frame_p95_ms);
        thresholds.min_receive_ratio = self.min_receive_ratio.or(thresholds.min_receive_ratio);
        thresholds.max_failed_joins = self.max_failed_joins.or(thresholds.max_failed_joins);
        scenario.server_pid = self.server_pid.or(scenario.server_pid);
        scenario.report_json = self.report_json.or(scenario.report_json);
        scenario.report_svg = self.report_svg.or(scenario.report_svg);
        Ok(scenario)
    }
}

fn override_with<T>(field: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *field = value;
    }
}

/// Runs the subcommand and returns the process exit status.
pub async fn run(args: RunArgs) -> i32 {
    let scenario = match args.scenario() {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_ERROR;
        }
    };
    let report = match scenario::run(&scenario, progress_bar()).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_ERROR;
        }
    };

    print!("{}", report.summary_table());
    if let Err(message) = write_reports(&scenario, &report) {
        eprintln!("error: {message}");
        return EXIT_ERROR;
    }
    let missed: Vec<_> = report.thresholds.iter().filter(|threshold| !threshold.passed).collect();
    if missed.is_empty() {
        return EXIT_PASSED;
    }
    for threshold in missed {
        eprintln!("threshold missed: {} ({})", threshold.name, threshold.values());
    }
    EXIT_THRESHOLD_MISSED
}

/// Progress bar on stderr; hidden when stderr is not a terminal.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} s  {msg}")
        .expect("the progress template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn write_reports(scenario: &Scenario, report: &Report) -> Result<(), String> {
    if let Some(path) = &scenario.report_json {
        let json = serde_json::to_string_pretty(report).map_err(|error| format!("serializing the report: {error}"))?;
        create_parent(path)?;
        std::fs::write(path, json).map_err(|error| format!("writing {}: {error}", path.display()))?;
        println!("JSON report written to {}", path.display());
    }
    if let Some(path) = &scenario.report_svg {
        let title = format!(
            "vpr-bench ({:?}): {} rooms, {} subscribers",
            scenario.target,
            scenario.rooms,
            scenario.total_subscribers()
        );
        let svg = svg::render_timeline(&title, &report.timeline);
        create_parent(path)?;
        std::fs::write(path, svg).map_err(|error| format!("writing {}: {error}", path.display()))?;
        println!("SVG plot written to {}", path.display());
    }
    Ok(())
}

/// Creates the folder a report goes into, so `target/report.json` works
/// before anything was built into `target/`.
fn create_parent(path: &std::path::Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent)
            .map_err(|error| format!("creating {}: {error}", parent.display())),
        _ => Ok(()),
    }
}
