#!/usr/bin/env bash
# Load test of `rekindle-infer serve` on 127.0.0.1 with wrk (Debian's package): throughput and
# p50/p99 latency at several concurrency levels, errors, and the server's memory over the run.
#
#   scripts/load-test.sh [MODEL] [IMAGE]
#   env: DURATION=20 (seconds per level), LEVELS="1 8 32", BACKEND=flex, MAX_BATCH=16,
#        MAX_WAIT_MS=5
#
# MODEL defaults to the demo's fine-tuned model (`cargo xtask train` makes it); IMAGE to a
# generated 96x96 PNG. Only 127.0.0.1 is contacted; every level is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/demo/transfer/model.bpk}
IMAGE=${2:-}
DURATION=${DURATION:-20}
LEVELS=${LEVELS:-"1 8 32"}
BACKEND=${BACKEND:-flex}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rekindle/target}
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

[ -f "$MODEL" ] || { echo "no model file $MODEL: run \`cargo xtask train\` first, or name one" >&2; exit 2; }
if ! command -v wrk >/dev/null; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2
fi
if [ -z "$IMAGE" ]; then
  IMAGE=$work/image.png
  python3 - "$IMAGE" <<'PY'
import struct, sys, zlib
w = h = 96
rows = b"".join(b"\0" + bytes(((x * 7 + y * 3) % 256, (x * y) % 256, (255 - x - y) % 256)[c]
                               for x in range(w) for c in range(3)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
fi
ctype=image/png; case "$IMAGE" in *.jpg|*.jpeg|*.JPG|*.JPEG) ctype=image/jpeg ;; esac

cargo build -q --release -p rekindle-infer --no-default-features --features "rekindle-infer/$BACKEND"
bin=$CARGO_TARGET_DIR/release/rekindle-infer
"$bin" serve --model "$MODEL" --backend "$BACKEND" --addr 127.0.0.1:0 \
  --max-batch "${MAX_BATCH:-16}" --max-wait-ms "${MAX_WAIT_MS:-5}" \
  >"$work/stdout" 2>"$work/server.log" &
server=$!
for _ in $(seq 300); do grep -q "listening on" "$work/stdout" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/stdout")
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
case "$url" in http://127.0.0.1:*) ;; *) echo "refusing to load-test $url" >&2; exit 1 ;; esac

cat >"$work/post.lua" <<LUA
local f = assert(io.open("$IMAGE", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "$ctype"
LUA

rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status"; }
# Warm up (first batches allocate), then measure.
timeout 60 wrk -t1 -c4 -d3s -s "$work/post.lua" "$url/v1/predict" >/dev/null
rss_start=$(rss)
echo "model $MODEL on $BACKEND, image $IMAGE ($(stat -c %s "$IMAGE") bytes), ${DURATION}s per level, $(nproc) cores"
printf '%-11s %10s %10s %10s %8s %14s\n' concurrency "req/s" "p50 ms" "p99 ms" errors "server MiB"
failed=0
for c in $LEVELS; do
  t=$(( c < 2 ? 1 : 2 ))
  peak=0
  ( while sleep 1; do rss; done ) >"$work/rss-$c" 2>/dev/null &
  sampler=$!
  timeout $((DURATION + 30)) wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 30s --latency \
    -s "$work/post.lua" "$url/v1/predict" >"$work/wrk-$c"
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$work/rss-$c" | tail -1)
  ms() { awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.1f", v }' "$work/wrk-$c"; }
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk-$c")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$c"); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk-$c"); sock=${sock:-0}
  errors=$((non2xx + sock))
  [ "$errors" = 0 ] || failed=1
  printf '%-11s %10s %10s %10s %8s %14s\n' "$c" "$rps" "$(ms 50%)" "$(ms 99%)" "$errors" "${peak:-?}"
done
rss_end=$(rss)
curl -s "$url/v1/model" | python3 -c 'import json, sys
b = json.load(sys.stdin)["batching"]
print("batches %d, images %d (mean batch %.1f), largest batch %d"
      % (b["batches"], b["images"], b["images"] / max(b["batches"], 1), b["largest_batch"]))' || true
echo "server memory: ${rss_start} MiB after warm-up, ${rss_end} MiB at the end"
if [ "$failed" != 0 ]; then echo "errors during the load test; server log: $work/server.log" >&2; tail -5 "$work/server.log" >&2; exit 1; fi
