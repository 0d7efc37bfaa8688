//! Points the ICE candidates of an SDP answer at the relay, so a client
//! sends its media to the relay instead of the server.

use std::net::SocketAddr;

/// Rewrites the connection address and port of every UDP `a=candidate` line
/// in `answer_sdp` to `relay`. Other lines, including TCP candidates, are
/// kept byte for byte, line endings included.
///
/// A candidate line reads `a=candidate:<foundation> <component> <transport>
/// <priority> <address> <port> typ <type> ...` (RFC 8839 section 5.1).
pub fn rewrite_answer_candidates(answer_sdp: &str, relay: SocketAddr) -> String {
    let mut rewritten = String::with_capacity(answer_sdp.len());
    for line in answer_sdp.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        let ending = &line[content.len()..];
        match rewrite_candidate(content, relay) {
            Some(candidate) => {
                rewritten.push_str(&candidate);
                rewritten.push_str(ending);
            }
            None => rewritten.push_str(line),
        }
    }
    rewritten
}

/// Returns the address and port of the first UDP candidate in `sdp`: where
/// a client would send its media.
pub fn first_udp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|line| {
        let fields: Vec<&str> = line.trim_end().strip_prefix("a=candidate:")?.split(' ').collect();
        if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") {
            return None;
        }
        Some(SocketAddr::new(fields[4].parse().ok()?, fields[5].parse().ok()?))
    })
}

/// Returns the rewritten line if `line` is a UDP candidate.
fn rewrite_candidate(line: &str, relay: SocketAddr) -> Option<String> {
    let attribute = line.strip_prefix("a=candidate:")?;
    let mut fields: Vec<&str> = attribute.split(' ').collect();
    if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") {
        return None;
    }

    let address = relay.ip().to_string();
    let port = relay.port().to_string();
    fields[4] = &address;
    fields[5] = &port;
    Some(format!("a=candidate:{}", fields.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
        o=- 1 1 IN IP4 0.0.0.0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
        a=candidate:2 1 tcp 1518280447 127.0.0.1 40001 typ host tcptype passive\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn rewrites_udp_candidate_only() {
        let relay: SocketAddr = "127.0.0.1:51000".parse().unwrap();
        let rewritten = rewrite_answer_candidates(ANSWER, relay);

        assert!(rewritten.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 51000 typ host\r\n"));
        assert!(rewritten.contains("127.0.0.1 40001 typ host tcptype passive\r\n"));
        assert!(!rewritten.contains(" 40000 "));
        assert_eq!(rewritten.len(), ANSWER.len());
    }

    #[test]
    fn finds_first_udp_candidate() {
        assert_eq!(first_udp_candidate(ANSWER), Some("127.0.0.1:40000".parse().unwrap()));
        let tcp_only = "a=candidate:2 1 tcp 1518280447 127.0.0.1 40001 typ host tcptype passive\r\n";
        assert_eq!(first_udp_candidate(tcp_only), None);
    }

    #[test]
    fn keeps_other_lines_and_endings() {
        let relay: SocketAddr = "[::1]:5000".parse().unwrap();
        let answer = "v=0\na=candidate:9 1 UDP 100 10.0.0.5 3478 typ host generation 0\na=mid:0";
        let rewritten = rewrite_answer_candidates(answer, relay);

        assert_eq!(
            rewritten,
            "v=0\na=candidate:9 1 UDP 100 ::1 5000 typ host generation 0\na=mid:0"
        );
    }

    #[test]
    fn leaves_short_candidate_untouched() {
        let relay: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let answer = "a=candidate:1 1 udp 100 127.0.0.1\r\n";
        assert_eq!(rewrite_answer_candidates(answer, relay), answer);
    }
}
