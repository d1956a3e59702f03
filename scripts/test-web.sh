#!/usr/bin/env bash
# Web tier test, all real: web/templates/default.conf.template is rendered the way the nginx image
# renders it (envsubst limited to the filtered, defined variables), run by Debian's nginx in front of
# the real items-api, checked with curl (routing, headers, caching, gzip, body limit, JSON 502 and
# recovery), then the page is driven through that nginx by headless Chromium
# (tests/web/browser_check.py). Screenshots and logs go to artifacts/web/.
#
#   usage: scripts/test-web.sh
#   ITEMS_API_BIN=path   use this binary instead of `cargo build --release --locked -p items-api`
#   CI=true              a missing tool fails the run instead of skipping it
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARTIFACTS=$ROOT/artifacts/web
TEMPLATE=$ROOT/web/templates/default.conf.template
IMAGE_ROOT=/usr/share/nginx/html
# Must equal NGINX_ENVSUBST_FILTER in web/Dockerfile; read from there when it is set.
DEFAULT_ENVSUBST_FILTER='^(API_UPSTREAM|API_READ_TIMEOUT|NGINX_PORT|NGINX_LOCAL_RESOLVERS)$'

PASSED=0
FAILED=0
T=""
NGINX_PIDS=()
ECHO_PID=""

step() { printf '\n==> %s\n' "$*"; }
ok() {
  PASSED=$((PASSED + 1))
  printf '  ok    %s\n' "$1"
}
not_ok() {
  FAILED=$((FAILED + 1))
  printf '  FAIL  %s\n' "$1"
  if [[ -n ${2:-} ]]; then printf '        %s\n' "$2"; fi
}
die() {
  printf 'test-web: %s\n' "$*" >&2
  exit 1
}
expect_eq() { # DESCRIPTION ACTUAL EXPECTED
  if [[ $2 == "$3" ]]; then ok "$1"; else not_ok "$1" "expected '$3', got '$2'"; fi
}
expect_match() { # DESCRIPTION ACTUAL EXTENDED-REGEX
  if [[ $2 =~ $3 ]]; then ok "$1"; else not_ok "$1" "'$2' does not match /$3/"; fi
}

# ---- Tools ---------------------------------------------------------------------------------------

missing_tools() {
  local tool absent=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || absent+=("$tool")
  done
  echo "${absent[*]}"
}

step "Checking tools"
missing=$(missing_tools nginx envsubst curl jq python3 gzip)
if [[ -n $missing ]]; then
  if [[ ${CI:-} == true ]]; then
    die "missing tools: $missing (apt-get install nginx gettext-base curl jq python3 gzip)"
  fi
  echo "SKIPPED: scripts/test-web.sh needs: $missing (apt-get install nginx gettext-base curl jq python3 gzip)"
  exit 0
fi
BROWSER=yes
CHROMIUM_BIN=${CHROMIUM_BIN:-$(command -v chromium || true)}
CHROMEDRIVER_BIN=${CHROMEDRIVER_BIN:-$(command -v chromedriver || true)}
if [[ -z $CHROMIUM_BIN || -z $CHROMEDRIVER_BIN ]] || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ ${CI:-} == true ]]; then
    die "the browser test needs chromium, chromium-driver and python3-venv (apt-get install chromium chromium-driver python3-venv)"
  fi
  echo "WARNING: browser checks will be SKIPPED: need chromium, chromium-driver and python3-venv"
  BROWSER=no
fi
echo "nginx: $(nginx -v 2>&1)"

# ---- Scratch space and clean-up ------------------------------------------------------------------

cleanup() {
  local status=$?
  set +e
  local pid
  for pid in "${NGINX_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [[ -n $ECHO_PID ]]; then
    kill -TERM "$ECHO_PID" 2>/dev/null && wait "$ECHO_PID" 2>/dev/null
  fi
  if [[ -n $T && -d $T ]]; then
    [[ -n ${WEBTEST_API_PIDFILE:-} ]] && "$ROOT/scripts/web/api.sh" stop >/dev/null
    mkdir -p "$ARTIFACTS/logs"
    cp "$T/api.log" "$ARTIFACTS/logs/api.log" 2>/dev/null
    for dir in "$T"/nginx-*; do
      [[ -d $dir ]] || continue
      cp "$dir/access.log" "$ARTIFACTS/logs/$(basename "$dir")-access.log" 2>/dev/null
      cp "$dir/error.log" "$ARTIFACTS/logs/$(basename "$dir")-error.log" 2>/dev/null
      cp "$dir/conf.d/default.conf" "$ARTIFACTS/logs/$(basename "$dir")-default.conf" 2>/dev/null
    done
    rm -rf "$T"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T=$(mktemp -d)
# nginx workers drop to an unprivileged user when started as root: let them read the copies.
chmod 755 "$T"
mkdir -p "$T/http" "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- The real API ----------------------------------------------------------------------------------

step "Building the API"
if [[ -n ${ITEMS_API_BIN:-} ]]; then
  echo "using ITEMS_API_BIN=$ITEMS_API_BIN"
else
  (cd "$ROOT" && cargo build --release --locked -p items-api)
  ITEMS_API_BIN=$ROOT/target/release/items-api
fi
[[ -x $ITEMS_API_BIN ]] || die "no API binary at $ITEMS_API_BIN"

API_PORT=$(free_port)
export WEBTEST_API_BIN=$ITEMS_API_BIN
export WEBTEST_API_ADDR=127.0.0.1:$API_PORT
export WEBTEST_API_DB=$T/api/app.db
export WEBTEST_API_LOG=$T/api.log
export WEBTEST_API_PIDFILE=$T/api.pid
API=http://$WEBTEST_API_ADDR

# ---- Rendering the template like the image ---------------------------------------------------------

# The filter the image uses: ENV NGINX_ENVSUBST_FILTER="..." (or '...', or unquoted) in web/Dockerfile.
ENVSUBST_FILTER=$DEFAULT_ENVSUBST_FILTER
filter_line=$(grep -m1 'NGINX_ENVSUBST_FILTER=' "$ROOT/web/Dockerfile" 2>/dev/null || true)
dq='NGINX_ENVSUBST_FILTER="([^"]*)"'
sq="NGINX_ENVSUBST_FILTER='([^']*)'"
bare='NGINX_ENVSUBST_FILTER=([^[:space:]"'"'"']+)'
if [[ $filter_line =~ $dq || $filter_line =~ $sq || $filter_line =~ $bare ]]; then
  ENVSUBST_FILTER=${BASH_REMATCH[1]//\\\$/\$}
  echo "NGINX_ENVSUBST_FILTER from web/Dockerfile: $ENVSUBST_FILTER"
else
  echo "NGINX_ENVSUBST_FILTER not found in web/Dockerfile; using $ENVSUBST_FILTER"
fi
# The image's default for the template's read timeout: ENV ... API_READ_TIMEOUT=35s in web/Dockerfile.
IMAGE_READ_TIMEOUT=$(sed -n 's/^[[:space:]]*\(ENV[[:space:]]*\)\{0,1\}API_READ_TIMEOUT=\([0-9][0-9a-z]*\).*/\2/p' \
  "$ROOT/web/Dockerfile" 2>/dev/null | head -n1 || true)
[[ -n $IMAGE_READ_TIMEOUT ]] || die "no API_READ_TIMEOUT=<time> in web/Dockerfile"

# What the image's 15-local-resolvers.envsh does with NGINX_ENTRYPOINT_LOCAL_RESOLVERS=1.
RESOLVERS=$(awk 'BEGIN{ORS=" "} $1=="nameserver" {if ($2 ~ ":") {print "["$2"]"} else {print $2}}' /etc/resolv.conf 2>/dev/null || true)
RESOLVERS=${RESOLVERS% }
if [[ -z $RESOLVERS ]]; then
  echo "WARNING: no nameserver in /etc/resolv.conf; using 127.0.0.1 (only names need it, the tests use IPs)"
  RESOLVERS=127.0.0.1
fi

# make_prefix DIR: an nginx prefix shaped like the image's nginx.conf (http{} including conf.d).
make_prefix() {
  local dir=$1
  mkdir -p "$dir/conf.d"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path $dir/client_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    access_log $dir/default-access.log;
    sendfile on;
    keepalive_timeout 65;
    include $dir/conf.d/*.conf;
}
EOF
}

# render DIR PORT UPSTREAM [READ_TIMEOUT]: the image's 20-envsubst-on-templates.sh, then the static
# root moved to the copy of web/static in the scratch directory. READ_TIMEOUT defaults to the image's.
render() {
  local dir=$1 defined read_timeout=${4:-$IMAGE_READ_TIMEOUT}
  defined=$(env API_UPSTREAM="$3" API_READ_TIMEOUT="$read_timeout" NGINX_PORT="$2" NGINX_LOCAL_RESOLVERS="$RESOLVERS" NGINX_ENVSUBST_FILTER="$ENVSUBST_FILTER" \
    awk "END { for (name in ENVIRON) { if (name ~ /${ENVSUBST_FILTER}/) printf \"\${%s} \", name } }" </dev/null)
  env API_UPSTREAM="$3" API_READ_TIMEOUT="$read_timeout" NGINX_PORT="$2" NGINX_LOCAL_RESOLVERS="$RESOLVERS" \
    envsubst "$defined" <"$TEMPLATE" >"$dir/conf.d/default.conf"
  # shellcheck disable=SC2016 # a literal ${ is what is searched for
  if grep -nF '${' "$dir/conf.d/default.conf"; then
    die "variables left unsubstituted (is NGINX_ENVSUBST_FILTER '$ENVSUBST_FILTER' missing one?)"
  fi
  local roots
  roots=$(grep -c "^[[:space:]]*root $IMAGE_ROOT;" "$dir/conf.d/default.conf" || true)
  [[ $roots == 1 ]] || die "expected one 'root $IMAGE_ROOT;' line in the template, found $roots"
  sed -i "s#^\([[:space:]]*\)root $IMAGE_ROOT;#\1root $T/html;#" "$dir/conf.d/default.conf"
}

nginx_test() { nginx -q -p "$1/" -c "$1/nginx.conf" -e "$1/error.log" -t; }

# start_nginx DIR PORT: foreground nginx (its access log is its stdout), waits for /healthz.
start_nginx() {
  local dir=$1 port=$2
  nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' \
    >"$dir/access.log" 2>"$dir/stderr.log" &
  NGINX_PIDS+=("$!")
  wait_for "http://127.0.0.1:$port/healthz" 200 10 || {
    cat "$dir/stderr.log" "$dir/error.log" >&2
    die "nginx in $dir did not come up"
  }
}

# wait_for URL STATUS SECONDS
wait_for() {
  local deadline=$((SECONDS + $3)) code
  while ((SECONDS < deadline)); do
    code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" || true)
    [[ $code == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}

# req NAME URL [curl args...]: response saved as $T/http/NAME.{status,headers,body}.
req() {
  local name=$1 url=$2
  shift 2
  curl -sS --max-time 15 -o "$T/http/$name.body" -D "$T/http/$name.headers" -w '%{http_code}' "$@" "$url" \
    >"$T/http/$name.status" 2>"$T/http/$name.err" || echo 000 >"$T/http/$name.status"
}
status_of() { cat "$T/http/$1.status"; }
body_of() { cat "$T/http/$1.body"; }
header_of() { # NAME HEADER -> value of the last such header, trimmed
  { grep -i "^$2:" "$T/http/$1.headers" || true; } | tail -n1 | cut -d: -f2- | tr -d '\r' |
    sed 's/^[[:space:]]*//;s/[[:space:]]*$//'
}
header_count() { grep -ci "^$2:" "$T/http/$1.headers" || true; }
json_of() { jq -r "$2" "$T/http/$1.body" 2>/dev/null || echo "<not JSON>"; }
# log_line DIR REQUEST_ID -> the access-log line (JSON) of that request. nginx writes it just after
# the last byte of the response, so it may lag the client by a moment.
log_line() {
  local tries=0 line=""
  while ((tries++ < 40)); do
    line=$(grep -F "\"request_id\":\"$2\"" "$1/access.log" | tail -n1 || true)
    [[ -n $line ]] && break
    sleep 0.05
  done
  printf '%s' "$line"
}
# log_field LINE FIELD -> one field of an access-log line, empty when absent
log_field() { jq -r ".$2 // empty" <<<"$1" 2>/dev/null || true; }

cp -R "$ROOT/web/static" "$T/html"
chmod -R a+rX "$T/html"

step "Rendering the template (filter: $ENVSUBST_FILTER, resolvers: $RESOLVERS)"
WEB_PORT=$(free_port)
WEB=http://127.0.0.1:$WEB_PORT
MAIN=$T/nginx-main
make_prefix "$MAIN"
render "$MAIN" "$WEB_PORT" "$API"
if nginx_test "$MAIN"; then ok "rendered template passes nginx -t"; else die "nginx -t failed"; fi
for var in API_UPSTREAM API_READ_TIMEOUT NGINX_PORT NGINX_LOCAL_RESOLVERS; do
  if [[ $var =~ $ENVSUBST_FILTER ]]; then ok "NGINX_ENVSUBST_FILTER admits $var"; else not_ok "NGINX_ENVSUBST_FILTER admits $var"; fi
done
# No name resolution at start-up: the web container must start before the API exists.
UNRESOLVED=$T/nginx-unresolved
make_prefix "$UNRESOLVED"
render "$UNRESOLVED" "$(free_port)" "http://items-api.invalid:8000"
if nginx_test "$UNRESOLVED"; then
  ok "nginx -t passes with an upstream name that does not resolve"
else
  not_ok "nginx -t passes with an upstream name that does not resolve"
fi

# ---- nginx first, API later ----------------------------------------------------------------------

step "Starting nginx on :$WEB_PORT with the API not running yet"
start_nginx "$MAIN" "$WEB_PORT"
ok "nginx starts while the API is down"

req down "$WEB/api/healthz"
expect_eq "API down: /api/healthz is 502" "$(status_of down)" 502
expect_match "API down: 502 is JSON" "$(header_of down Content-Type)" '^application/json'
expect_eq "API down: 502 body has detail" "$(json_of down .detail)" "API unavailable"
expect_match "API down: 502 carries a request id" "$(header_of down X-Request-Id)" '^[0-9a-f]{32}$'
expect_eq "server_tokens off (no version in Server)" "$(header_of down Server)" "nginx"
req health "$WEB/healthz"
expect_eq "/healthz answers from nginx itself" "$(status_of health):$(json_of health .status)" "200:ok"
expect_match "/healthz is JSON" "$(header_of health Content-Type)" '^application/json'

step "Starting the API on $WEBTEST_API_ADDR"
"$ROOT/scripts/web/api.sh" start
if wait_for "$WEB/api/healthz" 200 10; then
  ok "nginx reaches the API once it is up, without a reload"
else
  not_ok "nginx reaches the API once it is up, without a reload"
fi

# ---- Routing, static files and their headers -----------------------------------------------------

step "Static files: routing, caching and security headers"
req index "$WEB/"
expect_eq "GET / is 200" "$(status_of index)" 200
expect_eq "GET / is HTML in UTF-8" "$(header_of index Content-Type)" "text/html; charset=utf-8"
if grep -q '<title>Items</title>' "$T/http/index.body"; then ok "GET / serves web/static/index.html"; else not_ok "GET / serves web/static/index.html"; fi
expect_eq "index.html: Cache-Control no-cache" "$(header_of index Cache-Control)" "no-cache"
expect_match "index.html: ETag for revalidation" "$(header_of index ETag)" '^"[0-9a-f]+-[0-9a-f]+"$'
csp=$(header_of index Content-Security-Policy)
for directive in "default-src 'self'" "frame-ancestors 'none'" "base-uri 'self'" "form-action 'self'"; do
  if [[ "; $csp;" == *"; $directive;"* ]]; then ok "CSP has $directive"; else not_ok "CSP has $directive" "CSP: $csp"; fi
done
if [[ $csp == *unsafe-inline* || $csp == *unsafe-eval* ]]; then not_ok "CSP allows no unsafe-*" "$csp"; else ok "CSP allows no unsafe-*"; fi
expect_eq "X-Content-Type-Options nosniff" "$(header_of index X-Content-Type-Options)" "nosniff"
expect_eq "X-Frame-Options DENY" "$(header_of index X-Frame-Options)" "DENY"
expect_eq "Referrer-Policy" "$(header_of index Referrer-Policy)" "no-referrer"
expect_match "Permissions-Policy" "$(header_of index Permissions-Policy)" 'camera=\(\)'
expect_eq "security headers are not doubled" "$(header_count index Content-Security-Policy)" 1

req index_html "$WEB/index.html"
expect_eq "/index.html: Cache-Control no-cache" "$(status_of index_html):$(header_of index_html Cache-Control)" "200:no-cache"

req js "$WEB/app.js"
expect_eq "GET /app.js is 200" "$(status_of js)" 200
expect_match "app.js has a JavaScript type" "$(header_of js Content-Type)" '^(application|text)/javascript'
expect_eq "app.js: short max-age, then revalidation" "$(header_of js Cache-Control)" "public, max-age=600"
expect_eq "app.js: security headers too" "$(header_of js X-Content-Type-Options)" "nosniff"
etag=$(header_of js ETag)
req js304 "$WEB/app.js" -H "If-None-Match: $etag"
expect_eq "app.js: If-None-Match gives 304" "$(status_of js304)" 304
expect_eq "app.js: the 304 repeats Cache-Control" "$(header_of js304 Cache-Control)" "public, max-age=600"

req css_gz "$WEB/app.css" -H 'Accept-Encoding: gzip'
expect_eq "app.css is gzipped" "$(header_of css_gz Content-Encoding)" "gzip"
expect_eq "gzip sets Vary: Accept-Encoding" "$(header_of css_gz Vary)" "Accept-Encoding"
if gzip -dc <"$T/http/css_gz.body" | cmp -s - "$ROOT/web/static/app.css"; then
  ok "gzipped app.css decompresses to the file"
else
  not_ok "gzipped app.css decompresses to the file"
fi
req js_gz "$WEB/app.js" -H 'Accept-Encoding: gzip'
expect_eq "app.js is gzipped" "$(header_of js_gz Content-Encoding)" "gzip"
req icon "$WEB/favicon.svg" -H 'Accept-Encoding: gzip'
expect_match "favicon.svg is SVG" "$(header_of icon Content-Type)" '^image/svg\+xml'
expect_eq "favicon.svg: one-day cache" "$(header_of icon Cache-Control)" "public, max-age=86400"

req missing "$WEB/no-such-file.js"
expect_eq "unknown static path is 404 (no SPA fallback)" "$(status_of missing)" 404
expect_eq "404 still carries nosniff" "$(header_of missing X-Content-Type-Options)" "nosniff"

# ---- The proxy -----------------------------------------------------------------------------------

step "Proxy to the API"
req api_health "$WEB/api/healthz"
expect_eq "GET /api/healthz through nginx" "$(status_of api_health):$(json_of api_health .status)" "200:ok"
req created "$WEB/api/items" -X POST -H 'Content-Type: application/json' --data '{"text":"  added through nginx  "}'
expect_eq "POST /api/items through nginx is 201" "$(status_of created)" 201
expect_eq "the API trimmed the text" "$(json_of created .text)" "added through nginx"
created_id=$(json_of created .id)
req list "$WEB/api/items?limit=5"
expect_eq "GET /api/items lists the new item first" "$(status_of list):$(json_of list '.[0].id')" "200:$created_id"
req blank "$WEB/api/items" -X POST -H 'Content-Type: application/json' --data '{"text":"   "}'
expect_eq "API's own 400 passes through" "$(status_of blank)" 400
expect_match "API's 400 detail intact" "$(json_of blank .detail)" 'empty'
req malformed "$WEB/api/items" -X POST -H 'Content-Type: application/json' --data '{"text":'
expect_eq "API's own 422 passes through with its detail list" "$(status_of malformed):$(json_of malformed '.detail|type')" "422:array"
req nf "$WEB/api/items/987654321"
expect_eq "API's own 404 passes through" "$(status_of nf):$(json_of nf .detail)" "404:Item not found"
req docs "$WEB/api/openapi.json" -H 'Accept-Encoding: gzip'
expect_eq "/api/openapi.json through nginx" "$(status_of docs)" 200
expect_eq "JSON from the API is gzipped" "$(header_of docs Content-Encoding)" "gzip"

step "Request ids and the access log"
rid="webtest-$RANDOM$RANDOM"
req rid "$WEB/api/items?limit=1" -H "X-Request-Id: $rid"
expect_eq "client X-Request-Id reaches the API and comes back" "$(header_of rid X-Request-Id)" "$rid"
line=$(log_line "$MAIN" "$rid")
if [[ -n $line ]]; then ok "access log has the request id"; else not_ok "access log has the request id"; fi
expect_eq "access log: upstream status" "$(log_field "$line" upstream_status)" 200
expect_match "access log: upstream response time" "$(log_field "$line" upstream_response_time)" '^[0-9]+\.[0-9]{3}$'
if grep -qF "$rid" "$T/api.log"; then ok "the API logged the forwarded request id"; else not_ok "the API logged the forwarded request id"; fi
req norid "$WEB/api/healthz"
generated=$(header_of norid X-Request-Id)
expect_match "without one, nginx generates the request id" "$generated" '^[0-9a-f]{32}$'
if [[ -n $(log_line "$MAIN" "$generated") ]]; then ok "the generated id is the one logged"; else not_ok "the generated id is the one logged"; fi
req badrid "$WEB/api/healthz" -H 'X-Request-Id: has spaces and "quotes"'
expect_match "a malformed X-Request-Id is replaced" "$(header_of badrid X-Request-Id)" '^[0-9a-f]{32}$'
if jq -e . "$MAIN/access.log" >/dev/null 2>&1; then ok "every access-log line is JSON"; else not_ok "every access-log line is JSON"; fi

step "Body limit (1 MiB, as the API's MAX_BODY_BYTES)"
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' 'a' >"$T/over.bin"
req over "$WEB/api/items" -X POST -H 'Content-Type: application/json' --data-binary "@$T/over.bin"
expect_eq "1 MiB + 1 byte: 413 from nginx" "$(status_of over)" 413
expect_match "413 is JSON with a detail" "$(header_of over Content-Type):$(json_of over .detail)" '^application/json.*:.*1 MiB'
{
  printf '{"text":"'
  head -c $((1024 * 1024 - 12)) /dev/zero | tr '\0' 'b'
  printf '"}'
} >"$T/limit.json"
limit_rid="webtest-limit-$RANDOM"
req limit "$WEB/api/items" -X POST -H 'Content-Type: application/json' -H "X-Request-Id: $limit_rid" --data-binary "@$T/limit.json"
limit_upstream=$(log_field "$(log_line "$MAIN" "$limit_rid")" upstream_status)
expect_match "exactly 1 MiB is passed on to the API (it answered $(status_of limit))" "$limit_upstream" '^[0-9]{3}$'
if [[ $(status_of limit) == 201 ]]; then
  curl -fsS -o /dev/null -X DELETE "$API/api/items/$(json_of limit .id)"
fi

# ---- What the API receives -----------------------------------------------------------------------

step "Headers nginx sends upstream (captured by tests/web/upstream_echo.py)"
ECHO_PORT=$(free_port)
python3 "$ROOT/tests/web/upstream_echo.py" "$ECHO_PORT" &
ECHO_PID=$!
ECHO_WEB_PORT=$(free_port)
ECHO_NGINX=$T/nginx-echo
make_prefix "$ECHO_NGINX"
# A short read timeout, so the 504 check below waits 2 s instead of the image's $IMAGE_READ_TIMEOUT.
render "$ECHO_NGINX" "$ECHO_WEB_PORT" "http://127.0.0.1:$ECHO_PORT" 2s
wait_for "http://127.0.0.1:$ECHO_PORT/" 200 10 || die "upstream_echo.py did not start"
start_nginx "$ECHO_NGINX" "$ECHO_WEB_PORT"
ECHO_WEB=http://127.0.0.1:$ECHO_WEB_PORT
upstream_header() { jq -r --arg n "$2" '[.headers[] | select(.[0] == $n) | .[1]] | join(",")' "$T/http/$1.body"; }

req echo1 "$ECHO_WEB/api/items?limit=5&before=10"
expect_eq "path and query reach the API unchanged" "$(json_of echo1 .path)" "/api/items?limit=5&before=10"
expect_eq "HTTP/1.1 to the upstream" "$(json_of echo1 .version)" "HTTP/1.1"
expect_eq "Host is the upstream's (\$proxy_host), not the client's" "$(upstream_header echo1 host)" "127.0.0.1:$ECHO_PORT"
expect_eq "no Connection: close to the upstream" "$(upstream_header echo1 connection)" ""
expect_eq "X-Forwarded-For is the client address" "$(upstream_header echo1 x-forwarded-for)" "127.0.0.1"
expect_eq "X-Forwarded-Proto defaults to the scheme" "$(upstream_header echo1 x-forwarded-proto)" "http"
expect_match "X-Request-Id is generated for the API" "$(upstream_header echo1 x-request-id)" '^[0-9a-f]{32}$'
req echo2 "$ECHO_WEB/api/items" -H 'X-Forwarded-For: 198.51.100.7' -H 'X-Forwarded-Proto: https' -H 'X-Request-Id: from-client-1'
expect_eq "X-Forwarded-For is appended to" "$(upstream_header echo2 x-forwarded-for)" "198.51.100.7, 127.0.0.1"
expect_eq "an ingress's X-Forwarded-Proto: https is kept" "$(upstream_header echo2 x-forwarded-proto)" "https"
expect_eq "the client's X-Request-Id is forwarded" "$(upstream_header echo2 x-request-id)" "from-client-1"
req echo3 "$ECHO_WEB/api/items" -H 'X-Forwarded-Proto: gopher'
expect_eq "a bogus X-Forwarded-Proto is replaced" "$(upstream_header echo3 x-forwarded-proto)" "http"
req echo4 "$ECHO_WEB/api/items" -H 'Host: evil.example'
expect_eq "the client's Host does not reach the API" "$(upstream_header echo4 host)" "127.0.0.1:$ECHO_PORT"

step "API too slow: nginx gives up after API_READ_TIMEOUT (2s here) with a JSON 504"
stall_started=$(date +%s%N)
req stall "$ECHO_WEB/api/stall?seconds=8"
stall_ms=$((($(date +%s%N) - stall_started) / 1000000))
expect_eq "a stalled API gets a 504" "$(status_of stall)" 504
expect_match "504 is JSON" "$(header_of stall Content-Type)" '^application/json'
expect_eq "504 body says the API was too slow" "$(json_of stall .detail)" "API did not answer in time"
expect_match "504 carries a request id" "$(header_of stall X-Request-Id)" '^[0-9a-f]{32}$'
if ((stall_ms >= 1900 && stall_ms < 6000)); then
  ok "the 504 came after the read timeout, not the stall ($stall_ms ms)"
else
  not_ok "the 504 came after the read timeout, not the stall" "took $stall_ms ms"
fi

# ---- Outage and recovery ---------------------------------------------------------------------------

step "API stopped: nginx answers JSON 502 and keeps serving the page"
"$ROOT/scripts/web/api.sh" stop
req out "$WEB/api/items"
expect_eq "API stopped: /api/items is 502" "$(status_of out)" 502
expect_eq "API stopped: JSON detail" "$(header_of out Content-Type):$(json_of out .detail)" "application/json:API unavailable"
expect_eq "API stopped: 502 is not cached" "$(header_of out Cache-Control)" "no-store"
req out_page "$WEB/"
expect_eq "API stopped: the page still loads" "$(status_of out_page)" 200
req out_health "$WEB/healthz"
expect_eq "API stopped: nginx /healthz still 200" "$(status_of out_health)" 200

step "API restarted on the same port: nginx recovers by itself"
"$ROOT/scripts/web/api.sh" start
if wait_for "$WEB/api/healthz" 200 10; then ok "recovery without touching nginx"; else not_ok "recovery without touching nginx"; fi
req after "$WEB/api/items/$created_id"
expect_eq "items persist across the API restart" "$(status_of after):$(json_of after .text)" "200:added through nginx"

# ---- The browser -----------------------------------------------------------------------------------

if [[ $BROWSER == yes ]]; then
  step "Headless Chromium through nginx (tests/web/browser_check.py)"
  venv=$ROOT/.venv
  requirements=$ROOT/tests/web/requirements.txt
  if [[ ! -x $venv/bin/python ]] || ! cmp -s "$requirements" "$venv/.webtest-requirements"; then
    echo "installing $requirements into .venv/"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.webtest-requirements"
  fi
  results=$T/browser-results
  browser_status=0
  "$venv/bin/python" "$ROOT/tests/web/browser_check.py" \
    --base-url "$WEB" --api-ctl "$ROOT/scripts/web/api.sh" --artifacts "$ARTIFACTS" \
    --chromium "$CHROMIUM_BIN" --chromedriver "$CHROMEDRIVER_BIN" --results "$results" || browser_status=$?
  if [[ -s $results ]]; then
    read -r browser_passed browser_failed <"$results"
    PASSED=$((PASSED + browser_passed))
    FAILED=$((FAILED + browser_failed))
  fi
  if ((browser_status != 0)) && [[ ! -s $results || ${browser_failed:-0} == 0 ]]; then
    not_ok "browser_check.py ran to the end" "exit status $browser_status"
  fi
else
  echo "SKIPPED: browser checks (see the warning above)"
fi

step "Summary"
echo "screenshots and logs: $ARTIFACTS"
echo "web: $PASSED passed, $FAILED failed"
((FAILED == 0))
