#!/bin/sh
# Keeps the list of API servers nginx balances over (the `upstream items_api` block includes it)
# in step with the replicas behind API_UPSTREAM's host name, and reloads nginx when it changes.
#
#   api-servers.sh once    write the list now (the image runs this before nginx starts)
#   api-servers.sh watch   then check every API_SERVERS_REFRESH_SECS and reload on a change
#
# nginx before 1.27.3 resolves upstream servers only when it loads its configuration, so it would
# neither see replicas that come later nor drop ones that left. Over plain http each address is
# also asked for readiness (GET /api/health): a replica that is stopping answers 503 there while it
# still serves, and leaves the list before it stops answering. When no replica is ready (the
# database is down, say), every address stays in, so clients get the API's own JSON 503s.
#
# Settings: API_UPSTREAM (scheme://host[:port]), API_SERVERS_FILE (default /tmp/items-api-servers.conf),
# API_SERVERS_REFRESH_SECS (default 2).
set -eu

upstream=${API_UPSTREAM:?API_UPSTREAM must be set, e.g. http://api:8000}
servers_file=${API_SERVERS_FILE:-/tmp/items-api-servers.conf}
refresh=${API_SERVERS_REFRESH_SECS:-2}

scheme=${upstream%%://*}
authority=${upstream#*://}
authority=${authority%%/*}
case "$authority" in
*:*) host=${authority%:*} port=${authority##*:} ;;
*) host=$authority port= ;;
esac
case "$scheme" in
http) port=${port:-80} ;;
https) port=${port:-443} ;;
*)
    echo "api-servers: API_UPSTREAM must start with http:// or https://, not ${upstream}" >&2
    exit 1
    ;;
esac

# The IPv4 addresses of $host, one per line (glibc's getent, else busybox nslookup).
addresses() {
    case "$host" in
    *[!0-9.]*) ;;
    *)
        echo "$host"
        return
        ;;
    esac
    if getent ahostsv4 "$host" >/dev/null 2>&1; then
        getent ahostsv4 "$host" | awk '{ print $1 }' | sort -u
    elif command -v nslookup >/dev/null 2>&1; then
        nslookup "$host" 2>/dev/null |
            awk '/^Name:/ { named = 1 } named && /^Address/ { print $NF }' |
            grep -E '^[0-9]+(\.[0-9]+){3}$' | sort -u
    fi
}

ready() {
    [ "$scheme" = https ] && return 0
    wget -q -T 1 -O /dev/null "http://$1:$port/api/health" 2>/dev/null
}

# The server lines for what answers now.
servers() {
    all=$(addresses || true)
    if [ -z "$all" ]; then
        # Nothing to send requests to yet: nginx answers its JSON 502 until a replica appears.
        echo "server 127.0.0.1:9 down;"
        return
    fi
    chosen=
    for address in $all; do
        if ready "$address"; then
            chosen="$chosen $address"
        fi
    done
    for address in ${chosen:-$all}; do
        echo "server $address:$port max_fails=1 fail_timeout=2s;"
    done
}

# Writes the list when it changed; true if it did.
write() {
    servers >"$servers_file.new"
    if cmp -s "$servers_file.new" "$servers_file" 2>/dev/null; then
        rm -f "$servers_file.new"
        return 1
    fi
    mv "$servers_file.new" "$servers_file"
}

case "${1:-}" in
once)
    write || true
    ;;
watch)
    # What nginx loaded last; a reload that fails (nginx not running yet) is tried again.
    applied=$(cat "$servers_file" 2>/dev/null || true)
    while sleep "$refresh"; do
        write || true
        current=$(cat "$servers_file")
        [ "$current" = "$applied" ] && continue
        if nginx -s reload 2>/dev/null; then
            applied=$current
            echo "api-servers: reloaded with $(echo "$current" | grep -c '^server') server(s): $(echo "$current" | tr '\n' ' ')"
        fi
    done
    ;;
*)
    echo "usage: $0 once|watch" >&2
    exit 2
    ;;
esac
