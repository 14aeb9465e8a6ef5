#!/usr/bin/env bash
# The local main job: every seed path at http://127.0.0.1:8080 on the embedded SQLite
# database, through `cargo lambda watch` and the router in Cargo.toml.
#   scripts/dev.sh           serve (keeps the database between runs)
#   scripts/dev.sh --reset   start from an empty database
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

PORT="${PORT:-8080}"
DB_FILE="${LOCAL_DB_FILE:-.local/call.db}"
if [ "${1:-}" = "--reset" ]; then
    rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm"
fi

ensure_venv
mkdir -p "$(dirname "$DB_FILE")"
export APP_ENV=local
export DATABASE_URL="sqlite://$DB_FILE?mode=rwc"
export RUST_LOG="${RUST_LOG:-info}"

log "building the functions (embedded database)"
cargo build --quiet --workspace --bins --examples --features call-shared/embedded
log "migrating $DB_FILE"
./target/debug/migrate
eval "$(./target/debug/examples/dev_tokens user_002)"

cat <<MSG

Call service: http://127.0.0.1:$PORT   (health: curl http://127.0.0.1:$PORT/health)

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
log "serving on http://127.0.0.1:$PORT (Ctrl-C stops)"
exec cargo lambda watch --invoke-port "$PORT" --features call-shared/embedded
