//! Settings of the media plane.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Media-plane settings, read from the `[media]` table of the server config.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The one UDP socket for ICE, DTLS, SRTP and RTCP of every peer connection.
    pub udp_listen: SocketAddr,
    /// Addresses announced as host candidates (NAT 1:1); empty means the
    /// bound address.
    pub announced_ips: Vec<IpAddr>,
    /// Minimum interval between keyframe requests upstream per source.
    pub keyframe_request_interval: Duration,
    /// Peer connections not connected after this long are closed.
    pub connect_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 50_000)),
            announced_ips: Vec::new(),
            keyframe_request_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
        }
    }
}
