#!/usr/bin/env bash
# Starts the recorder farm on this machine: the orchestrator with a warm pool of local recorder workers,
# SQLite and records/ storage (S3 when S3_BUCKET is set).
#
#   scripts/start.sh              run the farm until Ctrl-C, printing how to call it
#   scripts/start.sh URL          record URL, wait for it, print where rec.mp4 is, stop the farm
#   scripts/start.sh demo         the same with the built-in offline demo page
#
# Settings come from the environment (see README.md); unset tokens are generated and printed.
# DURATION (seconds, default 10) bounds a recording made with a URL argument.
set -euo pipefail
cd "$(dirname "$0")/.."

# The farm runs on its embedded store: the PostgreSQL server the tests start is not needed to run it.
INSTALL_TEST_SERVERS=0 scripts/install-system-deps.sh
# shellcheck disable=SC1091
source scripts/venv.sh

new_token() { python -c 'import secrets; print(secrets.token_urlsafe(24))'; }

export ORCHESTRATOR_HOST="${ORCHESTRATOR_HOST:-127.0.0.1}"
export ORCHESTRATOR_PORT="${ORCHESTRATOR_PORT:-8080}"
export RECORDS_DIR="${RECORDS_DIR:-$PWD/records}"
# The store lives outside RECORDS_DIR; a store an older version left in RECORDS_DIR is moved here at start.
export ORCHESTRATOR_STATE_DIR="${ORCHESTRATOR_STATE_DIR:-$PWD/state}"
export POOL_BACKEND="${POOL_BACKEND:-local}"
export POOL_SPARE="${POOL_SPARE:-1}"
if [ "$POOL_SPARE" -lt 1 ]; then
  echo "start.sh: POOL_SPARE=$POOL_SPARE: the local farm keeps at least one warm worker; using 1" >&2
  export POOL_SPARE=1
fi
generated=()
if [ -z "${API_TOKENS:-}" ]; then export API_TOKENS; API_TOKENS="$(new_token)"; generated+=(API_TOKENS); fi
if [ -z "${WORKER_TOKEN:-}" ]; then export WORKER_TOKEN; WORKER_TOKEN="$(new_token)"; generated+=(WORKER_TOKEN); fi
if [ -z "${ORCHESTRATOR_WEBHOOK_SECRET:-}" ]; then
  export ORCHESTRATOR_WEBHOOK_SECRET; ORCHESTRATOR_WEBHOOK_SECRET="$(new_token)"; generated+=(ORCHESTRATOR_WEBHOOK_SECRET)
fi
# Recordings, worker logs (which hold the URLs) and the store are the farm's alone: the unprivileged user
# Chromium runs as may not read them.
mkdir -p -m 0700 "$RECORDS_DIR"

host="$ORCHESTRATOR_HOST"
case "$host" in 0.0.0.0 | "::") host=127.0.0.1 ;; esac
BASE="http://$host:$ORCHESTRATOR_PORT"
# Recorded pages may reach the orchestrator's own port (for the demo page), and nothing else that is not public:
# opening all of 127.0.0.1 would open every loopback service on this machine to every recorded page.
export URL_ALLOWLIST="${URL_ALLOWLIST:-$host:$ORCHESTRATOR_PORT}"
first_token="${API_TOKENS%%,*}"
TOKEN="${first_token#*:}"  # entries may be name:token

if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('$host', $ORCHESTRATOR_PORT)) != 0)"; then
  echo "start.sh: something already listens on $host:$ORCHESTRATOR_PORT; set ORCHESTRATOR_PORT to a free port" >&2
  exit 1
fi

LOG="$RECORDS_DIR/orchestrator.log"
orchestrator serve >>"$LOG" 2>&1 &
ORCH_PID=$!

# Stop the farm whatever happens: SIGTERM lets the orchestrator drain and stop its workers; SIGKILL if it
# hangs, and then the workers it left (their pids are in RECORDS_DIR/.pool) are stopped here.
stop_farm() {
  trap - EXIT
  # A second Ctrl-C tells the orchestrator to skip waiting for running recordings.
  trap 'kill -TERM "$ORCH_PID" 2>/dev/null || true' INT TERM
  if kill -0 "$ORCH_PID" 2>/dev/null; then
    echo "start.sh: stopping the farm (a running recording is stopped, stored and reported first)"
    kill -TERM "$ORCH_PID" 2>/dev/null || true
    for _ in $(seq 1 1800); do kill -0 "$ORCH_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ORCH_PID" 2>/dev/null || true
  fi
  wait "$ORCH_PID" 2>/dev/null || true
  for state in "$RECORDS_DIR"/.pool/*.json; do
    [ -e "$state" ] || continue
    pid="$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$state" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$state"
  done
}
trap stop_farm EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq 1 300); do
  if ! kill -0 "$ORCH_PID" 2>/dev/null; then
    echo "start.sh: the orchestrator exited; its log ($LOG) ends with:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  if python -c "import urllib.request,sys; urllib.request.urlopen('$BASE/readyz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.2
done

cat <<EOF

Recorder farm running at $BASE   (log: $LOG, recordings: $RECORDS_DIR)
EOF
for name in "${generated[@]}"; do echo "  generated $name=${!name}"; done
cat <<EOF

Record a page (here the built-in offline demo) for 10 seconds:

  curl -s -X POST $BASE/v1/recordings \\
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
    -d '{"url": "$BASE/demo/", "max_duration": 10}'

Then follow it (and fetch rec.mp4 from /media once it is completed):

  curl -s $BASE/v1/recordings/<id> -H "Authorization: Bearer $TOKEN"
  curl -s -L -o rec.mp4 $BASE/v1/recordings/<id>/media -H "Authorization: Bearer $TOKEN"

The pool: curl -s $BASE/v1/pool -H "Authorization: Bearer $TOKEN"
EOF

if [ $# -eq 0 ]; then
  echo
  echo "Ctrl-C stops the farm."
  wait "$ORCH_PID"
  exit $?
fi

url="$1"
if [ "$url" = "demo" ]; then url="$BASE/demo/"; fi
echo
echo "Recording $url for up to ${DURATION:-10} s ..."
python - "$BASE" "$TOKEN" "$url" "${DURATION:-10}" <<'PY'
import json
import sys
import time
import urllib.request

base, token, url, duration = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        sys.exit(f"start.sh: {method} {path}: {exc.code} {exc.read().decode(errors='replace')}")


rec = call("POST", "/v1/recordings", {"url": url, "max_duration": duration})
print(f"  {rec['id']}: {rec['status']}")
last = rec["status"]
deadline = time.monotonic() + duration + 600
while rec["status"] not in ("completed", "failed", "cancelled"):
    if time.monotonic() > deadline:
        sys.exit(f"start.sh: {rec['id']} is still {rec['status']}; giving up waiting")
    time.sleep(0.5)
    rec = call("GET", f"/v1/recordings/{rec['id']}")
    if rec["status"] != last:
        last = rec["status"]
        print(f"  {rec['id']}: {last}")
if rec["status"] != "completed":
    error = rec.get("error") or {}
    sys.exit(f"start.sh: recording {rec['status']}: {error.get('code')}: {error.get('message')}")
location = rec["location"]
print()
print("rec.mp4 is at:", location.removeprefix("file://") if location.startswith("file://") else location)
if rec.get("metadata_location"):
    print("rec.json (metadata and quality report):", rec["metadata_location"].removeprefix("file://"))
quality = rec.get("quality") or {}
summary = {k: quality[k] for k in ("duration", "fps", "delivered_fps", "av_offset_ms") if k in quality}
if summary:
    print("quality:", json.dumps(summary))
PY
