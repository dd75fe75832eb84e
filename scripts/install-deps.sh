#!/usr/bin/env bash
# Installs what rekindle's tests need, idempotently: every step checks before it acts, so a warm
# run costs a few seconds. Everything lands outside the clone, under $REKINDLE_CACHE.
#   - Debian: Mesa's lavapipe (wgpu on the CPU), the Fashion-MNIST dataset, DejaVu fonts (plots)
#   - a Python venv with torch 2.9.0 + torchvision 0.24.0 for the PyTorch reference fixtures
#   - LibTorch 2.9.0 for the `tch` backend, taken from that venv's torch wheel (PyPI is the only
#     place we can reach; the libtorch zip on pytorch.org is not), minus its CUDA libraries
# Prints `export` lines for the caller (xtask) on the last lines of stdout.
# `--system-only` stops after the Debian packages: what `cargo xtask train` needs.
set -euo pipefail

CACHE=${REKINDLE_CACHE:-$HOME/.cache/rekindle}
mkdir -p "$CACHE"
log() { echo "[install] $*" >&2; }

# --- 1. Debian packages -------------------------------------------------------------------
apt_pkgs=(mesa-vulkan-drivers libvulkan1 dataset-fashion-mnist fonts-dejavu-core)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -q >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

[ "${1:-}" = "--system-only" ] && exit 0

# --- 2. Python venv for reference fixtures ------------------------------------------------
VENV=$CACHE/venv
PY_STAMP=$VENV/.rekindle-packages
PY_PKGS=(torch==2.9.0 torchvision==0.24.0 safetensors==0.6.2 numpy==2.2.6 packaging==25.0
         transformers==4.57.6 onnx==1.19.1 onnxscript==0.5.4)
# The stamp lists what was installed: a changed list re-runs pip (which skips what it has).
if [ "$(cat "$PY_STAMP" 2>/dev/null)" != "$(printf '%s\n' "${PY_PKGS[@]}")" ]; then
  log "setting up the Python venv at $VENV (torch 2.9.0: a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PKGS[@]}" >&2
  printf '%s\n' "${PY_PKGS[@]}" > "$PY_STAMP"
fi

# --- 3. LibTorch for burn-tch -------------------------------------------------------------
# torch-sys 0.22 wants torch 2.9.0. The wheel's torch/ folder is a complete LibTorch (lib/ and
# include/). Hard links keep it free on disk; the CUDA libraries are left out so that burn-tch
# links the CPU build (libtorch_cpu still finds cudart/cupti through ../nvidia, kept beside it).
LT=$CACHE/libtorch-2.9.0
if [ ! -f "$LT/.rekindle-v1" ]; then
  log "laying out LibTorch at $LT"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$LT"; mkdir -p "$LT/nvidia"
  link() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }  # copies across filesystems
  link "$site/torch" "$LT/torch"
  for d in cuda_runtime cuda_cupti; do link "$site/nvidia/$d" "$LT/nvidia/$d"; done
  for f in libtorch_cuda.so libtorch_cuda_linalg.so libc10_cuda.so libtorch_nvshmem.so libcaffe2_nvrtc.so; do
    rm -f "$LT/torch/lib/$f"
  done
  touch "$LT/.rekindle-v1"
fi

echo "export REKINDLE_PYTHON=$VENV/bin/python"
echo "export LIBTORCH=$LT/torch"
