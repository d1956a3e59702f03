#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts: list the API's replicas for the
# `upstream items_api` block, then keep following them (see /usr/local/bin/api-servers.sh).
set -eu
/usr/local/bin/api-servers.sh once
/usr/local/bin/api-servers.sh watch &
