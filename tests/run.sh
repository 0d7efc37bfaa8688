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
if ((${#need_packages[@]})); then
    echo "installing: ${need_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# The compose file cannot run here (no Docker engine), but it must parse.
VPR_JOIN_TOKEN_SECRET=check VPR_API_KEYS=check:check VPR_POSTGRES_PASSWORD=check \
    docker-compose -f docker-compose.yml config >/dev/null
echo "docker-compose.yml: valid"

cargo build --workspace --all-targets --locked
cargo nextest run --workspace --no-fail-fast "$@"
