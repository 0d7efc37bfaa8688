#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine, then runs
# every test. Run as root (the browser test creates a network namespace).
#   tests/run.sh            all tests
#   tests/run.sh -E 'test(first_call)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v chromium >/dev/null || need_packages+=(chromium)
command -v chromedriver >/dev/null || need_packages+=(chromium-driver)
command -v ip >/dev/null || need_packages+=(iproute2)
command -v docker-compose >/dev/null || need_packages+=(docker-compose)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_packages+=(python3-venv)
# GStreamer's webrtcbin with VP8 and Opus decoders, driven from Debian's
# Python, for the WHEP subscriber without transport-cc.
gst_check='import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst; Gst.init(None)
assert all(Gst.ElementFactory.find(name) for name in ("webrtcbin", "nicesrc", "vp8dec", "opusdec", "decodebin"))'
if ! /usr/bin/python3 -c "$gst_check" 2>/dev/null; then
    need_packages+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
        gstreamer1.0-nice python3-gi gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0)
fi
if ((${#need_packages[@]})); then
    echo "installing: ${need_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# PostgreSQL for the vpr-store tests, which run every store test on SQLite
# and on PostgreSQL. Unless VPR_TEST_POSTGRES_URL already names a server:
# install the server if missing, start the local cluster listening on
# 127.0.0.1 only, create role vpr (password vpr, CREATEDB) and database
# vpr_test, and export the URL. Each step checks first, so a second run
# changes nothing. The tests create and drop one database per test.
if [[ -z "${VPR_TEST_POSTGRES_URL:-}" ]]; then
    if ! command -v pg_ctlcluster >/dev/null || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        echo "installing: postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    if ! pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
        pg_createcluster "$pg_version" main
    fi
    pg_listen_conf="/etc/postgresql/$pg_version/main/conf.d/vpr-test.conf"
    if [[ "$(cat "$pg_listen_conf" 2>/dev/null)" != "listen_addresses = '127.0.0.1'" ]]; then
        echo "listen_addresses = '127.0.0.1'" >"$pg_listen_conf"
        # A running cluster reads listen_addresses only at start.
        if pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" && $4 == "online" { found = 1 } END { exit !found }'; then
            pg_ctlcluster "$pg_version" main restart
        fi
    fi
    if ! pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" && $4 == "online" { found = 1 } END { exit !found }'; then
        pg_ctlcluster "$pg_version" main start
    fi
    pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" { print $3 }')
    pg_admin() { (cd /tmp && runuser -u postgres -- psql -p "$pg_port" -v ON_ERROR_STOP=1 -tAq "$@"); }
    if [[ "$(pg_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'vpr'")" != "1" ]]; then
        pg_admin -c "CREATE ROLE vpr LOGIN PASSWORD 'vpr' CREATEDB"
    fi
    if [[ "$(pg_admin -c "SELECT 1 FROM pg_database WHERE datname = 'vpr_test'")" != "1" ]]; then
        pg_admin -c "CREATE DATABASE vpr_test OWNER vpr"
    fi
    export VPR_TEST_POSTGRES_URL="postgres://vpr:vpr@127.0.0.1:${pg_port}/vpr_test"
    echo "PostgreSQL $pg_version: $VPR_TEST_POSTGRES_URL"
fi

# The compose file cannot run here (no Docker engine), but it must parse.
VPR_JOIN_TOKEN_SECRET=check VPR_API_KEYS=check:check VPR_POSTGRES_PASSWORD=check \
    docker-compose -f docker-compose.yml config >/dev/null
echo "docker-compose.yml: valid"

cargo build --workspace --all-targets --locked
cargo nextest run --workspace --no-fail-fast "$@"
