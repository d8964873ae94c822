#!/usr/bin/env bash
# The main job on a fresh machine: set-up (idempotent), then `logmac demo` on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/logmac demo "$@"
