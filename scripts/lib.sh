# Shared by the scripts: a project-local Python venv with pinned tools, nothing global.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

ensure_venv() {
    local stamp="$VENV/.requirements"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if ! cmp -s "$ROOT/requirements-dev.txt" "$stamp"; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
        cp "$ROOT/requirements-dev.txt" "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# The Rust standard library for arm64 Lambda builds (cargo lambda build --arm64 links with zig).
ensure_arm64_target() {
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
        rustup target add aarch64-unknown-linux-gnu
    fi
}

# Each step says when it starts (seconds since the script began), so a slow run shows where.
log() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$SECONDS" "$*" >&2; }
