//! Keyframe detection in RTP payloads, per codec.
//!
//! A video down-track starts forwarding only at the first packet of a
//! keyframe, so that the subscriber's decoder never receives a delta frame
//! whose reference it lacks.

/// Video codecs the forwarder recognises, by RTP payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// RFC 7741.
    Vp8,
    /// draft-ietf-payload-vp9.
    Vp9,
    /// RFC 6184.
    H264,
    /// AV1 RTP payload format (AOMedia).
    Av1,
}

impl VideoCodec {
    /// Maps a MIME type such as `video/VP8` to a codec; `None` for audio and
    /// unknown codecs.
    pub fn from_mime(mime: &str) -> Option<VideoCodec> {
        let subtype = mime.rsplit('/').next()?;
        match subtype.to_ascii_lowercase().as_str() {
            "vp8" => Some(VideoCodec::Vp8),
            "vp9" => Some(VideoCodec::Vp9),
            "h264" => Some(VideoCodec::H264),
            "av1" => Some(VideoCodec::Av1),
            _ => None,
        }
    }
}

/// Returns true when `payload` is the first packet of a keyframe.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::H264 => h264_starts_keyframe(payload),
        VideoCodec::Av1 => av1_starts_keyframe(payload),
    }
}

/// VP8 payload descriptor (RFC 7741 section 4.2) followed by the VP8 frame
/// header, whose P bit is 0 on keyframes.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x0f;
    if !start_of_partition || partition_id != 0 {
        return false;
    }

    let mut offset = 1;
    if extended {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        offset = 2;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&picture_id) = payload.get(offset) else {
                return false;
            };
            offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            offset += 1; // TID, Y and KEYIDX share one byte
        }
    }
    payload.get(offset).is_some_and(|header| header & 0x01 == 0)
}

/// VP9 payload descriptor: P (inter-picture predicted) clear and B (start of
/// frame) set.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|&first| first & 0x40 == 0 && first & 0x08 != 0)
}

const H264_NAL_IDR: u8 = 5;
const H264_NAL_SPS: u8 = 7;
const H264_NAL_STAP_A: u8 = 24;
const H264_NAL_FU_A: u8 = 28;

/// H264: an IDR slice or SPS, alone, inside a STAP-A, or at the start of a
/// FU-A.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        H264_NAL_IDR | H264_NAL_SPS => true,
        H264_NAL_STAP_A => {
            let mut offset = 1;
            while offset + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[offset], payload[offset + 1]]) as usize;
                let nal_type = payload[offset + 2] & 0x1f;
                if nal_type == H264_NAL_IDR || nal_type == H264_NAL_SPS {
                    return true;
                }
                offset += 2 + size;
            }
            false
        }
        H264_NAL_FU_A => payload.get(1).is_some_and(|&fu_header| {
            let start = fu_header & 0x80 != 0;
            let nal_type = fu_header & 0x1f;
            start && (nal_type == H264_NAL_IDR || nal_type == H264_NAL_SPS)
        }),
        _ => false,
    }
}

/// AV1 aggregation header: N marks the first packet of a coded video
/// sequence, which starts with a keyframe.
fn av1_starts_keyframe(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&header| header & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_picture_id() {
        // X=1 S=1 PID=0; I=1; 15-bit PictureID; VP8 header with P=0.
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x10]));
        // Same with P=1: a delta frame.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x11]));
        // Continuation packet (S=0).
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10]));
    }

    #[test]
    fn vp8_keyframe_without_extension() {
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x50]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10]));
    }

    #[test]
    fn h264_idr_stap_and_fu() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A carrying SPS (size 2) then PPS.
        assert!(starts_keyframe(VideoCodec::H264, &[0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]));
        // FU-A start of an IDR slice, then its continuation.
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn vp9_and_av1_flags() {
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x48]));
        assert!(starts_keyframe(VideoCodec::Av1, &[0x18]));
        assert!(!starts_keyframe(VideoCodec::Av1, &[0x10]));
    }

    #[test]
    fn codec_from_mime() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), Some(VideoCodec::Vp8));
        assert_eq!(VideoCodec::from_mime("video/h264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_mime("audio/opus"), None);
    }
}
