#!/usr/bin/env bash
# Measures the server's CPU time per forwarded RTP packet with one publisher
# (the looping test clip, about 85 packets/s) fanned out to N subscribers,
# all on 127.0.0.1. Reads utime+stime from /proc and the forwarded-packet
# counter from /metrics over a steady window.
#   benches/fanout.sh [SUBSCRIBERS] [WINDOW_S]
# Needs release binaries: cargo build --release --workspace --bins
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=${1:-10}
window_s=${2:-15}
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; cat "$work/server.log" >&2; rm -rf "$work"' EXIT

cat > "$work/config.toml" <<TOML
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
RUST_LOG=warn "$bin/vpr-server" --config "$work/config.toml" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done

ctl() { "$bin/vprctl" --server http://127.0.0.1:15051 --json "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
room=$(ctl create-room --incident "BENCH-$$" --max-participants 50 | field room_id)
resident=$(ctl admit --room "$room" --identity resident --role resident \
    --consent-video --consent-audio --consent-channel bench)
"$bin/vpr-bench" publish --whip "$(echo "$resident" | field whip_url)" \
    --token "$(echo "$resident" | field join_token)" --duration-s $((window_s + 20)) > /dev/null &
for i in $(seq "$subscribers"); do
    officer=$(ctl admit --room "$room" --identity "officer-$i" --role officer --badge "B$i")
    "$bin/vpr-bench" subscribe --whep "$(echo "$officer" | field whep_url)" \
        --token "$(echo "$officer" | field join_token)" --duration-s $((window_s + 15)) > "$work/sub-$i.log" &
done

sample() {
    local ticks forwarded
    ticks=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
    forwarded=$(curl -s http://127.0.0.1:18080/metrics | awk '/^vpr_rtp_forwarded_total/ {print $2}')
    echo "$ticks $forwarded"
}
sleep 5
read -r ticks0 fwd0 < <(sample)
sleep "$window_s"
read -r ticks1 fwd1 < <(sample)
hz=$(getconf CLK_TCK)
python3 - "$ticks0" "$ticks1" "$fwd0" "$fwd1" "$hz" "$subscribers" "$window_s" <<'PY'
import sys
t0, t1, f0, f1, hz, n, w = map(float, sys.argv[1:])
cpu_s = (t1 - t0) / hz
packets = f1 - f0
print(f"subscribers={int(n)} window={w:.0f}s forwarded={packets:.0f} ({packets / w:.0f}/s) "
      f"server_cpu={cpu_s:.2f}s ({100 * cpu_s / w:.1f}% of one core) "
      f"cpu_per_forwarded_packet={1e6 * cpu_s / packets:.1f}us")
PY
