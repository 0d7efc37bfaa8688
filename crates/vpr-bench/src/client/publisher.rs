//! WHIP publisher: sends a VP8 track from an IVF file and an Opus track from
//! an Ogg file, paced in real time, like a resident's phone would.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::error::ClientError;
use super::peer::{build_loopback_peer, create_complete_offer, opus_codec, vp8_codec, PeerEvents};
use super::signaling::{delete_session, post_offer};

/// Opus sample rate; Ogg/Opus granule positions count samples at this rate.
const OPUS_SAMPLE_RATE: u64 = 48_000;

/// How long the publisher waits for ICE gathering and for the connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Media files and playback options of a publisher.
#[derive(Debug, Clone)]
pub struct PublisherMedia {
    /// VP8 video in an IVF container.
    pub video_ivf: PathBuf,
    /// Opus audio in an Ogg container.
    pub audio_ogg: PathBuf,
    /// Start again from the beginning at the end of each file.
    pub looping: bool,
    /// Hold media until [`WhipPublisher::resume`] is called, so a test can
    /// connect its subscribers first and count every frame sent.
    pub start_paused: bool,
}

impl PublisherMedia {
    /// Plays both files once, starting as soon as the connection is up.
    pub fn once(video_ivf: impl Into<PathBuf>, audio_ogg: impl Into<PathBuf>) -> Self {
        Self {
            video_ivf: video_ivf.into(),
            audio_ogg: audio_ogg.into(),
            looping: false,
            start_paused: false,
        }
    }

    /// Plays both files in a loop until the publisher stops.
    pub fn looping(video_ivf: impl Into<PathBuf>, audio_ogg: impl Into<PathBuf>) -> Self {
        Self {
            looping: true,
            ..Self::once(video_ivf, audio_ogg)
        }
    }

    /// Holds media until [`WhipPublisher::resume`].
    pub fn paused(mut self) -> Self {
        self.start_paused = true;
        self
    }
}

/// Counters of what the publisher has sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// VP8 frames handed to the track.
    pub video_frames_sent: u64,
    /// Of those, keyframes.
    pub video_keyframes_sent: u64,
    /// Opus packets (one per Ogg page) handed to the track.
    pub audio_packets_sent: u64,
    /// The video file was played to its end (never set when looping).
    pub video_finished: bool,
    /// The audio file was played to its end (never set when looping).
    pub audio_finished: bool,
    /// First error of a media task, if one stopped early.
    pub media_error: Option<String>,
}

#[derive(Debug, Default)]
struct PublisherCounters {
    video_frames_sent: AtomicU64,
    video_keyframes_sent: AtomicU64,
    audio_packets_sent: AtomicU64,
    video_finished: AtomicBool,
    audio_finished: AtomicBool,
    media_error: Mutex<Option<String>>,
}

impl PublisherCounters {
    fn record_error(&self, error: String) {
        let mut slot = self
            .media_error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        slot.get_or_insert(error);
    }

    fn snapshot(&self) -> PublisherStats {
        PublisherStats {
            video_frames_sent: self.video_frames_sent.load(Ordering::Relaxed),
            video_keyframes_sent: self.video_keyframes_sent.load(Ordering::Relaxed),
            audio_packets_sent: self.audio_packets_sent.load(Ordering::Relaxed),
            video_finished: self.video_finished.load(Ordering::Relaxed),
            audio_finished: self.audio_finished.load(Ordering::Relaxed),
            media_error: self
                .media_error
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
        }
    }
}

/// A peer with a VP8 and an Opus track and its complete WHIP offer, before
/// any signaling.
pub struct PublishOffer {
    /// The offering peer connection.
    pub peer: Arc<dyn PeerConnection>,
    /// Its event sink.
    pub events: Arc<PeerEvents>,
    /// The complete SDP offer (ICE gathered).
    pub sdp: String,
    video: LocalTrack,
    audio: LocalTrack,
}

/// Builds a loopback peer with a VP8 and an Opus send track and returns it
/// with its complete offer. Tests use it to send a valid WHIP offer with
/// wrong credentials.
pub async fn prepare_publish_offer() -> Result<PublishOffer, ClientError> {
    let events = PeerEvents::new();
    let peer = build_loopback_peer(events.clone()).await?;
    let video = add_track(&peer, RtpCodecKind::Video, vp8_codec()).await?;
    let audio = add_track(&peer, RtpCodecKind::Audio, opus_codec()).await?;
    let sdp = create_complete_offer(&peer, &events, SETUP_TIMEOUT).await?;
    Ok(PublishOffer {
        peer,
        events,
        sdp,
        video,
        audio,
    })
}

/// A track, its SSRC and the sender it is attached to.
struct LocalTrack {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

/// A participant publishing over WHIP.
pub struct WhipPublisher {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    http: reqwest::Client,
    token: String,
    session_url: Url,
    counters: Arc<PublisherCounters>,
    playing: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl WhipPublisher {
    /// Opens a peer connection with one video and one audio track, POSTs the
    /// complete offer to `whip_url` with `token` as bearer, applies the
    /// answer and starts the media tasks. Media flows once the connection is
    /// up (and, with `start_paused`, after [`Self::resume`]).
    pub async fn start(
        whip_url: &str,
        token: &str,
        media: PublisherMedia,
    ) -> Result<Self, ClientError> {
        check_readable(&media.video_ivf)?;
        check_readable(&media.audio_ogg)?;

        let PublishOffer {
            peer,
            events,
            sdp,
            video,
            audio,
        } = prepare_publish_offer().await?;
        let http = reqwest::Client::new();
        let session = post_offer(&http, whip_url, token, sdp).await?;
        peer.set_remote_description(RTCSessionDescription::answer(session.answer_sdp)?)
            .await?;
        tracing::info!(session_url = %session.session_url, "WHIP session created");

        let counters = Arc::new(PublisherCounters::default());
        let (playing, _) = watch::channel(!media.start_paused);
        let tasks = vec![
            tokio::spawn(run_video(
                video,
                media.clone(),
                events.clone(),
                playing.subscribe(),
                counters.clone(),
            )),
            tokio::spawn(run_audio(
                audio,
                media,
                events.clone(),
                playing.subscribe(),
                counters.clone(),
            )),
        ];

        Ok(Self {
            peer,
            events,
            http,
            token: token.to_owned(),
            session_url: session.session_url,
            counters,
            playing,
            tasks,
        })
    }

    /// Absolute URL of the WHIP session (from the `Location` header).
    pub fn session_url(&self) -> &Url {
        &self.session_url
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Starts media held by `start_paused`.
    pub fn resume(&self) {
        self.playing.send_replace(true);
    }

    /// Returns what has been sent so far.
    pub fn stats(&self) -> PublisherStats {
        self.counters.snapshot()
    }

    /// Waits until both files were played to the end (only without looping),
    /// or a media task failed.
    pub async fn wait_media_finished(
        &self,
        timeout: Duration,
    ) -> Result<PublisherStats, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if (stats.video_finished && stats.audio_finished) || stats.media_error.is_some() {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    what: "the publisher to play its media to the end",
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the media tasks, ends the WHIP session with DELETE and closes the
    /// peer connection. The peer connection is closed even if DELETE fails.
    pub async fn stop(self) -> Result<PublisherStats, ClientError> {
        for task in &self.tasks {
            task.abort();
        }
        let stats = self.stats();
        let deleted = delete_session(&self.http, &self.session_url, &self.token).await;
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the publisher peer connection failed");
        }
        deleted.map(|()| stats)
    }
}

impl WhipPublisher {
    /// Stops the media tasks and closes the peer connection without DELETE,
    /// as a client that lost its network would.
    pub async fn abandon(self) -> PublisherStats {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the publisher peer connection failed");
        }
        self.stats()
    }
}

impl Drop for WhipPublisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn check_readable(path: &Path) -> Result<(), ClientError> {
    File::open(path)
        .map(drop)
        .map_err(|error| media_error(path, error))
}

fn media_error(path: &Path, reason: impl ToString) -> ClientError {
    ClientError::Media {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

async fn add_track(
    peer: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<LocalTrack, ClientError> {
    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "vpr-bench".to_owned(),
            format!("vpr-bench-{kind}"),
            format!("vpr-bench-{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ),
    )?);
    let sender = peer.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    Ok(LocalTrack {
        track,
        sender,
        ssrc,
    })
}

/// Waits until media may flow and returns the negotiated payload type.
async fn wait_for_start(
    local: &LocalTrack,
    events: &PeerEvents,
    playing: &mut watch::Receiver<bool>,
) -> Result<u8, String> {
    if playing.wait_for(|playing| *playing).await.is_err() {
        return Err("publisher dropped before media started".to_owned());
    }
    events
        .wait_connected(SETUP_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;

    let parameters = local
        .sender
        .get_parameters()
        .await
        .map_err(|error| error.to_string())?;
    parameters
        .rtp_parameters
        .codecs
        .first()
        .map(|codec| codec.payload_type)
        .ok_or_else(|| "sender has no negotiated codec".to_owned())
}

async fn run_video(
    local: LocalTrack,
    media: PublisherMedia,
    events: Arc<PeerEvents>,
    mut playing: watch::Receiver<bool>,
    counters: Arc<PublisherCounters>,
) {
    let result = match wait_for_start(&local, &events, &mut playing).await {
        Ok(payload_type) => stream_video(&local, payload_type, &media, &counters).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => counters.video_finished.store(true, Ordering::Relaxed),
        Err(error) => {
            tracing::warn!(%error, "video media task stopped");
            counters.record_error(format!("video: {error}"));
        }
    }
}

async fn run_audio(
    local: LocalTrack,
    media: PublisherMedia,
    events: Arc<PeerEvents>,
    mut playing: watch::Receiver<bool>,
    counters: Arc<PublisherCounters>,
) {
    let result = match wait_for_start(&local, &events, &mut playing).await {
        Ok(payload_type) => stream_audio(&local, payload_type, &media, &counters).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => counters.audio_finished.store(true, Ordering::Relaxed),
        Err(error) => {
            tracing::warn!(%error, "audio media task stopped");
            counters.record_error(format!("audio: {error}"));
        }
    }
}

/// Sends every IVF frame at its presentation time. Returns at the end of the
/// file, or never when looping.
async fn stream_video(
    local: &LocalTrack,
    payload_type: u8,
    media: &PublisherMedia,
    counters: &PublisherCounters,
) -> Result<(), String> {
    let path = &media.video_ivf;
    let started = tokio::time::Instant::now();
    let mut loop_offset = Duration::ZERO;

    loop {
        let file = File::open(path).map_err(|error| media_error(path, error).to_string())?;
        let (mut ivf, header) = IVFReader::new(BufReader::new(file))
            .map_err(|error| media_error(path, error).to_string())?;
        if header.timebase_denominator == 0 {
            return Err(media_error(path, "IVF timebase denominator is 0").to_string());
        }
        let tick = Duration::from_secs_f64(
            f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator),
        );

        // NOTE: any read error ends the pass, the same as the end of the file.
        let mut pass_length = Duration::ZERO;
        while let Ok((frame, frame_header)) = ivf.parse_next_frame() {
            let presentation_time = tick.mul_f64(frame_header.timestamp as f64);
            tokio::time::sleep_until(started + loop_offset + presentation_time).await;

            let keyframe = frame.first().is_some_and(|tag| tag & 0x01 == 0);
            let sample = Sample {
                data: frame.freeze(),
                duration: tick,
                ..Sample::new(Instant::now())
            };
            local
                .track
                .write_sample(local.ssrc, payload_type, &sample, &[])
                .await
                .map_err(|error| format!("writing a video sample failed: {error}"))?;

            counters.video_frames_sent.fetch_add(1, Ordering::Relaxed);
            if keyframe {
                counters
                    .video_keyframes_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            pass_length = presentation_time + tick;
        }

        if !media.looping {
            return Ok(());
        }
        if pass_length.is_zero() {
            return Err(media_error(path, "no VP8 frames in file").to_string());
        }
        loop_offset += pass_length;
    }
}

/// Sends every Ogg page as one Opus sample, paced by granule positions.
/// Returns at the end of the file, or never when looping.
///
/// NOTE: one page is sent as one RTP packet, which is right for files written
/// with one Opus packet per page (ffmpeg `-page_duration 20000` with 20 ms
/// frames); pages holding several packets would be sent glued together.
async fn stream_audio(
    local: &LocalTrack,
    payload_type: u8,
    media: &PublisherMedia,
    counters: &PublisherCounters,
) -> Result<(), String> {
    let path = &media.audio_ogg;
    let started = tokio::time::Instant::now();
    let mut media_time = Duration::ZERO;

    loop {
        let file = File::open(path).map_err(|error| media_error(path, error).to_string())?;
        let (mut ogg, header) = OggReader::new(BufReader::new(file), true)
            .map_err(|error| media_error(path, error).to_string())?;

        // The first audio page's granule position includes the pre-skip.
        let mut last_granule = u64::from(header.pre_skip);
        let pass_start = media_time;
        while let Ok((page, page_header)) = ogg.parse_next_page() {
            if page_header.opus_header_type(&page).is_some() {
                continue;
            }
            let samples = page_header.granule_position.saturating_sub(last_granule);
            last_granule = page_header.granule_position;
            let duration = Duration::from_micros(samples * 1_000_000 / OPUS_SAMPLE_RATE);

            tokio::time::sleep_until(started + media_time).await;
            let sample = Sample {
                data: page.freeze(),
                duration,
                ..Sample::new(Instant::now())
            };
            local
                .track
                .write_sample(local.ssrc, payload_type, &sample, &[])
                .await
                .map_err(|error| format!("writing an audio sample failed: {error}"))?;

            counters.audio_packets_sent.fetch_add(1, Ordering::Relaxed);
            media_time += duration;
        }

        if !media.looping {
            return Ok(());
        }
        if media_time == pass_start {
            return Err(media_error(path, "no Opus pages in file").to_string());
        }
    }
}
