#!/usr/bin/env bash
# The Debian packages rekindle needs, installed only when missing (a warm run is a few dpkg
# queries): Mesa's lavapipe (wgpu on the CPU), the Fashion-MNIST dataset (the demo), DejaVu
# fonts (plot labels) and PostgreSQL's server (the tune crate's test starts a throwaway
# cluster). Debian's stable archive is pinned by its release: a point release brings
# only fixes, and older package versions leave the mirror, so versions are not pinned here.
# The Python venv and LibTorch are xtask's job (xtask/src/venv.rs, xtask/src/libtorch.rs).
set -euo pipefail

pkgs=(mesa-vulkan-drivers libvulkan1 dataset-fashion-mnist fonts-dejavu-core postgresql)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "[install] apt-get install ${missing[*]}" >&2
$sudo apt-get update -q >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
