#!/usr/bin/env bash
# Installs the Debian packages named as arguments, only those missing (a warm run is a few dpkg
# queries). xtask names them: each backend's from the one list (rekindle-backends: Mesa's
# lavapipe for wgpu), the demo's (Fashion-MNIST, DejaVu fonts for plot labels), and the tests'
# (PostgreSQL's server for the tune crate's throwaway cluster). Debian's stable archive is
# pinned by its release: a point release brings only fixes, and older package versions leave
# the mirror, so versions are not pinned here.
set -euo pipefail

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "[install] apt-get install ${missing[*]}" >&2
$sudo apt-get update -q >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
