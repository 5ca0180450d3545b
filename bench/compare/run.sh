#!/usr/bin/env bash
# Side by side: the same generated customers through segment-sync (CLI and
# library), @segment/analytics-node, segment-analytics-python and the
# `segment` crate, each posting to the project's receiver, clean and with
# faults (20% HTTP 500, 5% HTTP 429 with Retry-After: 1, 50 ms latency).
#
# Usage: bench/compare/run.sh [ROWS]   (default 100000)
#
# Installs the peers into this folder (node/node_modules, python/venv,
# segment-crate/target; all git-ignored), builds the Rust drivers in release
# mode, and prints one markdown table per profile: wall time, CPU
# (user + system), peak RSS (from /usr/bin/time), events delivered (unique
# messageIds the receiver accepted; events without a messageId are counted
# as accepted), duplicates, and requests over Segment's limits (a body over
# 500,000 bytes or a batch over 2,500 events, among the last 10,000 requests
# the receiver keeps), and what the driver itself counted (events the library
# dropped or reported failed). It is a benchmark, not a test.
set -euo pipefail

ROWS="${1:-100000}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"
TIMEOUT="${COMPARE_TIMEOUT:-900}"
NODE_VERSION_PIN="3.1.0"
PYTHON_VERSION_PIN="2.4.0"
export SEGMENT_WRITE_KEY="compare-write-key"
mkdir -p "$OUT"

log() { echo "== $*" >&2; }

# ---- peers and drivers ----
log "building segment-sync and the library driver (release)"
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p segment-sync \
  --bin segment-sync --example compare-library
BIN="$ROOT/target/release/segment-sync"
LIBRARY="$ROOT/target/release/examples/compare-library"

log "building the segment crate driver (release)"
cargo build --quiet --release --manifest-path "$HERE/segment-crate/Cargo.toml"
SEGMENT_CRATE="$HERE/segment-crate/target/release/compare-segment-crate"

if [ ! -d "$HERE/node/node_modules/@segment/analytics-node" ]; then
  log "installing @segment/analytics-node@$NODE_VERSION_PIN"
  (cd "$HERE/node" && npm install --no-audit --no-fund --save-exact \
    "@segment/analytics-node@$NODE_VERSION_PIN" >&2)
fi
if [ ! -x "$HERE/python/venv/bin/python" ]; then
  log "installing segment-analytics-python==$PYTHON_VERSION_PIN"
  python3 -m venv "$HERE/python/venv"
  "$HERE/python/venv/bin/pip" install --quiet "segment-analytics-python==$PYTHON_VERSION_PIN"
fi

INPUT="$OUT/customers-$ROWS.ndjson"
if [ ! -f "$INPUT" ]; then
  log "generating $ROWS customers"
  "$LIBRARY" generate "$ROWS" "$INPUT"
fi

# ---- the receiver ----
RECEIVER_PID=""
stop_receiver() {
  if [ -n "$RECEIVER_PID" ]; then
    kill "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
  fi
}
trap stop_receiver EXIT
coproc RECEIVER { exec "$BIN" receive --port 0 --counts-only 2>/dev/null; }
RECEIVER_PID=$RECEIVER_PID
read -r URL <&"${RECEIVER[0]}"
export SEGMENT_HOST="$URL"
log "receiver at $URL"

control() { curl -fsS -X POST -H 'content-type: application/json' --data "${2:-}" "$URL/_receiver/$1" >/dev/null; }
CLEAN='{"rules":[],"latency_ms":0}'
FAULTS='{"rules":[
  {"kind":"fraction","fraction":0.2,"status":500,"seed":11},
  {"kind":"fraction","fraction":0.0625,"status":429,"retry_after":"1","seed":12}
],"latency_ms":50}'

# ---- one client ----
# run NAME COMMAND...: one row of the table.
run() {
  local name="$1"; shift
  local slug; slug="$(printf '%s' "$name" | tr -c 'A-Za-z0-9.' '-')"
  local times="$OUT/$slug.time" stdout="$OUT/$slug.stdout" stderr="$OUT/$slug.stderr"
  rm -f "$times"
  control reset
  control faults "$PROFILE_PLAN"
  local status=0
  timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$times" "$@" >"$stdout" 2>"$stderr" || status=$?
  local stats="$OUT/$slug.stats.json" requests="$OUT/$slug.requests.json"
  curl -fsS "$URL/_receiver/stats" >"$stats"
  curl -fsS "$URL/_receiver/requests" >"$requests"
  python3 - "$name" "$ROWS" "$status" "$times" "$stats" "$requests" "$stdout" <<'PY'
import json, sys
name, rows, status, times, stats, requests, stdout = sys.argv[1:]
said = " ".join(open(stdout).read().split()) or "-"
stats, requests = json.load(open(stats)), json.load(open(requests))
rows = int(rows)
try:
    parts = open(times).read().split()[-4:] if status != "124" else []
except FileNotFoundError:
    parts = []
wall, user, system, rss_kb = (float(p) for p in parts) if len(parts) == 4 else (float("nan"),) * 4
over = sum(1 for r in requests
           if max(r["body_bytes"], r["wire_bytes"]) > 500_000 or r["events"] > 2_500)
unique = stats["unique_message_ids"]
accepted = stats["accepted"]
delivered = f"{unique:,} ({unique / rows:.0%})"
if unique == 0 and accepted:
    delivered = f"{accepted:,} accepted, no messageIds ({accepted / rows:.0%})"
ended = "timed out" if status == "124" else f"exit {status}"
print(f"| {name} | {wall:.1f} s | {user + system:.2f} s | {rss_kb / 1024:.0f} MB "
      f"| {delivered} | {stats['duplicates']:,} | {over} of {stats['requests']:,} | {ended}; {said} |")
PY
}

table() {
  echo
  echo "**$1** ($ROWS customers, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m))"
  echo
  echo "| client | wall | CPU | peak RSS | delivered (unique messageIds) | duplicates | requests over limits | exit; the driver's own count |"
  echo "|---|---|---|---|---|---|---|---|"
  run "segment-sync CLI, --no-state" "$BIN" sync "$INPUT" --quiet --no-state
  local state; state="$(mktemp -d)"
  run "segment-sync CLI, state" "$BIN" sync "$INPUT" --quiet --state "$state" --name compare
  rm -rf "$state"
  run "segment-sync library" "$LIBRARY" send "$INPUT"
  run "@segment/analytics-node $NODE_VERSION_PIN" node "$HERE/node/driver.mjs" "$INPUT"
  run "segment-analytics-python $PYTHON_VERSION_PIN" "$HERE/python/venv/bin/python" "$HERE/python/driver.py" "$INPUT"
  run "segment crate 0.2.6" "$SEGMENT_CRATE" "$INPUT"
}

PROFILE_PLAN="$CLEAN" table "clean"
PROFILE_PLAN="$FAULTS" table "faults: 20% HTTP 500, 5% HTTP 429 with Retry-After: 1, 50 ms latency"
