//! Classification of datagrams that arrive on the shared media port.
//!
//! The first byte tells STUN, DTLS and RTP/RTCP apart (RFC 7983). A datagram
//! too short to be what its first byte claims is rejected here, so that the
//! peer connection never sees it and the drop is counted once.

/// Protocol of a datagram on the media port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind<'a> {
    /// A STUN message; `local_ufrag` is the server's half of its USERNAME
    /// attribute when it has one. A request names the receiver first
    /// (`local:remote`); a response that repeats the USERNAME of the
    /// server's request names the server second.
    Stun { local_ufrag: Option<&'a str> },
    /// A DTLS record.
    Dtls,
    /// An SRTP or SRTCP packet.
    Rtp,
}

/// Reason a datagram was dropped before reaching a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the smallest message of any protocol on the port.
    #[error("datagram of {0} bytes is too short for STUN, DTLS or RTP")]
    TooShort(usize),
    /// A STUN header that is truncated or lacks the magic cookie.
    #[error("invalid STUN message: {0}")]
    InvalidStun(&'static str),
    /// A DTLS record shorter than its 13-byte header.
    #[error("truncated DTLS record of {0} bytes")]
    TruncatedDtls(usize),
    /// An RTP or RTCP packet shorter than its fixed header.
    #[error("truncated RTP/RTCP packet of {0} bytes")]
    TruncatedRtp(usize),
    /// The first byte matches no protocol multiplexed on the port.
    #[error("first byte {0:#04x} matches no protocol on the media port")]
    UnknownProtocol(u8),
}

const STUN_HEADER_LEN: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_ATTR_USERNAME: u16 = 0x0006;
const DTLS_RECORD_HEADER_LEN: usize = 13;
const RTCP_MIN_LEN: usize = 8;
const RTP_MIN_LEN: usize = 12;

/// Classifies one datagram received on the media port.
pub fn classify(datagram: &[u8]) -> Result<DatagramKind<'_>, DatagramError> {
    let Some(&first) = datagram.first() else {
        return Err(DatagramError::TooShort(0));
    };
    if datagram.len() < 4 {
        return Err(DatagramError::TooShort(datagram.len()));
    }
    match first {
        0..=3 => parse_stun(datagram),
        20..=63 => {
            if datagram.len() < DTLS_RECORD_HEADER_LEN {
                Err(DatagramError::TruncatedDtls(datagram.len()))
            } else {
                Ok(DatagramKind::Dtls)
            }
        }
        128..=191 => {
            // RTCP packet types 192-223 sit in the second byte (RFC 5761).
            let is_rtcp = (192..=223).contains(&datagram[1]);
            let min = if is_rtcp { RTCP_MIN_LEN } else { RTP_MIN_LEN };
            if datagram.len() < min {
                Err(DatagramError::TruncatedRtp(datagram.len()))
            } else {
                Ok(DatagramKind::Rtp)
            }
        }
        other => Err(DatagramError::UnknownProtocol(other)),
    }
}

/// Returns true for a success or error response: STUN class bits C1 (0x100)
/// and C0 (0x010) of the message type, with C1 set (RFC 5389, section 6).
fn is_stun_response(message_type: u16) -> bool {
    message_type & 0x0100 != 0
}

fn parse_stun(datagram: &[u8]) -> Result<DatagramKind<'_>, DatagramError> {
    if datagram.len() < STUN_HEADER_LEN {
        return Err(DatagramError::InvalidStun("shorter than the 20-byte header"));
    }
    if datagram[4..8] != STUN_MAGIC_COOKIE {
        return Err(DatagramError::InvalidStun("missing magic cookie"));
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    if STUN_HEADER_LEN + body_len > datagram.len() {
        return Err(DatagramError::InvalidStun("length field exceeds the datagram"));
    }

    let body = &datagram[STUN_HEADER_LEN..STUN_HEADER_LEN + body_len];
    let mut offset = 0;
    while offset + 4 <= body.len() {
        let attr_type = u16::from_be_bytes([body[offset], body[offset + 1]]);
        let attr_len = u16::from_be_bytes([body[offset + 2], body[offset + 3]]) as usize;
        let value_start = offset + 4;
        let value_end = value_start + attr_len;
        if value_end > body.len() {
            return Err(DatagramError::InvalidStun("attribute exceeds the message"));
        }
        if attr_type == STUN_ATTR_USERNAME {
            let message_type = u16::from_be_bytes([datagram[0], datagram[1]]);
            let half = if is_stun_response(message_type) { 1 } else { 0 };
            let local_ufrag = std::str::from_utf8(&body[value_start..value_end])
                .ok()
                .and_then(|username| username.split(':').nth(half));
            return Ok(DatagramKind::Stun { local_ufrag });
        }
        // Attribute values are padded to a multiple of four bytes.
        offset = value_start + attr_len.div_ceil(4) * 4;
    }
    Ok(DatagramKind::Stun { local_ufrag: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        stun_message(0x0001, username)
    }

    fn stun_message(message_type: u16, username: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = message_type.to_be_bytes().to_vec();
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn stun_username_gives_local_ufrag() {
        let msg = binding_request("srvfrag:clientfrag");
        assert_eq!(
            classify(&msg),
            Ok(DatagramKind::Stun { local_ufrag: Some("srvfrag") })
        );
    }

    #[test]
    fn stun_response_names_server_second() {
        // libnice replies to the server's request with its USERNAME repeated.
        let success = stun_message(0x0101, "clientfrag:srvfrag");
        assert_eq!(classify(&success), Ok(DatagramKind::Stun { local_ufrag: Some("srvfrag") }));
        let error = stun_message(0x0111, "clientfrag:srvfrag");
        assert_eq!(classify(&error), Ok(DatagramKind::Stun { local_ufrag: Some("srvfrag") }));
    }

    #[test]
    fn short_datagrams_are_rejected() {
        assert_eq!(classify(&[]), Err(DatagramError::TooShort(0)));
        assert_eq!(classify(&[0x80]), Err(DatagramError::TooShort(1)));
        assert_eq!(classify(&[0x80, 0x60]), Err(DatagramError::TooShort(2)));
    }

    #[test]
    fn truncated_stun_is_rejected() {
        let msg = binding_request("a:b");
        assert!(matches!(classify(&msg[..10]), Err(DatagramError::InvalidStun(_))));
        assert!(matches!(classify(&msg[..24]), Err(DatagramError::InvalidStun(_))));
    }

    #[test]
    fn truncated_dtls_and_rtp_are_rejected() {
        assert_eq!(classify(&[22, 254, 253, 0, 0]), Err(DatagramError::TruncatedDtls(5)));
        assert_eq!(
            classify(&[0x80, 96, 0, 1, 0, 0]),
            Err(DatagramError::TruncatedRtp(6))
        );
        assert_eq!(classify(&[0x80, 200, 0, 1, 0, 0, 0, 1]), Ok(DatagramKind::Rtp));
    }

    #[test]
    fn unknown_first_byte_is_rejected() {
        assert_eq!(classify(&[0xff, 0, 0, 0]), Err(DatagramError::UnknownProtocol(0xff)));
    }
}
