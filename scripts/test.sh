#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then pytest, cocotb on both simulators included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
