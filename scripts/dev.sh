#!/usr/bin/env bash
# The local main job: every route at http://127.0.0.1:8080, one process per function through
# `cargo lambda watch` and the router in Cargo.toml, the way Lambda runs them in AWS, plus the
# sweeper on a schedule of its own (as EventBridge invokes it in AWS).
#
#   scripts/dev.sh            the embedded SQLite database .local/call.db (kept between runs)
#   scripts/dev.sh --reset    start from an empty database
#   DATABASE_URL=mysql://root@127.0.0.1:3306/call scripts/dev.sh
#                             the same functions on MariaDB/MySQL: the database is created when
#                             it is missing and migrated; --reset empties it (loopback only)
#
# Environment: PORT (8080), HOST (127.0.0.1; 0.0.0.0 or :: to serve other machines, with the
# development secrets: do not), DATABASE_URL (default: SQLite), REDIS_URL (unset: no cache),
# SWEEP_INTERVAL_SECONDS (1; 0 turns both sweepers off), EVENT_ENDPOINTS (where business
# events are delivered: README "Business events"), LAMBDA_CONCURRENCY (instances per
# function, 1), DEV_NO_RELOAD=1 (do not rebuild when the sources change), plus every setting
# of the README's configuration table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

PORT="${PORT:-8080}"
HOST="${HOST:-127.0.0.1}"
SWEEP_INTERVAL_SECONDS="${SWEEP_INTERVAL_SECONDS:-1}"
RESET=()
if [ "${1:-}" = "--reset" ]; then
    RESET=(--reset)
fi

ensure_venv
export APP_ENV=local
export RUST_LOG="${RUST_LOG:-info}"
case "${DATABASE_URL:-}" in
    mysql://* | mariadb://*)
        BACKEND="MariaDB/MySQL"
        export CARGO_TARGET_DIR="$ROOT/target"
        FEATURES=()
        ;;
    "")
        DB_FILE="${LOCAL_DB_FILE:-.local/call.db}"
        mkdir -p "$(dirname "$DB_FILE")"
        export DATABASE_URL="sqlite://$DB_FILE?mode=rwc"
        BACKEND="SQLite ($DB_FILE)"
        # Its own target directory: the SQLite build of every function must not overwrite the
        # MySQL one (a MariaDB job may be running from target/ at the same time).
        export CARGO_TARGET_DIR="$ROOT/target/embedded"
        FEATURES=(--features call-shared/embedded)
        ;;
    *)
        echo "DATABASE_URL must be mysql://… or mariadb://… (unset: the embedded SQLite)" >&2
        exit 2
        ;;
esac
BIN="$CARGO_TARGET_DIR/debug"

# Where business events go (the endpoints' URLs only: their secrets never reach the screen).
if [ -n "${EVENT_ENDPOINTS:-}" ]; then
    EVENTS_TO="delivered to $(printf '%s' "$EVENT_ENDPOINTS" | python3 -c \
        'import json, sys; print(", ".join(e.get("url", "?") for e in json.load(sys.stdin)))' \
        2>/dev/null || echo "EVENT_ENDPOINTS (not valid JSON: the functions will say why)"), and GET /api/events"
else
    EVENTS_TO="GET /api/events only (set EVENT_ENDPOINTS to have them delivered)"
fi

log "building the functions ($BACKEND)"
# Exactly what `cargo lambda watch` runs (no dev-dependencies), so it finds everything built.
cargo build --quiet --workspace --bins "${FEATURES[@]}"
log "preparing the database"
"$BIN/migrate" "${RESET[@]}"
eval "$("$BIN/dev_tokens" user_002)"

cat <<MSG

Call service: http://$HOST:$PORT   (health: curl http://127.0.0.1:$PORT/health)
API docs: http://127.0.0.1:$PORT/api/docs   (OpenAPI 3.1: http://127.0.0.1:$PORT/api/openapi.json)
Console:  http://127.0.0.1:$PORT/console    (paste the service token below)
Database: $BACKEND   Redis: ${REDIS_URL:-off}   Sweepers: every ${SWEEP_INTERVAL_SECONDS}s
Business events: $EVENTS_TO

Service token (acts for any uid):
  export TOKEN=$SERVICE_TOKEN
User token for $USER_UID:
  export USER_TOKEN=$USER_TOKEN

Try:
  curl -s -X POST http://127.0.0.1:$PORT/api/rooms -H "Authorization: Bearer \$TOKEN" \\
    -d '{"source_channel_id":"channel_123","source_channel_type":0,"creator":"user_001","room_name":"meeting_001","call_type":1,"invite_on":1,"uids":["user_002"]}'
  curl -s -X POST http://127.0.0.1:$PORT/api/participants/join -H "Authorization: Bearer \$USER_TOKEN" \\
    -d '{"room_name":"meeting_001","uid":"user_002"}'

MSG

WATCH=(--invoke-address "$HOST" --invoke-port "$PORT" --concurrency "${LAMBDA_CONCURRENCY:-1}")
if [ "${DEV_NO_RELOAD:-}" = "1" ]; then
    WATCH+=(--ignore-changes)
fi
log "serving on http://$HOST:$PORT (Ctrl-C stops)"
cargo lambda watch "${WATCH[@]}" "${FEATURES[@]}" &
WATCH_PID=$!
SWEEP_PID=
trap 'kill $SWEEP_PID $WATCH_PID 2>/dev/null || true; wait' EXIT INT TERM

# The sweepers, invoked through the Lambda invoke API like EventBridge's schedules invoke them
# in AWS, each on a loop of its own (a slow event endpoint never delays a ring-out): one
# long-lived ring-timeout process and one deliver-events process, each with its connection.
if [ "$SWEEP_INTERVAL_SECONDS" != "0" ]; then
    invoke_host="$HOST"
    case "$HOST" in 0.0.0.0 | :: | "[::]") invoke_host=127.0.0.1 ;; esac
    case "$invoke_host" in *:*) invoke_host="[$invoke_host]" ;; esac
    schedule() {
        while sleep "$SWEEP_INTERVAL_SECONDS"; do
            curl -s -o /dev/null --max-time 60 -X POST -d '{}' \
                "http://$invoke_host:$PORT/2015-03-31/functions/$1/invocations" || true
        done
    }
    schedule ring-timeout &
    SWEEP_PID=$!
    schedule deliver-events &
    SWEEP_PID="$SWEEP_PID $!"
fi
wait "$WATCH_PID"
