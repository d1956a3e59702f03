#!/bin/sh
# Nginx's own figures for Prometheus, without an exporter process: reads stub_status on the metrics
# port and writes what it says, in Prometheus' text format and under the official
# nginx-prometheus-exporter's names and help texts (its two connection counters with the _total
# that Prometheus gives counters), to NGINX_METRICS_FILE, which nginx serves at /metrics on that
# same port (the template's second server).
#
#   nginx-metrics.sh once    read and write now
#   nginx-metrics.sh watch   then again every NGINX_METRICS_REFRESH_SECS (the image runs this)
#
# A scrape therefore sees figures at most NGINX_METRICS_REFRESH_SECS old (plus one read);
# items_web_metrics_timestamp_seconds says when they were read, so a loop that stopped shows.
# When stub_status cannot be read, the file says nginx_up 0 and nothing else, as the exporter does.
#
# Settings: NGINX_METRICS_PORT (default 9113), NGINX_METRICS_FILE (default
# /tmp/items-nginx-metrics.prom), NGINX_METRICS_REFRESH_SECS (default 5).
set -eu

port=${NGINX_METRICS_PORT:-9113}
file=${NGINX_METRICS_FILE:-/tmp/items-nginx-metrics.prom}
refresh=${NGINX_METRICS_REFRESH_SECS:-5}

# stub_status's page on stdin, Prometheus' text on stdout; fails on a page it does not recognise.
# Values are copied as text: awk's numbers would turn large counters into exponent notation.
exposition() {
    awk -v now="$1" '
        /^Active connections:/ { active = $3 }
        /^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { accepted = $1; handled = $2; requests = $3 }
        /^Reading:/ { reading = $2; writing = $4; waiting = $6 }
        function metric(name, type, help, value) {
            printf "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type, name, value
        }
        END {
            if (active == "" || requests == "" || waiting == "") exit 1
            metric("nginx_connections_accepted_total", "counter", "Accepted client connections", accepted)
            metric("nginx_connections_active", "gauge", "Active client connections", active)
            metric("nginx_connections_handled_total", "counter", "Handled client connections", handled)
            metric("nginx_connections_reading", "gauge", "Connections where NGINX is reading the request header", reading)
            metric("nginx_connections_waiting", "gauge", "Idle client connections", waiting)
            metric("nginx_connections_writing", "gauge", "Connections where NGINX is writing the response back to the client", writing)
            metric("nginx_http_requests_total", "counter", "Total http requests", requests)
            metric("nginx_up", "gauge", "Status of the last metric scrape", 1)
            metric("items_web_metrics_timestamp_seconds", "gauge", "When these figures were read from stub_status, in Unix time", now)
        }'
}

unreachable() {
    printf '# HELP nginx_up Status of the last metric scrape\n# TYPE nginx_up gauge\nnginx_up 0\n'
    printf '# HELP items_web_metrics_timestamp_seconds When these figures were read from stub_status, in Unix time\n'
    printf '# TYPE items_web_metrics_timestamp_seconds gauge\nitems_web_metrics_timestamp_seconds %s\n' "$1"
}

# Replaces the file in one rename, so nginx never serves half of it.
write() {
    now=$(date +%s)
    if ! wget -q -T 2 -O - "http://127.0.0.1:$port/stub_status" 2>/dev/null | exposition "$now" >"$file.new"; then
        unreachable "$now" >"$file.new"
    fi
    mv "$file.new" "$file"
}

case "${1:-}" in
once)
    write
    ;;
watch)
    while sleep "$refresh"; do
        write || echo "nginx-metrics: could not write $file" >&2
    done
    ;;
*)
    echo "usage: $0 once|watch" >&2
    exit 2
    ;;
esac
