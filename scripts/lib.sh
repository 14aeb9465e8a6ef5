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

# Debian's Chromium, for the docs page test (tests/e2e/test_contract.py).
# GitHub's runners already carry Google Chrome, which the test takes as well.
ensure_chromium() {
    if command -v chromium >/dev/null || command -v google-chrome >/dev/null; then
        return
    fi
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 ||
        { "${sudo[@]}" apt-get update -q >/dev/null &&
            "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    command -v chromium >/dev/null || { echo "FAIL: chromium could not be installed" >&2; exit 1; }
}

# Each step says when it starts (seconds since the script began), so a slow run shows where.
log() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$SECONDS" "$*" >&2; }
