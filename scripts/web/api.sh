#!/usr/bin/env bash
# Starts or stops the items API for scripts/test-web.sh and for the outage step of
# tests/web/browser_check.py, so both restart it the same way (same port, same database).
#   usage: scripts/web/api.sh start|stop
# Settings come from the environment that test-web.sh exports:
#   WEBTEST_API_BIN      the items-api binary
#   WEBTEST_API_ADDR     127.0.0.1:<port> to bind
#   WEBTEST_API_DB       SQLite file
#   WEBTEST_API_LOG      log file (appended to)
#   WEBTEST_API_PIDFILE  where the running API's pid is kept
set -euo pipefail

: "${WEBTEST_API_BIN:?}" "${WEBTEST_API_ADDR:?}" "${WEBTEST_API_DB:?}" "${WEBTEST_API_LOG:?}" "${WEBTEST_API_PIDFILE:?}"

# True while the process exists and is not a zombie waiting for a parent that never reaps it.
alive() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

start() {
  if [[ -s $WEBTEST_API_PIDFILE ]] && alive "$(cat "$WEBTEST_API_PIDFILE")"; then
    echo "api.sh: the API is already running (pid $(cat "$WEBTEST_API_PIDFILE"))" >&2
    return 1
  fi
  # STATIC_DIR stays unset: through nginx the page must come from nginx, not from the API.
  env -u STATIC_DIR \
    BIND_ADDR="$WEBTEST_API_ADDR" DB_PATH="$WEBTEST_API_DB" \
    APP_ENV=development LOG_FORMAT=json RUST_LOG=info \
    "$WEBTEST_API_BIN" </dev/null >>"$WEBTEST_API_LOG" 2>&1 &
  local pid=$!
  echo "$pid" >"$WEBTEST_API_PIDFILE"
  local deadline=$((SECONDS + 30))
  until curl -fsS --max-time 2 -o /dev/null "http://$WEBTEST_API_ADDR/api/healthz" 2>/dev/null; do
    if ! alive "$pid"; then
      echo "api.sh: the API exited during start-up; last log lines:" >&2
      tail -n 20 "$WEBTEST_API_LOG" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "api.sh: the API did not answer /api/healthz within 30 s" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "api.sh: API up on $WEBTEST_API_ADDR (pid $pid)"
}

stop() {
  [[ -s $WEBTEST_API_PIDFILE ]] || return 0
  local pid
  pid=$(cat "$WEBTEST_API_PIDFILE")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do
      sleep 0.1
    done
    if alive "$pid"; then
      echo "api.sh: pid $pid ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$WEBTEST_API_PIDFILE"
  echo "api.sh: API stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
