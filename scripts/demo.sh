#!/usr/bin/env bash
# Install mailcarrier into .venv and run the main job on the embedded default (SQLite, offline):
# start the sandbox MX, import the sample audience, send a mailing through it, and print
# its response figures (sent / delivered / bounced by category / in progress / suppressed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e . >/dev/null
DEMO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mailcarrier-demo-XXXXXX")"
env -u MAILCARRIER_DATABASE_URL -u MAILCARRIER_STATIC_ROUTES .venv/bin/mailcarrier demo --data-dir "$DEMO_DIR"
echo "== classification of the sample replies shipped in src/mailcarrier/samples/replies.txt"
while IFS='|' read -r stage reply; do
    [ -z "$stage" ] && continue
    echo "== [$stage] $reply"
    .venv/bin/mailcarrier classify --stage "$stage" --format json "$reply"
done < src/mailcarrier/samples/replies.txt
echo "== bounce emails shipped in src/mailcarrier/samples/bounces"
.venv/bin/mailcarrier bounce parse --format jsonl src/mailcarrier/samples/bounces
