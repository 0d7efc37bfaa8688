#!/usr/bin/env bash
# Runs one scenario against VPR and then against Janus 1.1.x VideoRoom with
# the same vpr-bench clients: one synthetic VP8 publisher (RATE RTP packets/s
# of PAYLOAD bytes, a keyframe a second) fanned out to SUBSCRIBERS
# subscribers. Prints, for each server, its CPU time per forwarded packet
# over the steady window (utime+stime and utime alone, from /proc/PID/stat)
# and the time to first frame, then the VPR:Janus ratio.
#
#   sudo benches/janus_side_by_side.sh [SUBSCRIBERS] [RATE] [PAYLOAD] [DURATION_S]
#
# Defaults: 30 subscribers, 1000 packets/s, 1200 bytes, 30 s per server.
# Needs root (network namespace), `apt-get install -y janus`, and release
# binaries: cargo build --release -p vpr-server -p vpr-bench.
#
# Both servers and the harness run inside a network namespace created here.
# Janus skips loopback interfaces when it gathers ICE candidates, so the
# namespace holds a veth pair with 127.0.0.1/32 on one end, and Janus's ICE
# is restricted to that end (ice_enforce_list). Packets to 127.0.0.1 still
# go through the namespace's loopback. VPR runs in the same namespace, so
# both see the same network. Reports go to OUT_DIR (default: a new folder
# under target/janus_side_by_side/). TARGETS="vpr" or "janus" runs one of
# the two. The namespace's UDP counters (/proc/net/snmp) before and after
# each run go to OUT_DIR/TARGET-udp.txt: RcvbufErrors and SndbufErrors show
# drops in socket buffers. VPR_SERVER_BIN names another vpr-server binary,
# for example one built from a clean checkout of a commit. SERVER_CPUS and
# HARNESS_CPUS (taskset lists, for example 0 and 1) pin the server and the
# harness to separate cores, so that the server's delay and capacity are
# measured without the harness competing for its core.
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=${1:-30}
rate=${2:-1000}
payload=${3:-1200}
duration_s=${4:-30}
bin=${CARGO_TARGET_DIR:-target}/release
out=${OUT_DIR:-target/janus_side_by_side/$(date -u +%Y%m%dT%H%M%SZ)}
janus_bin=$(command -v janus || true)
targets=${TARGETS:-vpr janus}
server_bin=${VPR_SERVER_BIN:-$bin/vpr-server}
server_pin=()
[ -z "${SERVER_CPUS:-}" ] || server_pin=(taskset -c "$SERVER_CPUS")
harness_pin=()
[ -z "${HARNESS_CPUS:-}" ] || harness_pin=(taskset -c "$HARNESS_CPUS")

[ "$(id -u)" = 0 ] || { echo "run as root: the script creates a network namespace" >&2; exit 2; }
[ -n "$janus_bin" ] || { echo "janus is not installed: apt-get install -y janus" >&2; exit 2; }
for binary in "$server_bin" "$bin/vpr-bench"; do
    [ -x "$binary" ] || { echo "$binary is missing: cargo build --release -p vpr-server -p vpr-bench" >&2; exit 2; }
done
janus_libs=$(dirname "$(dirname "$(find /usr/lib -path '*/janus/plugins/libjanus_videoroom.so' | head -1)")")
[ -d "$janus_libs/plugins" ] || { echo "the Janus VideoRoom plugin was not found under /usr/lib" >&2; exit 2; }

mkdir -p "$out"
work=$(mktemp -d)
ns="vprbench$$"
veth="vprb$$"
server_pid=""

stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add "${veth}a" type veth peer name "${veth}b"
ip -n "$ns" addr add 127.0.0.1/32 dev "${veth}a"
ip -n "$ns" link set "${veth}a" up
ip -n "$ns" link set "${veth}b" up
in_ns() { ip netns exec "$ns" "$@"; }

wait_http() {
    for _ in $(seq 100); do
        in_ns curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no response from $1 after 10 s; see the server log in $out" >&2
    return 1
}

# UDP counters of the namespace, one header and one value line.
udp_counters() { in_ns grep '^Udp:' /proc/net/snmp; }

# The same scenario for both targets; the target's flags come after it.
bench() {
    RUST_LOG=${RUST_LOG:-error} in_ns "${harness_pin[@]}" "$bin/vpr-bench" run --rooms 1 --residents-per-room 1 --officers-per-room "$subscribers" \
        --join-rate 10 --duration-s "$duration_s" --synthetic-rate "$rate" --payload "$payload" \
        --server-pid "$server_pid" "$@"
}

run_vpr() {
echo "== VPR =="
cat > "$work/vpr.toml" <<TOML
[http]
listen = "127.0.0.1:18080"
public_url = "http://127.0.0.1:18080"
[grpc]
listen = "127.0.0.1:15051"
[media]
udp_listen = "127.0.0.1:15000"
[store]
url = "sqlite://$work/vpr.db"
TOML
# Started with ip netns exec directly, not through a shell function, so
# that $! is the server's own process id (ip and env exec into it).
ip netns exec "$ns" "${server_pin[@]}" env RUST_LOG=warn "$server_bin" --config "$work/vpr.toml" > "$out/vpr-server.log" 2>&1 &
server_pid=$!
wait_http http://127.0.0.1:18080/healthz
bench --target vpr --server-grpc http://127.0.0.1:15051 --server-http http://127.0.0.1:18080 \
    --report-json "$out/vpr.json" --report-svg "$out/vpr.svg" | tee "$out/vpr.txt" || true
stop_server
}

run_janus() {
echo "== Janus =="
mkdir -p "$work/janus"
cat > "$work/janus/janus.jcfg" <<JCFG
general: {
	configs_folder = "$work/janus"
	plugins_folder = "$janus_libs/plugins"
	transports_folder = "$janus_libs/transports"
	events_folder = "$janus_libs/events"
	loggers_folder = "$janus_libs/loggers"
	debug_level = 4
	session_timeout = 60
}
media: {
	rtp_port_range = "20000-40000"
}
nat: {
	ice_enforce_list = "${veth}a"
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}
events: {
	broadcast = false
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
JCFG
cat > "$work/janus/janus.transport.http.jcfg" <<JCFG
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = 8088
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
JCFG
echo 'general: {}' > "$work/janus/janus.plugin.videoroom.jcfg"
ip netns exec "$ns" "${server_pin[@]}" "$janus_bin" --configs-folder "$work/janus" --config "$work/janus/janus.jcfg" --disable-colors \
    > "$out/janus.log" 2>&1 &
server_pid=$!
wait_http http://127.0.0.1:8088/janus/info
bench --target janus --janus-url http://127.0.0.1:8088/janus \
    --report-json "$out/janus.json" --report-svg "$out/janus.svg" | tee "$out/janus.txt" || true
stop_server
}

for target in $targets; do
    { echo before; udp_counters; } > "$out/$target-udp.txt"
    "run_$target"
    { echo after; udp_counters; } >> "$out/$target-udp.txt"
done

{
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "janus: $("$janus_bin" --version 2>/dev/null | head -1)"
    python3 - "$out/vpr.json" "$out/janus.json" "$subscribers" "$rate" "$payload" <<'PY'
import json, sys
paths, (n, rate, payload) = sys.argv[1:3], sys.argv[3:6]
print(f"scenario: 1 publisher, {n} subscribers, {rate} packets/s of {payload} bytes")
nan = float("nan")
cpu = {}
for name, path in zip(("VPR", "Janus"), paths):
    try:
        report = json.load(open(path))
    except (OSError, ValueError) as error:
        print(f"{name}: no report ({error})")
        continue
    steady = report.get("steady") or {}
    first = report.get("first_frame_ms") or {}
    key = report.get("first_keyframe_ms") or {}
    cpu[name] = steady.get("cpu_us_per_packet")
    counter = steady.get("server_forwarded_packets")
    print(f"{name}: subscribers {report['subscribers']['connected']}/{report['subscribers']['requested']}, "
          f"video loss {report['video'].get('loss_ratio')}")
    print(f"  steady window {steady.get('seconds', nan):.1f} s: {steady.get('packets_per_s', nan):.0f} packets/s "
          "received" + (f", server counter {counter / steady['seconds']:.0f} forwarded" if counter else ""))
    per_forwarded = steady.get("cpu_us_per_forwarded_packet")
    print(f"  server CPU per packet {steady.get('cpu_us_per_packet', nan):.2f} us "
          f"(user {steady.get('user_us_per_packet', nan):.2f} us)"
          + (f", per packet of the server counter {per_forwarded:.2f} us" if per_forwarded else ""))
    print(f"  first frame after CreateRoom p50 {first.get('p50', nan):.0f} ms, p95 {first.get('p95', nan):.0f} ms; "
          f"first keyframe p50 {key.get('p50', nan):.0f} ms, p95 {key.get('p95', nan):.0f} ms")
if cpu.get("VPR") and cpu.get("Janus"):
    print(f"ratio VPR:Janus of CPU per packet: {cpu['VPR'] / cpu['Janus']:.2f}")
PY
} | tee "$out/summary.txt"
echo "reports in $out"
