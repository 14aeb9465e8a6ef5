#!/usr/bin/env bash
# The benchmark, separate from the tests: builds every function binary and the harness
# (bench/), measures them on this machine against the real MariaDB and Redis, and rewrites
# BENCHMARKS.md: binary sizes, init time, warm latency against the raw SQL, database round
# trips, peak memory and a bounded concurrent load, each beside DESIGN's target; then the read
# endpoints on 1,000,000 rooms beside 1,000 (with EXPLAIN of their SQL) and the ring-out lag of
# the local main job's sweeper (issue 10); warm requests with the EMF metrics on and off
# (--only metrics runs just that phase).
#   scripts/bench.sh            full run: arm64 cross build and native release build of every
#                               function, then about a minute of measuring
#   scripts/bench.sh --smoke    every phase with tiny counts on a debug build of the seven
#                               functions it drives, no thresholds; report to $BENCH_OUT or a
#                               temporary file, BENCHMARKS.md untouched (scripts/test.sh runs it)
# Extra arguments go to the harness (e.g. --rounds 100 --workers 4, --only scale,ringout,
# --scale-reuse to keep the 1,000,000-room database of an earlier run; see bench/src/main.rs).
# Needs MariaDB on 127.0.0.1:3306 (root, no password; the run recreates its own databases:
# call_bench, call_bench_scale, call_bench_small, call_bench_ringout, or the same with _smoke;
# loading the 1,000,000 rooms takes a few minutes) and Redis on 127.0.0.1:6379; BENCH_MYSQL_URL
# (server without a database) and BENCH_REDIS_URL point elsewhere. Everything runs on
# 127.0.0.1. The ring-out phase starts scripts/dev.sh on MariaDB, which builds the workspace in
# debug (its own build) before it serves.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

mode=full
if [ "${1:-}" = "--smoke" ]; then
    mode=smoke
    shift
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Like scripts/test.sh: start a service that is installed but not running, else fail.
if ! port_open 3306 && [ -z "${BENCH_MYSQL_URL:-}" ] && [ -x /usr/sbin/mariadbd ]; then
    log "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
if ! port_open 6379 && [ -z "${BENCH_REDIS_URL:-}" ] && command -v redis-server >/dev/null; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for port in 3306 6379; do
    for _ in $(seq 1 60); do port_open "$port" && break; sleep 0.5; done
done

# Every function package (as a per-function deploy builds it); the smoke run needs only the
# five its warm, round-trip and load phases drive, the three reads of the scale phase and the
# event sweeper of the events phase.
names=()
if [ "$mode" = smoke ]; then
    names=(create-room get-room join-room list-rooms leave-room user-calls user-ringing deliver-events list-events get-event redeliver-event)
else
    for manifest in functions/*/Cargo.toml; do
        names+=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1)")
    done
fi
packages=()
for name in "${names[@]}"; do packages+=(-p "$name"); done

if [ "$mode" = smoke ]; then
    profile=(); bin_dir=target/debug
    out="${BENCH_OUT:-$(mktemp "${TMPDIR:-/tmp}/BENCHMARKS.smoke.XXXXXX.md")}"
    extra=(--smoke --out "$out"); command="scripts/bench.sh --smoke"
else
    profile=(--release); bin_dir=target/release
    extra=(); command="scripts/bench.sh"
fi

# The size target is on the deployed arm64 binaries: the full run cross-builds them (zig,
# through the venv's cargo-lambda) so the report never judges a stale one.
if [ "$mode" = full ]; then
    log "cross-building ${#names[@]} arm64 packages (cargo lambda build --release --arm64)"
    ensure_venv
    ensure_arm64_target
    "$VENV/bin/cargo-lambda" lambda build --release --arm64 "${packages[@]}"
fi

log "building ${#names[@]} functions (${profile[*]:-debug})"
started=$(date +%s%N)
cargo build --quiet "${profile[@]}" "${packages[@]}"
build_ms=$(( ($(date +%s%N) - started) / 1000000 ))
build_secs=$(printf '%d.%03d' $((build_ms / 1000)) $((build_ms % 1000)))
log "built in $build_secs s; building the harness"
cargo build --quiet "${profile[@]}" -p bench

# Measure private hard links of what was just built: another build in this tree (the local
# main job's SQLite feature set, say) may replace target/*/<name> while the benchmark runs.
run_dir="target/bench/bin-$mode"
rm -rf "$run_dir"
mkdir -p "$run_dir"
for name in "${names[@]}" bench; do
    ln -f "$bin_dir/$name" "$run_dir/$name" 2>/dev/null || cp "$bin_dir/$name" "$run_dir/$name"
done

"$run_dir/bench" "${extra[@]}" --bin-dir "$run_dir" --build-secs "$build_secs" \
    --command "$command" "$@"
