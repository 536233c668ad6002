#!/usr/bin/env bash
# Installs promring into ./.venv (plain, non-editable install) and runs `promring up`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q .
exec .venv/bin/promring up "$@"
