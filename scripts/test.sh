#!/usr/bin/env bash
# Every check and test: formatting, lints (both backends), unit, store, cache and handler
# tests on the real MariaDB and Redis (and again on the embedded SQLite backend), the
# deployment checks (template, workflows, their agreement with the workspace, one arm64
# release cross-build), then the end-to-end run of the local main job over HTTP with the
# LiveKit token cross-check.
# Starts MariaDB and Redis when they are not running; a service that cannot be reached fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

export DATABASE_URL="${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306/test}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
export RUST_BACKTRACE=0
# A clean clone gains nothing from incremental caches, only gigabytes on disk.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    local name=$1 port=$2
    for _ in $(seq 1 60); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "FAIL: $name is not reachable on 127.0.0.1:$port" >&2
    exit 1
}

ensure_services() {
    if ! port_open 3306; then
        log "starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    fi
    wait_for MariaDB 3306
    if ! port_open 6379; then
        log "starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    fi
    wait_for Redis 6379
}

# The whole run needs about 6 GB in target/ (debug builds for both backends, one release
# cross-build); a full disk shows up as a linker crash ("Bus error"), so say so up front.
check_disk() {
    local free_kb
    free_kb=$(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }')
    if [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
        echo "FAIL: only $((free_kb / 1024)) MB free under $ROOT; the test run needs about 6 GB" >&2
        exit 1
    fi
}

check_disk
ensure_services
log "python tools (.venv)"
ensure_venv

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (MySQL build, then embedded SQLite build)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features call-shared/embedded -- -D warnings

log "cargo test on MariaDB and Redis"
cargo test --workspace
log "cargo test on the embedded SQLite backend"
cargo test -p call-shared --features embedded

# ---- Deployment: template, workflows, their agreement with the workspace, arm64 build ----
# cfn-lint with the serverless rules (the venv's, pinned; never a global one), the workflows
# and Dependabot config (scripts/lint_workflows.sh: GitHub's schemas, actionlint with
# shellcheck, zizmor's offline security audit), the template/router/crate consistency check
# and its tests, then one arm64 cross-build (zig, ring's C code for aarch64), so a broken
# cross toolchain fails here rather than in the deploy. It uses the dev profile: its build
# scripts and proc macros are the ones the tests above already compiled for this host, and a
# release build only adds optimisation (scripts/bench.sh builds every function that way).
log "deploy: cfn-lint template.yaml (serverless rules)"
"$VENV/bin/cfn-lint" --template template.yaml --append-rules cfn_lint_serverless.rules
log "deploy: workflows (schema, actionlint, zizmor)"
scripts/lint_workflows.sh
log "deploy: template, Cargo.toml router and functions/ agree"
"$VENV/bin/python" scripts/check_deploy_config.py
"$VENV/bin/python" -m pytest tests/deploy -q
log "deploy: arm64 cross-build (health)"
ensure_arm64_target
"$VENV/bin/cargo-lambda" lambda build --arm64 --output-format zip -p health
ls -l target/lambda/health/bootstrap.zip

log "end-to-end: the local main job over HTTP (and the API contract: Chromium, schemathesis)"
ensure_chromium
python -m pytest tests/e2e -q --durations=25

# Benchmark harness smoke run: every phase of scripts/bench.sh once, with tiny counts on the
# debug build and no thresholds, so a broken harness fails here; its report goes to a
# temporary file and BENCHMARKS.md is left alone.
log "benchmark harness smoke run"
BENCH_MYSQL_URL="$DATABASE_URL" BENCH_REDIS_URL="$TEST_REDIS_URL" scripts/bench.sh --smoke
