#!/usr/bin/env bash
# Soak test of `rekindle-infer serve` on 127.0.0.1: a server this script starts (a small random
# ResNet-18 it writes, a random token, 1 MiB image limit, 2 s header/body timeouts, a queue of
# 16, 48 connections at once) gets SECONDS of mixed traffic from CONCURRENCY clients
# (infer/examples/soak.rs): good, bad (garbage bytes, wrong content type, bad top_k, no or
# wrong token), slow (trickled bodies, stalled bodies, trickled headers) and oversized requests. The server's RSS is sampled every
# second. Writes docs/soak/summary.json and docs/soak/rss.png (or OUT); exits non-zero on any
# 500, any answer a request's kind does not allow, or RSS growth over MAX_RSS_GROWTH_MB after
# the warm-up (a fifth of the run).
#
#   scripts/soak.sh [--seconds N] [--concurrency C]     (defaults: 600 s, 64 clients)
#   env: OUT=docs/soak, BACKEND=flex, MAX_RSS_GROWTH_MB=64, SEED=18, MAX_REQUESTS=5000000
#
# Only 127.0.0.1 is contacted; the run stops by itself after SECONDS (or MAX_REQUESTS).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=600
CONCURRENCY=64
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    *) echo "usage: scripts/soak.sh [--seconds N] [--concurrency C]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-docs/soak}
BACKEND=${BACKEND:-flex}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rekindle/target}
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

features=${FEAT:-"--no-default-features --features rekindle-model/$BACKEND"}
# shellcheck disable=SC2086
cargo build -q --release --workspace $features --bin rekindle-infer --example soak
bin=$CARGO_TARGET_DIR/release
"$bin/examples/soak" --write-model "$work/model.bpk"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token"
chmod 600 "$work/token"

# The token reaches the server through its file, never the command line; logs stay quiet
# (one line per request would be gigabytes over ten minutes).
RUST_LOG=${RUST_LOG:-error} "$bin/rekindle-infer" serve --model "$work/model.bpk" --backend "$BACKEND" \
  --addr 127.0.0.1:0 --token-file "$work/token" --max-image-mb 1 --max-queue 16 --max-batch 16 --max-connections 48 \
  --header-timeout-ms 2000 --body-timeout-ms 2000 --request-timeout-ms 10000 \
  >"$work/stdout" 2>"$work/server.log" &
server=$!
for _ in $(seq 300); do grep -q "listening on" "$work/stdout" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/stdout")
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
case "$url" in http://127.0.0.1:*) ;; *) echo "refusing to soak $url" >&2; exit 1 ;; esac

echo "soak: ${SECONDS_}s at concurrency $CONCURRENCY against $url (pid $server), $(nproc) cores"
status=0
timeout $((SECONDS_ + 120)) "$bin/examples/soak" --addr "${url#http://}" --token-file "$work/token" \
  --pid "$server" --seconds "$SECONDS_" --concurrency "$CONCURRENCY" --out "$OUT" \
  --max-rss-growth-mb "${MAX_RSS_GROWTH_MB:-64}" --seed "${SEED:-18}" \
  --max-requests "${MAX_REQUESTS:-5000000}" >"$work/summary.out" || status=$?
kill -0 "$server" 2>/dev/null || { echo "the server died during the soak:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
python3 - "$OUT/summary.json" <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
l, r = s["good_latency_ms"], s["rss_mib"]
print(f"{s['requests_total']} requests in {s['wall_seconds']:.0f} s ({s['requests_per_second']:.0f}/s), "
      f"status counts {s['status_counts']}")
print(f"500s: {s['status_500']}, 503s from shedding: {s['status_503_shed']}, unexpected: {s['unexpected']}")
print(f"good requests: p50 {l['p50']:.1f} ms, p99 {l['p99']:.1f} ms")
print(f"server RSS MiB: start {r['start']:.0f}, after warm-up {r['after_warmup']:.0f}, end {r['end']:.0f}, "
      f"max {r['max']:.0f} (growth bound {s['rss_growth_bound_mib']} MiB)")
print("refused by the server:", s["server"]["service"]["refused"])
print("ok" if s["ok"] else "FAILED")
PY
if [ "$status" != 0 ]; then echo "soak failed (status $status); server log tail:" >&2; tail -5 "$work/server.log" >&2; fi
exit "$status"
