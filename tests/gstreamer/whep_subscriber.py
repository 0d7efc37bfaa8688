#!/usr/bin/env python3
"""WHEP subscriber on GStreamer's webrtcbin, a client without transport-cc.

Usage: whep_subscriber.py WHEP_URL TOKEN SECONDS [MEDIA_ADDRESS]

Offers to receive one VP8 video and one Opus audio stream, posts the offer
to WHEP_URL with TOKEN as bearer, decodes what arrives for SECONDS and
prints one JSON object: the offer it sent, the SDP answer, and when each
video frame was decoded, in seconds after the answer was applied. With MEDIA_ADDRESS
(host:port) the answer's candidates are replaced by that address, so media
goes through a relay there.

ICE is pinned to 127.0.0.1 with UPnP off: run it where only loopback exists.
"""

import json
import sys
import time
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
AUDIO_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"
GATHERING_TIMEOUT_S = 5
RTCP_INTERVAL_NS = 1_000_000_000


def log(line):
    """Writes one line of progress to standard error."""
    print(line, file=sys.stderr, flush=True)


class Subscriber:
    def __init__(self):
        self.pipeline = Gst.Pipeline.new("whep")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(self.webrtc)
        # References to the ICE objects are kept for the life of the pipeline.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.emit("add-local-ip-address", "127.0.0.1")
        self.agent = self.ice.get_property("agent")
        self.agent.set_property("upnp", False)
        for caps in (VIDEO_CAPS, AUDIO_CAPS):
            self.webrtc.emit(
                "add-transceiver",
                GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                Gst.caps_from_string(caps),
            )
        # GStreamer sends receiver reports every 5 s by default. The
        # server's estimate for a receiver without transport-cc rests on
        # them, so report every second.
        self.webrtc.get_by_name("rtpbin").connect("element-added", self.on_rtpbin_element)
        self.webrtc.connect("pad-added", self.on_pad_added)
        self.webrtc.connect("notify::connection-state", self.on_state)
        self.webrtc.connect("notify::ice-connection-state", self.on_state)
        self.answered_at = None
        self.frames = []

    def on_rtpbin_element(self, _bin, element):
        if element.get_factory().get_name() == "rtpsession":
            element.set_property("rtcp-min-interval", RTCP_INTERVAL_NS)

    def on_state(self, element, spec):
        log(f"{spec.name} {element.get_property(spec.name).value_nick}")

    def on_pad_added(self, _element, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded_pad)
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded_pad(self, _element, pad):
        caps = pad.get_current_caps() or pad.query_caps(None)
        log(f"decoded pad {caps.to_string()}")
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        if caps.to_string().startswith("video/"):
            sink.set_property("signal-handoffs", True)
            sink.connect("handoff", self.on_video_frame)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def on_video_frame(self, _sink, _buffer, _pad):
        self.frames.append(round(time.monotonic() - self.answered_at, 3))

    def create_offer(self):
        reply = self.wait_promise("create-offer")
        offer = reply.get_value("offer")
        promise = Gst.Promise.new()
        self.webrtc.emit("set-local-description", offer, promise)
        promise.wait()
        deadline = time.monotonic() + GATHERING_TIMEOUT_S
        context = GLib.MainContext.default()
        while self.webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            if time.monotonic() > deadline:
                break
            context.iteration(False)
            time.sleep(0.01)
        return self.webrtc.get_property("local-description").sdp.as_text()

    def wait_promise(self, signal):
        promise = Gst.Promise.new()
        self.webrtc.emit(signal, None, promise)
        promise.wait()
        return promise.get_reply()

    def set_answer(self, sdp):
        _, message = GstSdp.SDPMessage.new_from_text(sdp)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        promise = Gst.Promise.new()
        self.webrtc.emit("set-remote-description", answer, promise)
        promise.wait()
        self.answered_at = time.monotonic()


def relay_candidates(sdp, media_address):
    """Replaces the address and port of every host candidate in `sdp`."""
    host, port = media_address.rsplit(":", 1)
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            parts[4], parts[5] = host, port
            line = " ".join(parts)
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def main():
    whep_url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    media_address = sys.argv[4] if len(sys.argv) > 4 else None
    Gst.init(None)
    subscriber = Subscriber()
    subscriber.pipeline.set_state(Gst.State.PLAYING)
    offer = subscriber.create_offer()

    request = urllib.request.Request(
        whep_url,
        data=offer.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = response.read().decode()
        location = response.headers.get("Location")
    if media_address:
        answer = relay_candidates(answer, media_address)
    for line in (offer + answer).splitlines():
        if line.startswith(("a=candidate", "a=ice-", "a=group", "m=", "a=setup", "a=mid", "a=fingerprint")):
            log(line)
    subscriber.set_answer(answer)

    loop = GLib.MainLoop()
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    subscriber.pipeline.set_state(Gst.State.NULL)

    if location:
        delete = urllib.request.Request(
            urllib.request.urljoin(whep_url, location),
            method="DELETE",
            headers={"Authorization": f"Bearer {token}"},
        )
        urllib.request.urlopen(delete, timeout=10).close()
    print(json.dumps({"offer": offer, "answer": answer, "frames": subscriber.frames}))


if __name__ == "__main__":
    main()
