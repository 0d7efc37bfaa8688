//! SDP offers the WHIP endpoint must answer correctly: Safari-style H264
//! profiles and levels, BUNDLE rules and header-extension ids.

mod common;

use common::{admit, create_room, TestServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use vpr_control::pb::Role;

const FINGERPRINT: &str = "sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF";

/// One m-section of a test offer.
struct Section<'a> {
    kind: &'a str,
    mid: &'a str,
    /// `(payload type, rtpmap, fmtp)` lines.
    formats: Vec<(u8, &'a str, &'a str)>,
    extmaps: Vec<(u8, &'a str)>,
}

fn offer(bundle: bool, sections: &[Section<'_>]) -> String {
    let mut sdp = String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    if bundle {
        let mids: Vec<&str> = sections.iter().map(|s| s.mid).collect();
        sdp += &format!("a=group:BUNDLE {}\r\n", mids.join(" "));
    }
    sdp += "a=msid-semantic: WMS stream\r\n";
    for section in sections {
        let payload_types: Vec<String> = section.formats.iter().map(|f| f.0.to_string()).collect();
        sdp += &format!(
            "m={} 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n",
            section.kind,
            payload_types.join(" ")
        );
        sdp += &format!(
            "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:{FINGERPRINT}\r\na=setup:actpass\r\na=mid:{}\r\n",
            section.mid
        );
        for (id, uri) in &section.extmaps {
            sdp += &format!("a=extmap:{id} {uri}\r\n");
        }
        sdp += &format!("a=sendonly\r\na=msid:stream track-{}\r\na=rtcp-mux\r\n", section.mid);
        for (payload_type, rtpmap, fmtp) in &section.formats {
            sdp += &format!("a=rtpmap:{payload_type} {rtpmap}\r\n");
            if !fmtp.is_empty() {
                sdp += &format!("a=fmtp:{payload_type} {fmtp}\r\n");
            }
        }
        sdp += &format!("a=ssrc:{} cname:test\r\n", 1000 + section.mid.len() as u32 * 7 + section.kind.len() as u32);
    }
    sdp
}

async fn post_offer(url: &str, token: &str, sdp: String) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(sdp)
        .send()
        .await
        .expect("POST offer");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Returns the `profile-level-id` values of H264 payload types in `sdp`.
fn answered_h264_profiles(sdp: &str) -> Vec<String> {
    let h264_types: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.to_ascii_lowercase().contains("h264/90000"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter(|l| h264_types.iter().any(|pt| l.starts_with(&format!("{pt} "))))
        .filter_map(|l| l.split("profile-level-id=").nth(1))
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn safari_h264_offers_keep_h264() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-H264").await;

    for offered in ["42e034", "640c34", "42e01e"] {
        let resident = admit(&mut grpc, &room.room_id, &format!("resident-{offered}"), Role::Resident).await;
        let fmtp = format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={offered}");
        let sdp = offer(
            true,
            &[Section {
                kind: "video",
                mid: "0",
                formats: vec![(96, "H264/90000", fmtp.as_str()), (97, "rtx/90000", "apt=96"), (98, "VP8/90000", "")],
                extmaps: vec![],
            }],
        );
        let (status, answer) = post_offer(&resident.whip_url, &resident.join_token, sdp).await;
        assert_eq!(status, StatusCode::CREATED, "offer with {offered}: {answer}");

        let profiles = answered_h264_profiles(&answer);
        assert!(!profiles.is_empty(), "H264 {offered} dropped from answer:\n{answer}");
        for answered in profiles {
            assert_eq!(&answered[..4], &offered[..4], "answered profile {answered} for offered {offered}");
            let answered_level = u8::from_str_radix(&answered[4..6], 16).expect("hex level");
            let offered_level = u8::from_str_radix(&offered[4..6], 16).expect("hex level");
            assert!(
                answered_level <= offered_level,
                "answered level {answered} above offered {offered}"
            );
        }
    }
}

#[tokio::test]
async fn bundle_and_extension_rules() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-BUNDLE").await;
    let audio = |extmaps| Section { kind: "audio", mid: "0", formats: vec![(111, "opus/48000/2", "minptime=10;useinbandfec=1")], extmaps };
    let video = |extmaps| Section { kind: "video", mid: "1", formats: vec![(96, "VP8/90000", "")], extmaps };

    let resident = admit(&mut grpc, &room.room_id, "resident-nobundle", Role::Resident).await;
    let (status, body) = post_offer(&resident.whip_url, &resident.join_token, offer(false, &[audio(vec![]), video(vec![])])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("BUNDLE is required"), "{body}");

    let single = admit(&mut grpc, &room.room_id, "resident-single", Role::Resident).await;
    let (status, body) = post_offer(&single.whip_url, &single.join_token, offer(false, &[video(vec![])])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.contains("m=video 9") || body.contains("m=video "), "{body}");
    assert!(!body.contains("m=video 0 "), "rejected m-section in answer: {body}");

    let conflicting = admit(&mut grpc, &room.room_id, "resident-ext", Role::Resident).await;
    let mid_uri = "urn:ietf:params:rtp-hdrext:sdes:mid";
    let sdp = offer(true, &[audio(vec![(4, mid_uri)]), video(vec![(9, mid_uri)])]);
    let (status, body) = post_offer(&conflicting.whip_url, &conflicting.join_token, sdp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains(mid_uri), "error does not name the extension: {body}");

    let consistent = admit(&mut grpc, &room.room_id, "resident-ext-ok", Role::Resident).await;
    let sdp = offer(true, &[audio(vec![(4, mid_uri)]), video(vec![(4, mid_uri)])]);
    let (status, body) = post_offer(&consistent.whip_url, &consistent.join_token, sdp).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mid_lines = body.lines().filter(|l| l.starts_with("a=extmap:4 ") && l.contains(mid_uri)).count();
    assert_eq!(mid_lines, 2, "mid extension missing from a section of the answer:\n{body}");
}
