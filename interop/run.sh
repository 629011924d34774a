#!/usr/bin/env bash
# Interop suite: drives the real wschaos binary with independent peers
# (Python's websockets library, node's ws package, hand-written raw frames).
#
# Usage: bash interop/run.sh
# Environment:
#   WSCHAOS_BIN     use this binary instead of building ./cmd/wschaos
#   INTEROP_PYTHON  python interpreter with websockets (default /usr/bin/python3)
#   INTEROP_FILTER  run only tests whose name contains this string
#   INTEROP_CHROMIUM  the browser for the chromium suite (default /usr/bin/chromium)
#   INTEROP_LOOPS   every proxy the suites start runs with --loops N: plain
#                   sessions on N event loops; default 0, every session on
#                   goroutines (the proxy's own default is a loop per CPU)
#   CI=true         a missing peer is a failure instead of a skip
# The last line printed is "N passed, N failed"; the exit code is non-zero
# when anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${INTEROP_PYTHON:-/usr/bin/python3}"
CHROMIUM="${INTEROP_CHROMIUM:-/usr/bin/chromium}"
CI="${CI:-}"
SUITE_TIMEOUT=120   # hard stop per suite, seconds
SUITE_BUDGET=80     # seconds a suite may spend on tests before failing the rest

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wschaos-interop.XXXXXX")"
export INTEROP_LOG_DIR="$WORK/logs"
mkdir -p "$INTEROP_LOG_DIR"
PGID_FILE="$WORK/suite.pgid"
TOTAL_PASSED=0
TOTAL_FAILED=0
KEEP_LOGS=0

cleanup() {
  local rc=$?
  if [[ -s "$PGID_FILE" ]]; then
    local pgid
    pgid="$(cat "$PGID_FILE")"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    sleep 0.5
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  if [[ "$KEEP_LOGS" == 1 ]]; then
    rm -f "$WORK/wschaos"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

missing() {
  # missing LABEL MESSAGE: a fail under CI, a skip otherwise.
  if [[ "$CI" == "true" ]]; then
    echo "FAIL $1: $2"
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
  else
    echo "SKIP $1: $2"
  fi
}

# run_suite LABEL CMD...: runs one suite in its own process group (so that
# everything it starts can be stopped at once) and adds up its summary line.
run_suite() {
  local label="$1"
  shift
  local out="$INTEROP_LOG_DIR/$label.out"
  echo "=== $label suite"
  : >"$PGID_FILE"
  # In the background so that a signal to this script is handled at once.
  setsid bash -c 'echo $$ >"$0"; exec timeout -k 5 "$1" "${@:2}"' \
    "$PGID_FILE" "$SUITE_TIMEOUT" "$@" </dev/null 2>&1 | tee "$out" &
  local rc=0
  wait $! || rc=$?
  if [[ -s "$PGID_FILE" ]]; then
    kill -KILL -- "-$(cat "$PGID_FILE")" 2>/dev/null || true
    : >"$PGID_FILE"
  fi
  local line
  line="$(grep -E "^$label: [0-9]+ passed, [0-9]+ failed" "$out" | tail -n 1 || true)"
  if [[ -z "$line" ]]; then
    echo "FAIL $label suite: ended (exit $rc) without a summary line"
    [[ $rc -eq 124 || $rc -eq 137 ]] && echo "     it was stopped after ${SUITE_TIMEOUT}s"
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    return
  fi
  local p f
  p="$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")"
  f="$(sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")"
  TOTAL_PASSED=$((TOTAL_PASSED + p))
  TOTAL_FAILED=$((TOTAL_FAILED + f))
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    echo "FAIL $label suite: exit $rc despite 0 failures"
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
  fi
}

# --- the binary under test
if [[ -n "${WSCHAOS_BIN:-}" ]]; then
  BIN="$WSCHAOS_BIN"
else
  BIN="$WORK/wschaos"
  echo "=== building ./cmd/wschaos"
  if ! go build -o "$BIN" ./cmd/wschaos; then
    echo "FAIL build: go build ./cmd/wschaos failed"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi
# The suites start "wschaos run ..." themselves: a wrapper adds the flag.
LOOPS="${INTEROP_LOOPS:-0}"
REAL_BIN="$BIN"
BIN="$WORK/wschaos-loops"
printf '#!/bin/sh\nif [ "$1" = run ]; then exec "%s" "$@" --loops %d; fi\nexec "%s" "$@"\n' \
  "$REAL_BIN" "$LOOPS" "$REAL_BIN" > "$BIN"
chmod +x "$BIN"
echo "=== every proxy with --loops $LOOPS"
export WSCHAOS_BIN="$BIN"
export INTEROP_BUDGET="$SUITE_BUDGET"
FILTER_ARGS=()
if [[ -n "${INTEROP_FILTER:-}" ]]; then
  FILTER_ARGS=(--filter "$INTEROP_FILTER")
fi

# --- python websockets as client
if [[ ! -x "$PYTHON" ]]; then
  missing "python suite" "$PYTHON not found"
elif ! "$PYTHON" -c 'import websockets' 2>/dev/null; then
  missing "python suite" "$PYTHON cannot import websockets (apt-get install python3-websockets)"
else
  run_suite python "$PYTHON" -u interop/py/suite.py --bin "$BIN" "${FILTER_ARGS[@]}"
fi

# --- node ws as client
if ! command -v node >/dev/null 2>&1; then
  missing "node suite" "node not found"
elif [[ ! -d interop/node/node_modules/ws ]]; then
  missing "node suite" "interop/node/node_modules/ws missing (npm ci --prefix interop/node)"
else
  run_suite node node interop/node/suite.js --bin "$BIN" "${FILTER_ARGS[@]}"
fi

# --- the rules, with python websockets as client (and wschaos validate)
if [[ ! -x "$PYTHON" ]]; then
  missing "python-rules suite" "$PYTHON not found"
elif ! "$PYTHON" -c 'import websockets' 2>/dev/null; then
  missing "python-rules suite" "$PYTHON cannot import websockets (apt-get install python3-websockets)"
else
  run_suite python-rules "$PYTHON" -u interop/py/rules_suite.py --bin "$BIN" "${FILTER_ARGS[@]}"
fi

# --- the rules, with node ws as client
if ! command -v node >/dev/null 2>&1; then
  missing "node-rules suite" "node not found"
elif [[ ! -d interop/node/node_modules/ws ]]; then
  missing "node-rules suite" "interop/node/node_modules/ws missing (npm ci --prefix interop/node)"
else
  run_suite node-rules node interop/node/rules_suite.js --bin "$BIN" "${FILTER_ARGS[@]}"
fi

# --- the suites with headless Chromium as client: the rules (screenshots
# in artifacts/chromium/) and the admin page (screenshots in artifacts/admin/)
chromium_missing=""
if [[ ! -x "$CHROMIUM" ]]; then
  chromium_missing="$CHROMIUM not found (apt-get install chromium)"
elif ! command -v node >/dev/null 2>&1; then
  chromium_missing="node not found"
elif [[ ! -d interop/node/node_modules/playwright-core ]]; then
  chromium_missing="interop/node/node_modules/playwright-core missing (npm ci --prefix interop/node)"
fi
export INTEROP_CHROMIUM="$CHROMIUM"
for suite in chromium:chromium_suite.js admin-page:admin_page.js; do
  label="${suite%%:*}"
  if [[ -n "$chromium_missing" ]]; then
    missing "$label suite" "$chromium_missing"
  else
    run_suite "$label" node "interop/node/${suite#*:}" --bin "$BIN" "${FILTER_ARGS[@]}"
  fi
done

if [[ $TOTAL_FAILED -ne 0 ]]; then
  KEEP_LOGS=1
  echo "interop logs (proxy and peer output) kept in $INTEROP_LOG_DIR"
fi
echo "${TOTAL_PASSED} passed, ${TOTAL_FAILED} failed"
if [[ $TOTAL_FAILED -ne 0 || $TOTAL_PASSED -eq 0 ]]; then
  exit 1
fi
