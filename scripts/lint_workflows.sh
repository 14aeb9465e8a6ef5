#!/usr/bin/env bash
# The GitHub workflows and the Dependabot config, with the venv's pinned tools, offline:
#   1. GitHub's published schemas (check-jsonschema: workflows, dependabot.yml);
#   2. actionlint on every workflow, with the pinned shellcheck on every `run:` script (the
#      same shellcheck wherever it runs, rather than whichever one is on PATH);
#   3. zizmor's security audit (unpinned or tag-pinned actions, token scopes, credentials
#      left in .git, template injection, Dependabot settings, ...) at its default persona and
#      every severity: any finding fails. Online audits are off (no network, no token).
# A suppression, if ever needed, is a `# zizmor: ignore[rule]` comment on the flagged line
# with a one-line reason on the line above it; there are none today.
#
#   scripts/lint_workflows.sh [DIR]   lints DIR/.github (default: this repository's)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_venv
cd "${1:-$ROOT}"

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if [ "${#workflows[@]}" -eq 0 ]; then
    echo "FAIL: no workflow under .github/workflows" >&2
    exit 1
fi

# Every tool runs even when an earlier one failed, so one run shows every finding.
failed=()
run() {
    local name=$1
    shift
    log "workflows: $name"
    "$@" || failed+=("$name")
}

run "schema (GitHub workflows)" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
run "schema (Dependabot)" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml
run "actionlint (with shellcheck)" \
    "$VENV/bin/actionlint" -shellcheck "$VENV/bin/shellcheck" -pyflakes= "${workflows[@]}"
run "zizmor (offline)" \
    "$VENV/bin/zizmor" --offline --no-progress --strict-collection --persona regular .github

if [ "${#failed[@]}" -gt 0 ]; then
    printf 'FAIL: workflow lint: %s\n' "${failed[@]}" >&2
    exit 1
fi
