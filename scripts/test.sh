#!/usr/bin/env bash
# Install mailcarrier with its development tools into .venv and run the whole test suite:
# ruff, mypy --strict, the import contracts of pyproject.toml (layers, a domain without I/O),
# pytest (SQLite always; PostgreSQL when MAILCARRIER_TEST_PG_URL's server answers, otherwise
# those tests are reported as skipped with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
export MAILCARRIER_TEST_PG_URL="${MAILCARRIER_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
echo "== ruff"; .venv/bin/ruff check src tests $( [ -d bench ] && echo bench )
echo "== mypy --strict"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports --no-cache
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
