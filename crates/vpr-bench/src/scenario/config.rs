//! Scenario of a load run: which server to load, how many rooms and
//! participants of each role, how fast they join, for how long, and the
//! thresholds the run must meet. Read from a TOML file; the CLI overrides
//! single fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::synthetic::SyntheticConfig;
use crate::relay::Impairment;

/// Failure to read or validate a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario file could not be read.
    #[error("reading scenario file {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The scenario file is not valid TOML or has unknown or mistyped fields.
    #[error("parsing scenario: {0}")]
    Parse(#[from] toml::de::Error),

    /// A field has a value the runner cannot use.
    #[error("invalid scenario field {field}: {reason}")]
    Invalid {
        /// Name of the field, as in the TOML file.
        field: &'static str,
        /// Description of the problem and of the accepted values.
        reason: String,
    },
}

/// Limits a run must meet; a missed one makes `vpr-bench run` exit non-zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Maximum 95th percentile of the time from CreateRoom to a
    /// subscriber's first complete video frame, in milliseconds.
    pub max_first_frame_p95_ms: Option<f64>,
    /// Minimum ratio of video frames received to frames expected, summed
    /// over all subscribers (0.0 to 1.0). Frames count from each
    /// subscriber's first complete frame; the wait for it is first-frame time.
    pub min_receive_ratio: Option<f64>,
    /// Maximum number of participants whose admission, WHIP or WHEP join
    /// failed.
    pub max_failed_joins: Option<u64>,
}

/// Server a run loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// VPR: rooms over gRPC, clients over WHIP and WHEP.
    #[default]
    Vpr,
    /// Janus VideoRoom over the Janus HTTP API; needs the synthetic
    /// publisher and one resident per room.
    Janus,
}

/// Resolution and bitrate of a synthetic VP8 stream at 30 frames per
/// second, at the sizes of Chrome's three simulcast layers for a 720p
/// camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VideoProfile {
    /// 320x180 at 150 kbit/s.
    Low,
    /// 640x360 at 500 kbit/s.
    Medium,
    /// 1280x720 at 1500 kbit/s.
    High,
}

impl VideoProfile {
    const FRAME_RATE: u32 = 30;

    /// Picture width and height, and bitrate in bit/s.
    pub fn shape(self) -> (u16, u16, u32) {
        match self {
            Self::Low => (320, 180, 150_000),
            Self::Medium => (640, 360, 500_000),
            Self::High => (1280, 720, 1_500_000),
        }
    }

    /// Returns the synthetic stream of this profile: each frame split into
    /// the fewest packets of at most `max_payload_bytes`.
    pub fn synthetic(self, max_payload_bytes: usize) -> SyntheticConfig {
        let (width, height, bitrate_bps) = self.shape();
        let frame_bytes = (bitrate_bps / 8 / Self::FRAME_RATE) as usize;
        let packets_per_frame = frame_bytes.div_ceil(max_payload_bytes.max(1)).max(1);
        SyntheticConfig {
            packets_per_second: packets_per_frame as u32 * Self::FRAME_RATE,
            payload_bytes: frame_bytes.div_ceil(packets_per_frame).max(SyntheticConfig::MIN_PAYLOAD_BYTES),
            frame_rate: Self::FRAME_RATE,
            width,
            height,
            ..SyntheticConfig::default()
        }
    }
}

/// Impairment of each subscriber's link to the server: every WHEP
/// subscriber reaches the server through a relay of its own that applies
/// it to both directions. The default impairs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkImpairment {
    /// Probability in 0..=1 that a datagram is dropped.
    pub loss: f64,
    /// One-way delay added to every datagram, ms.
    pub delay_ms: u64,
    /// Upper bound of a uniform random delay on top of `delay_ms`, ms.
    pub jitter_ms: u64,
    /// Rate cap of UDP payload in each direction, kbit/s.
    pub rate_kbps: Option<u32>,
}

impl LinkImpairment {
    /// Returns the relay setting, or `None` when nothing is impaired.
    pub fn impairment(&self) -> Option<Impairment> {
        if *self == Self::default() {
            return None;
        }
        let mut impairment = Impairment::none()
            .with_loss(self.loss)
            .with_delay(Duration::from_millis(self.delay_ms))
            .with_jitter(Duration::from_millis(self.jitter_ms));
        impairment.rate_kbps = self.rate_kbps;
        Some(impairment)
    }
}

/// A load scenario. Every field has a default, so a TOML file names only
/// what it changes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// gRPC endpoint of the control plane, e.g. `http://127.0.0.1:50051`.
    pub server_grpc: String,
    /// HTTP base URL of the server, for `/metrics`, e.g. `http://127.0.0.1:8080`.
    pub server_http: String,
    /// API key id used to sign the control-plane JWT.
    pub key_id: String,
    /// API key secret; never written to the report.
    #[serde(skip_serializing)]
    pub key_secret: String,
    /// Rooms to create.
    pub rooms: u32,
    /// Residents per room; each publishes the looping clip over WHIP.
    pub residents_per_room: u32,
    /// Officers per room; each receives over WHEP.
    pub officers_per_room: u32,
    /// Observers per room; each receives over WHEP.
    pub observers_per_room: u32,
    /// Participant joins (admission plus WHIP/WHEP) started per second,
    /// over all rooms.
    pub join_rate: f64,
    /// Length of the run in seconds, from the first CreateRoom until the
    /// clients stop; the join ramp is part of it.
    pub duration_s: u64,
    /// VP8 video (IVF) the residents publish.
    pub video: PathBuf,
    /// Opus audio (Ogg) the residents publish.
    pub audio: PathBuf,
    /// Process id of the server, to read its CPU time and peak memory.
    pub server_pid: Option<u32>,
    /// Path of the JSON report to write.
    pub report_json: Option<PathBuf>,
    /// Path of the SVG plot over time to write.
    pub report_svg: Option<PathBuf>,
    /// Server to load.
    pub target: Target,
    /// Base URL of the Janus HTTP API, for the Janus target.
    pub janus_url: String,
    /// RTP packets per second of a synthetic VP8 stream that residents
    /// publish instead of the clip; `None` publishes the clip.
    pub synthetic_rate: Option<u32>,
    /// RTP payload bytes of each synthetic packet; with a video profile,
    /// the largest payload a frame is split into.
    pub payload_bytes: u32,
    /// Residents publish a synthetic VP8 stream of this resolution and
    /// bitrate instead of the clip; not with `synthetic_rate`.
    pub video_profile: Option<VideoProfile>,
    /// Residents publish three synthetic VP8 simulcast layers (`q`, `h`,
    /// `f` at 150, 500 and 1500 kbit/s, 30 fps) instead of the clip or the
    /// synthetic stream. VPR target only.
    pub simulcast: bool,
    /// Officers also publish over WHIP (the clip or the synthetic stream),
    /// besides receiving. VPR target only.
    pub officers_publish: bool,
    /// Impairment of each subscriber's link to the server. VPR target only.
    pub link: LinkImpairment,
    /// Start of the steady window in seconds from the start of the run;
    /// server CPU per forwarded packet is measured from there to the end.
    /// Default: the join ramp plus 5 s.
    pub steady_after_s: Option<f64>,
    /// Limits the run must meet.
    pub thresholds: Thresholds,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            server_grpc: "http://127.0.0.1:50051".to_owned(),
            server_http: "http://127.0.0.1:8080".to_owned(),
            key_id: "dev".to_owned(),
            key_secret: "dev-secret-change-me".to_owned(),
            rooms: 1,
            residents_per_room: 1,
            officers_per_room: 1,
            observers_per_room: 0,
            join_rate: 10.0,
            duration_s: 30,
            video: PathBuf::from("tests/media/clip.ivf"),
            audio: PathBuf::from("tests/media/clip.ogg"),
            server_pid: None,
            report_json: None,
            report_svg: None,
            target: Target::Vpr,
            janus_url: "http://127.0.0.1:8088/janus".to_owned(),
            synthetic_rate: None,
            payload_bytes: 1200,
            video_profile: None,
            simulcast: false,
            officers_publish: false,
            link: LinkImpairment::default(),
            steady_after_s: None,
            thresholds: Thresholds::default(),
        }
    }
}

/// Leaves the secret out, so that a scenario can be logged.
impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("server_grpc", &self.server_grpc)
            .field("server_http", &self.server_http)
            .field("key_id", &self.key_id)
            .field("rooms", &self.rooms)
            .field("residents_per_room", &self.residents_per_room)
            .field("officers_per_room", &self.officers_per_room)
            .field("observers_per_room", &self.observers_per_room)
            .field("join_rate", &self.join_rate)
            .field("duration_s", &self.duration_s)
            .field("server_pid", &self.server_pid)
            .field("target", &self.target)
            .field("janus_url", &self.janus_url)
            .field("synthetic_rate", &self.synthetic_rate)
            .field("payload_bytes", &self.payload_bytes)
            .field("video_profile", &self.video_profile)
            .field("simulcast", &self.simulcast)
            .field("officers_publish", &self.officers_publish)
            .field("link", &self.link)
            .field("steady_after_s", &self.steady_after_s)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Parses a scenario from TOML text; fields not given keep their defaults.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Participants in one room.
    pub fn participants_per_room(&self) -> u32 {
        self.residents_per_room + self.officers_per_room + self.observers_per_room
    }

    /// Subscribers (officers and observers) over all rooms.
    pub fn total_subscribers(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.officers_per_room + self.observers_per_room)
    }

    /// Participant joins over all rooms.
    pub fn total_joins(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.participants_per_room())
    }

    /// Seconds the join ramp takes at `join_rate`.
    pub fn ramp_s(&self) -> f64 {
        self.total_joins() as f64 / self.join_rate
    }

    /// Returns the synthetic stream the residents publish, if any.
    pub fn synthetic(&self) -> Option<SyntheticConfig> {
        if let Some(profile) = self.video_profile {
            return Some(profile.synthetic(self.payload_bytes as usize));
        }
        self.synthetic_rate.map(|packets_per_second| SyntheticConfig {
            packets_per_second,
            payload_bytes: self.payload_bytes as usize,
            ..SyntheticConfig::default()
        })
    }

    /// Seconds from the start of the run to the start of the steady window.
    pub fn steady_start_s(&self) -> f64 {
        self.steady_after_s.unwrap_or(self.ramp_s() + 5.0)
    }

    /// Checks that the runner can carry the scenario out.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |field, reason: &str| ScenarioError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.rooms == 0 {
            return Err(invalid("rooms", "must be at least 1"));
        }
        if self.participants_per_room() == 0 {
            return Err(invalid(
                "residents_per_room",
                "a room needs at least one resident, officer or observer",
            ));
        }
        if !(self.join_rate.is_finite() && self.join_rate > 0.0) {
            return Err(invalid("join_rate", "must be a positive number of joins per second"));
        }
        if self.duration_s == 0 {
            return Err(invalid("duration_s", "must be at least 1"));
        }
        if self.ramp_s() >= self.duration_s as f64 {
            return Err(ScenarioError::Invalid {
                field: "duration_s",
                reason: format!(
                    "{} joins at {} per second take {:.1} s, which is not less than the \
                     duration of {} s; raise join_rate or duration_s",
                    self.total_joins(),
                    self.join_rate,
                    self.ramp_s(),
                    self.duration_s
                ),
            });
        }
        if self.key_id.is_empty() || self.key_secret.is_empty() {
            return Err(invalid("key_id", "the API key id and secret must not be empty"));
        }
        if self.target == Target::Janus && (self.simulcast || self.officers_publish) {
            return Err(invalid("simulcast", "simulcast residents and publishing officers need the VPR target"));
        }
        if self.video_profile.is_some() && self.synthetic_rate.is_some() {
            return Err(invalid("video_profile", "sets the synthetic stream's rate itself; leave synthetic_rate unset"));
        }
        if self.synthetic_rate == Some(0) {
            return Err(invalid("synthetic_rate", "must be at least 1 packet per second"));
        }
        if (self.payload_bytes as usize) < SyntheticConfig::MIN_PAYLOAD_BYTES {
            return Err(ScenarioError::Invalid {
                field: "payload_bytes",
                reason: format!("must be at least {} bytes", SyntheticConfig::MIN_PAYLOAD_BYTES),
            });
        }
        if self.target == Target::Janus {
            if self.synthetic().is_none() {
                return Err(invalid(
                    "synthetic_rate",
                    "the Janus target publishes only the synthetic stream; set synthetic_rate or video_profile",
                ));
            }
            if self.residents_per_room != 1 {
                return Err(invalid(
                    "residents_per_room",
                    "the Janus target subscribes to one resident per room; set it to 1",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.link.loss) {
            return Err(invalid("link.loss", "must lie between 0.0 and 1.0"));
        }
        if self.link.rate_kbps == Some(0) {
            return Err(invalid("link.rate_kbps", "must be at least 1 kbit/s"));
        }
        if self.target == Target::Janus && self.link.impairment().is_some() {
            return Err(invalid("link", "an impaired subscriber link needs the VPR target"));
        }
        if let Some(ratio) = self.thresholds.min_receive_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(invalid("thresholds.min_receive_ratio", "must lie between 0.0 and 1.0"));
            }
        }
        if let Some(max_ms) = self.thresholds.max_first_frame_p95_ms {
            if !(max_ms.is_finite() && max_ms > 0.0) {
                return Err(invalid(
                    "thresholds.max_first_frame_p95_ms",
                    "must be a positive number of milliseconds",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_sets_given_fields_and_keeps_defaults() {
        let scenario = Scenario::from_toml_str(
            r#"
            server_grpc = "http://127.0.0.1:15051"
            rooms = 4
            residents_per_room = 1
            officers_per_room = 2
            observers_per_room = 1
            join_rate = 5.5
            duration_s = 60
            server_pid = 4242

            [thresholds]
            max_first_frame_p95_ms = 2500
            min_receive_ratio = 0.95
            "#,
        )
        .unwrap();

        assert_eq!(scenario.server_grpc, "http://127.0.0.1:15051");
        assert_eq!(scenario.rooms, 4);
        assert_eq!(scenario.officers_per_room, 2);
        assert_eq!(scenario.observers_per_room, 1);
        assert_eq!(scenario.join_rate, 5.5);
        assert_eq!(scenario.duration_s, 60);
        assert_eq!(scenario.server_pid, Some(4242));
        assert_eq!(scenario.thresholds.max_first_frame_p95_ms, Some(2500.0));
        assert_eq!(scenario.thresholds.min_receive_ratio, Some(0.95));
        assert_eq!(scenario.thresholds.max_failed_joins, None);
        assert_eq!(scenario.server_http, "http://127.0.0.1:8080");
        assert_eq!(scenario.key_id, "dev");
        assert_eq!(scenario.total_subscribers(), 12);
        assert_eq!(scenario.total_joins(), 16);
        scenario.validate().unwrap();
    }

    #[test]
    fn toml_rejects_unknown_field() {
        let error = Scenario::from_toml_str("roms = 3").unwrap_err();
        assert!(error.to_string().contains("roms"), "{error}");
    }

    #[test]
    fn toml_rejects_mistyped_field() {
        let error = Scenario::from_toml_str("rooms = \"three\"").unwrap_err();
        assert!(matches!(error, ScenarioError::Parse(_)), "{error}");
    }

    #[test]
    fn validate_rejects_ramp_longer_than_duration() {
        let scenario = Scenario {
            rooms: 10,
            officers_per_room: 9,
            join_rate: 10.0,
            duration_s: 10,
            ..Scenario::default()
        };
        let error = scenario.validate().unwrap_err();
        assert!(
            matches!(error, ScenarioError::Invalid { field: "duration_s", .. }),
            "{error}"
        );
    }

    #[test]
    fn validate_rejects_receive_ratio_above_one() {
        let mut scenario = Scenario::default();
        scenario.thresholds.min_receive_ratio = Some(1.5);
        let error = scenario.validate().unwrap_err();
        assert!(
            matches!(error, ScenarioError::Invalid { field: "thresholds.min_receive_ratio", .. }),
            "{error}"
        );
    }

    #[test]
    fn janus_target_needs_the_synthetic_stream() {
        let mut simulcast = Scenario::from_toml_str("simulcast = true\nofficers_publish = true").unwrap();
        assert!(simulcast.simulcast);
        assert!(simulcast.officers_publish);
        simulcast.validate().unwrap();
        simulcast.target = Target::Janus;
        simulcast.synthetic_rate = Some(1000);
        let error = simulcast.validate().unwrap_err();
        assert!(matches!(error, ScenarioError::Invalid { field: "simulcast", .. }), "{error}");

        let mut scenario = Scenario::from_toml_str("target = \"janus\"\nofficers_per_room = 3").unwrap();
        assert_eq!(scenario.target, Target::Janus);
        let error = scenario.validate().unwrap_err();
        assert!(matches!(error, ScenarioError::Invalid { field: "synthetic_rate", .. }), "{error}");
        scenario.synthetic_rate = Some(1000);
        scenario.validate().unwrap();
        let synthetic = scenario.synthetic().unwrap();
        assert_eq!((synthetic.packets_per_second, synthetic.payload_bytes), (1000, 1200));
        // 4 joins at 10/s take 0.4 s; the window starts 5 s later.
        assert!((scenario.steady_start_s() - 5.4).abs() < 1e-9);
    }

    #[test]
    fn link_table_sets_the_relay_impairment() {
        let scenario = Scenario::from_toml_str("[link]\nloss = 0.02\ndelay_ms = 40\nrate_kbps = 800").unwrap();
        let impairment = scenario.link.impairment().expect("an impaired link");
        assert_eq!(impairment.loss, 0.02);
        assert_eq!(impairment.delay, Duration::from_millis(40));
        assert_eq!(impairment.jitter, Duration::ZERO);
        assert_eq!(impairment.rate_kbps, Some(800));
        assert_eq!(Scenario::default().link.impairment(), None);
    }

    #[test]
    fn validate_rejects_bad_link_and_janus_link() {
        let mut scenario = Scenario::default();
        scenario.link.loss = 1.5;
        assert!(scenario.validate().unwrap_err().to_string().contains("link.loss"));
        scenario.link.loss = 0.0;
        scenario.link.rate_kbps = Some(0);
        assert!(scenario.validate().unwrap_err().to_string().contains("link.rate_kbps"));

        let mut janus = Scenario::from_toml_str("target = \"janus\"\nsynthetic_rate = 100\n[link]\ndelay_ms = 10").unwrap();
        assert!(janus.validate().unwrap_err().to_string().contains("VPR target"));
        janus.link = LinkImpairment::default();
        assert!(janus.validate().is_ok());
    }

    #[test]
    fn video_profiles_split_frames_into_packets() {
        let shapes: Vec<(u32, usize, u16, u16)> = [VideoProfile::Low, VideoProfile::Medium, VideoProfile::High]
            .into_iter()
            .map(|profile| profile.synthetic(1200))
            .map(|config| (config.packets_per_second, config.payload_bytes, config.width, config.height))
            .collect();
        // 625, 2083 and 6250 bytes per frame at 30 fps.
        assert_eq!(shapes, vec![(30, 625, 320, 180), (60, 1042, 640, 360), (180, 1042, 1280, 720)]);

        let scenario = Scenario::from_toml_str("video_profile = \"medium\"").unwrap();
        assert_eq!(scenario.synthetic().map(|config| config.packets_per_frame()), Some(2));
        let both = Scenario::from_toml_str("video_profile = \"high\"\nsynthetic_rate = 100").unwrap();
        assert!(both.validate().unwrap_err().to_string().contains("video_profile"));
    }

    #[test]
    fn debug_leaves_secret_out() {
        let scenario = Scenario::default();
        assert!(!format!("{scenario:?}").contains("dev-secret-change-me"));
        let json = serde_json::to_string(&scenario).unwrap();
        assert!(!json.contains("dev-secret-change-me"), "{json}");
    }
}
