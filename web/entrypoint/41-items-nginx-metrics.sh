#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts: keep nginx's own figures for Prometheus
# up to date (see /usr/local/bin/nginx-metrics.sh). The first write follows nginx's start by one
# refresh; until then /metrics answers 404 and Prometheus records the target as not yet up.
set -eu
/usr/local/bin/nginx-metrics.sh watch &
