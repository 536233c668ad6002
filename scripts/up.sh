#!/usr/bin/env bash
# Installs promring into ./.venv (plain, non-editable install; scripts/venv.sh picks the
# interpreter) and runs `promring up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh .
exec .venv/bin/promring up "$@"
