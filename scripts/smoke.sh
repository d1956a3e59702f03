#!/usr/bin/env bash
# Smoke test of a running stack, through its web tier only (Nginx in front of the API).
#
#   scripts/smoke.sh http://127.0.0.1:8080
#
# Proves the Nginx template was rendered (its /healthz and headers; the stock config has
# neither), the proxy reaches the API, and the API works end to end: health, add an item, see it
# in the list, the page, the API docs, and the JSON error shape. The item it adds is deleted at
# the end. Needs only bash, curl, grep and sed. Exit 0: all passed; 1: a check failed (the
# message says what was expected and what came back); 2: bad usage.
#
# Used by scripts/e2e-docker.sh and by CI: keep the interface (one argument) stable.
# Environment (all optional):
#   SMOKE_WAIT_SECS=60          wait this long for GET /healthz to answer 200 before the checks
#   SMOKE_MAX_TIME=10           timeout of each request, in seconds
#   SMOKE_EXPECT_VERSION=       when set, /api/health must report exactly this version
#   SMOKE_KEEP_ITEM=0           1: keep the item the test adds
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 <base-url>   e.g. $0 http://127.0.0.1:8080" >&2
    exit 2
fi
base_url="${1%/}"
wait_secs="${SMOKE_WAIT_SECS:-60}"
max_time="${SMOKE_MAX_TIME:-10}"
expect_version="${SMOKE_EXPECT_VERSION:-}"
keep_item="${SMOKE_KEEP_ITEM:-0}"

command -v curl >/dev/null || { echo "smoke: curl is required" >&2; exit 1; }

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
body_file="$work_dir/body"
headers_file="$work_dir/headers"
status=""
request_id="smoke-$(date +%s)-$RANDOM"

step() { printf '==> smoke: %s\n' "$*"; }
pass() { printf '    ok   %s\n' "$*"; }
fail() {
    printf '    FAIL %s\n' "$*" >&2
    if [[ -s "$body_file" ]]; then
        printf '         response (status %s): %s\n' "$status" "$(head -c 400 "$body_file")" >&2
    fi
    printf 'smoke: FAILED against %s\n' "$base_url" >&2
    exit 1
}

# request METHOD PATH [JSON-BODY]: sets $status, writes the body and headers to their files.
request() {
    local method="$1" path="$2" data="${3-}"
    local args=(-sS -X "$method" --max-time "$max_time" -o "$body_file" -D "$headers_file"
                -w '%{http_code}' -H "X-Request-Id: $request_id")
    if [[ -n "$data" ]]; then
        args+=(-H 'Content-Type: application/json' --data "$data")
    fi
    : >"$body_file"
    if ! status="$(curl "${args[@]}" "$base_url$path" 2>"$work_dir/curl-error")"; then
        status="000"
        fail "$method $path: no HTTP answer ($(tr -d '\n' <"$work_dir/curl-error"))"
    fi
}

expect_status() {
    [[ "$status" == "$1" ]] || fail "$2: expected HTTP $1, got $status"
}
expect_body() {
    grep -q -- "$1" "$body_file" || fail "$2: body does not contain $1"
}
expect_header() {
    grep -qi -- "^$1" "$headers_file" || fail "$2: no response header matching '$1'"
}
# json_field NAME: the string or scalar value of "NAME" on the first body line that has one (the
# API answers compact JSON; each field name used here occurs once). No pipe to head: under
# pipefail an early-closing reader could fail the command.
json_field() {
    sed -n "/\"$1\":/{s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p;q;}" "$body_file"
}

step "waiting up to ${wait_secs}s for $base_url/healthz"
deadline=$((SECONDS + wait_secs))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$base_url/healthz" || true)" == 200 ]]; do
    if ((SECONDS >= deadline)); then
        status="000"
        fail "GET /healthz did not answer 200 within ${wait_secs}s"
    fi
    sleep 1
done
pass "web tier answers"

step "web tier: GET /healthz (served by the rendered template, not the stock config)"
request GET /healthz
expect_status 200 "GET /healthz"
expect_body '"status":"ok"' "GET /healthz"
pass "/healthz 200 {\"status\":\"ok\"}"

step "proxy: GET /api/healthz reaches the API"
request GET /api/healthz
expect_status 200 "GET /api/healthz"
expect_body '"status":"ok"' "GET /api/healthz"
expect_header 'content-type: application/json' "GET /api/healthz"
expect_header "x-request-id: $request_id" "GET /api/healthz (request id passed through and echoed)"
pass "/api/healthz 200, X-Request-Id echoed"

step "API: GET /api/health"
request GET /api/health
expect_status 200 "GET /api/health"
expect_body '"status":"ok"' "GET /api/health"
expect_body '"writable":true' "GET /api/health (database writable)"
version="$(json_field version)"
printf '    version=%s build_date=%s vcs_ref=%s environment=%s journal_mode=%s\n' \
    "$version" "$(json_field build_date)" "$(json_field vcs_ref)" "$(json_field environment)" \
    "$(json_field journal_mode)"
if [[ -n "$expect_version" && "$version" != "$expect_version" ]]; then
    fail "GET /api/health: expected version $expect_version, got $version"
fi
pass "/api/health 200, database reachable and writable"

step "API: POST /api/items, then find it"
text="smoke $request_id"
request POST /api/items "{\"text\":\"  $text  \"}"
expect_status 201 "POST /api/items"
expect_body "\"text\":\"$text\"" "POST /api/items (text trimmed)"
item_id="$(json_field id)"
[[ "$item_id" =~ ^[0-9]+$ ]] || fail "POST /api/items: no numeric id in the answer"
pass "created item $item_id"
request GET '/api/items?limit=100'
expect_status 200 "GET /api/items"
expect_body "\"id\":${item_id}[,}]" "GET /api/items (the new item's id is listed)"
expect_body "\"text\":\"$text\"" "GET /api/items (the new item's text is listed)"
request GET "/api/items/$item_id"
expect_status 200 "GET /api/items/$item_id"
expect_body "\"text\":\"$text\"" "GET /api/items/$item_id"
pass "item $item_id listed and readable"

step "API: validation errors are JSON {\"detail\": ...}"
request POST /api/items '{"text":"   "}'
expect_status 400 "POST /api/items with blank text"
expect_body '"detail":"text must not be empty"' "POST /api/items with blank text"
request GET /api/no-such-route
expect_status 404 "GET /api/no-such-route"
expect_body '"detail":"Not Found"' "GET /api/no-such-route"
expect_header 'content-type: application/json' "GET /api/no-such-route"
pass "400 and 404 carry a JSON detail"

step "page: GET / and its assets"
request GET /
expect_status 200 "GET /"
expect_header 'content-type: text/html' "GET /"
expect_body 'app.js' "GET / (the page loads app.js)"
expect_body 'app.css' "GET / (the page loads app.css)"
expect_header 'content-security-policy:' "GET / (security headers of the template)"
request GET /app.js
expect_status 200 "GET /app.js"
request GET /app.css
expect_status 200 "GET /app.css"
pass "page and assets served with a Content-Security-Policy"

step "API docs: /api/docs and /api/openapi.json"
request GET /api/openapi.json
expect_status 200 "GET /api/openapi.json"
expect_body '"openapi"' "GET /api/openapi.json"
expect_body '/api/items' "GET /api/openapi.json"
request GET /api/docs
if [[ "$status" =~ ^30[12378]$ ]]; then
    # Swagger UI redirects /api/docs to its index; follow that one redirect (same origin only).
    location="$(sed -n '/^[Ll]ocation:/{s/^[Ll]ocation: *\([^[:space:]]*\).*/\1/p;q;}' "$headers_file")"
    location="${location#"$base_url"}"
    [[ "$location" == /* ]] || location="/api/$location"
    printf '    /api/docs redirects to %s\n' "$location"
    request GET "$location"
fi
expect_status 200 "GET /api/docs"
grep -qi 'swagger' "$body_file" || fail "GET /api/docs: no Swagger UI in the page"
pass "OpenAPI document and Swagger UI served"

if [[ "$keep_item" == 1 ]]; then
    step "keeping item $item_id (SMOKE_KEEP_ITEM=1)"
else
    step "cleanup: DELETE /api/items/$item_id"
    request DELETE "/api/items/$item_id"
    expect_status 204 "DELETE /api/items/$item_id"
    request GET "/api/items/$item_id"
    expect_status 404 "GET /api/items/$item_id after DELETE"
    expect_body '"detail":"Item not found"' "GET /api/items/$item_id after DELETE"
    pass "item $item_id deleted"
fi

printf 'smoke: all checks passed against %s (version %s)\n' "$base_url" "$version"
