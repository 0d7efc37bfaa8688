//! Checks on an SDP offer before it reaches the peer connection.
//!
//! The media plane runs every peer connection on one UDP port, so all media
//! sections must share one transport (BUNDLE). The library keeps one
//! header-extension id table per peer connection, so an offer that gives
//! one extension different ids in different sections is rejected here with
//! the extension's URI instead of losing that extension from the answer.

use std::collections::HashMap;
use std::io::Cursor;

use rtc::sdp::description::session::SessionDescription;

use crate::repair::RepairParams;

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const RRID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The text is not a parsable SDP session description.
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    /// The offer has no audio or video section.
    #[error("SDP offer has no audio or video m-section")]
    NoMedia,
    /// Several media sections without one BUNDLE group holding all of them.
    #[error("SDP offer has {sections} m-sections but no a=group:BUNDLE covering all of them; BUNDLE is required")]
    BundleRequired {
        /// Number of m-sections in the offer.
        sections: usize,
    },
    /// One header extension URI is mapped to different ids.
    #[error("header extension {uri} has id {first} in one m-section and id {second} in another; use one id per extension")]
    ConflictingExtensionIds {
        /// Extension URI.
        uri: String,
        /// Id in the first section that names the extension.
        first: u16,
        /// Conflicting id in a later section.
        second: u16,
    },
    /// One id is used for two different extensions.
    #[error("header extension id {id} names both {first} and {second}")]
    ReusedExtensionId {
        /// The extension id.
        id: u16,
        /// URI in the first section.
        first: String,
        /// URI in a later section.
        second: String,
    },
}

/// Media kinds found in an offer, in section order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// One entry per audio or video m-section: true for video.
    pub sections_are_video: Vec<bool>,
    /// The mid of a lone m-section offered without a BUNDLE group.
    pub unbundled_mid: Option<String>,
    /// Some video section sends several encodings named by `a=rid`.
    pub simulcast: bool,
    /// Extension ids and RTX payload types, for retransmissions that name
    /// their layer by RID.
    pub repair: RepairParams,
}

impl OfferSummary {
    /// Number of audio sections.
    pub fn audio_sections(&self) -> usize {
        self.sections_are_video.iter().filter(|video| !**video).count()
    }

    /// Number of video sections.
    pub fn video_sections(&self) -> usize {
        self.sections_are_video.iter().filter(|video| **video).count()
    }
}

/// Parses and checks an offer.
pub fn check_offer(sdp: &str) -> Result<OfferSummary, OfferError> {
    let description = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|err| OfferError::Malformed(err.to_string()))?;

    let media = &description.media_descriptions;
    let sections_are_video: Vec<bool> = media
        .iter()
        .filter_map(|m| match m.media_name.media.as_str() {
            "audio" => Some(false),
            "video" => Some(true),
            _ => None,
        })
        .collect();
    if sections_are_video.is_empty() {
        return Err(OfferError::NoMedia);
    }

    let has_bundle_group = description
        .attributes
        .iter()
        .any(|a| a.key == "group" && a.value.as_deref().is_some_and(|v| v.starts_with("BUNDLE")));
    let unbundled_mid = if media.len() == 1 && !has_bundle_group {
        media[0].attribute("mid").flatten().map(str::to_owned)
    } else {
        None
    };

    if media.len() > 1 {
        let mids: Vec<&str> = media
            .iter()
            .filter_map(|m| m.attribute("mid").flatten())
            .collect();
        let bundled = description
            .attributes
            .iter()
            .filter(|a| a.key == "group")
            .filter_map(|a| a.value.as_deref())
            .filter_map(|v| v.strip_prefix("BUNDLE"))
            .any(|tags| {
                let tags: Vec<&str> = tags.split_whitespace().collect();
                mids.len() == media.len() && mids.iter().all(|mid| tags.contains(mid))
            });
        if !bundled {
            return Err(OfferError::BundleRequired { sections: media.len() });
        }
    }

    let mut id_by_uri: HashMap<String, u16> = HashMap::new();
    let mut uri_by_id: HashMap<u16, String> = HashMap::new();
    for section in media {
        for attribute in section.attributes.iter().filter(|a| a.key == "extmap") {
            let Some(value) = attribute.value.as_deref() else {
                continue;
            };
            let mut parts = value.split_whitespace();
            let (Some(id_part), Some(uri)) = (parts.next(), parts.next()) else {
                return Err(OfferError::Malformed(format!("invalid a=extmap:{value}")));
            };
            // The id may carry a direction, as in "3/sendonly".
            let id_text = id_part.split('/').next().unwrap_or(id_part);
            let id: u16 = id_text
                .parse()
                .map_err(|_| OfferError::Malformed(format!("invalid extmap id in a=extmap:{value}")))?;

            if let Some(&first) = id_by_uri.get(uri) {
                if first != id {
                    return Err(OfferError::ConflictingExtensionIds { uri: uri.to_owned(), first, second: id });
                }
            }
            if let Some(first) = uri_by_id.get(&id) {
                if first != uri {
                    return Err(OfferError::ReusedExtensionId { id, first: first.clone(), second: uri.to_owned() });
                }
            }
            id_by_uri.insert(uri.to_owned(), id);
            uri_by_id.insert(id, uri.to_owned());
        }
    }

    let simulcast = media
        .iter()
        .any(|m| m.media_name.media == "video" && m.attributes.iter().any(|a| a.key == "rid"));
    let extension_id = |uri: &str| id_by_uri.get(uri).and_then(|&id| u8::try_from(id).ok());
    let repair = RepairParams {
        mid_id: extension_id(MID_URI),
        rid_id: extension_id(RID_URI),
        rrid_id: extension_id(RRID_URI),
        apt: rtx_payload_types(media),
    };
    Ok(OfferSummary { sections_are_video, unbundled_mid, simulcast, repair })
}

/// Maps each RTX payload type (`a=rtpmap:<pt> rtx/…` with
/// `a=fmtp:<pt> apt=<media>`) of the offer's video sections to its media
/// payload type.
fn rtx_payload_types(media: &[rtc::sdp::description::media::MediaDescription]) -> HashMap<u8, u8> {
    let mut apt = HashMap::new();
    for section in media.iter().filter(|m| m.media_name.media == "video") {
        let value_of = |key: &'static str| {
            section.attributes.iter().filter(move |a| a.key == key).filter_map(|a| a.value.as_deref())
        };
        let rtx: Vec<&str> = value_of("rtpmap")
            .filter_map(|value| value.split_once(' '))
            .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("rtx/"))
            .map(|(payload_type, _)| payload_type)
            .collect();
        for (payload_type, parameters) in value_of("fmtp").filter_map(|value| value.split_once(' ')) {
            if !rtx.contains(&payload_type) {
                continue;
            }
            let media_type = parameters
                .split(';')
                .filter_map(|parameter| parameter.trim().strip_prefix("apt="))
                .find_map(|value| value.parse::<u8>().ok());
            if let (Ok(payload_type), Some(media_type)) = (payload_type.parse::<u8>(), media_type) {
                apt.insert(payload_type, media_type);
            }
        }
    }
    apt
}

/// Adapts a lone unbundled m-section to the library, which answers every
/// section outside a BUNDLE group with port 0: the offer gets a BUNDLE
/// group naming that one mid. Returns the offer to give the library.
pub fn bundle_lone_section(sdp: &str, summary: &OfferSummary) -> String {
    let Some(mid) = &summary.unbundled_mid else {
        return sdp.to_owned();
    };
    let Some(media_start) = sdp.find("\nm=") else {
        return sdp.to_owned();
    };
    let (session, media) = sdp.split_at(media_start + 1);
    format!("{session}a=group:BUNDLE {mid}\r\n{media}")
}

/// Removes the BUNDLE group the library wrote into an answer to an offer
/// that had none, so the answer mirrors the offer.
pub fn unbundle_answer(answer: &str, summary: &OfferSummary) -> String {
    if summary.unbundled_mid.is_none() {
        return answer.to_owned();
    }
    answer
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("a=group:BUNDLE"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(group: &str, audio_ext: &str, video_ext: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{group}\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n{audio_ext}a=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n{video_ext}a=rtpmap:96 VP8/90000\r\n"
        )
    }

    #[test]
    fn bundled_offer_passes() {
        let sdp = offer("a=group:BUNDLE 0 1\r\n", "", "");
        let summary = check_offer(&sdp).expect("valid offer");
        assert_eq!(summary.audio_sections(), 1);
        assert_eq!(summary.video_sections(), 1);
        assert!(!summary.simulcast);
    }

    #[test]
    fn rid_video_section_is_simulcast() {
        let rids = "a=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n";
        let sdp = offer("a=group:BUNDLE 0 1\r\n", "", rids);
        assert!(check_offer(&sdp).expect("valid offer").simulcast);
    }

    #[test]
    fn two_sections_without_bundle_fail() {
        let sdp = offer("", "", "");
        assert_eq!(check_offer(&sdp), Err(OfferError::BundleRequired { sections: 2 }));
    }

    #[test]
    fn one_section_without_bundle_passes() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(check_offer(sdp).is_ok());
    }

    #[test]
    fn lone_section_gets_and_loses_bundle_group() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n";
        let summary = check_offer(sdp).expect("valid offer");
        assert_eq!(summary.unbundled_mid.as_deref(), Some("v"));
        let adapted = bundle_lone_section(sdp, &summary);
        assert!(adapted.contains("t=0 0\r\na=group:BUNDLE v\r\nm=video"), "{adapted}");
        let answer = "v=0\r\na=group:BUNDLE v\r\nm=video 9 UDP\r\n";
        assert_eq!(unbundle_answer(answer, &summary), "v=0\r\nm=video 9 UDP\r\n");
    }

    #[test]
    fn conflicting_extension_ids_name_the_uri() {
        let sdp = offer(
            "a=group:BUNDLE 0 1\r\n",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
            "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        );
        let err = check_offer(&sdp).unwrap_err();
        assert!(err.to_string().contains("urn:ietf:params:rtp-hdrext:sdes:mid"), "{err}");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(check_offer("hello"), Err(OfferError::Malformed(_))));
    }

    #[test]
    fn repair_params_from_extmap_and_fmtp() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
a=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n";
        let summary = check_offer(sdp).expect("valid offer");
        assert!(summary.simulcast);
        let repair = summary.repair;
        assert_eq!((repair.mid_id, repair.rid_id, repair.rrid_id), (Some(4), Some(10), Some(11)));
        assert_eq!(repair.apt, HashMap::from([(97, 96), (99, 98)]));
    }
}
