#!/usr/bin/env bash
# End-to-end test of the images and Compose files in real Docker.
#
#   scripts/e2e-docker.sh
#
# Builds both images (timed), checks their size, labels and user; starts compose.yaml and uses
# the app only through the web tier on 127.0.0.1:$WEB_PORT (scripts/smoke.sh); checks that both
# containers run as non-root with a read-only root filesystem and no capabilities; restarts the
# API, then down/up, and proves every item survived in the volume; backs the volume up and
# restores it with `items-api backup`/`restore`; SIGKILLs the API under a bounded write load and
# proves every acknowledged write is still there; proves `down -v` removes the data; pushes both
# images to a local registry, removes the local copies and runs compose.registry.yaml from it.
# Also checks that compose.dev.yaml publishes the API on 127.0.0.1 with development settings.
# Prints each step and a timing table; writes artifacts/docker/e2e.json and the build/compose
# logs (artifacts/docker/*.log).
# Everything it starts (containers, volume, networks, registry, images, temp files) is removed on
# exit, also on failure or Ctrl-C; the compose project has a unique name.
#
# Needs: docker with BuildKit and the compose plugin (v2.22+), curl, jq; free ports below.
# Without them: a failure when CI=true, otherwise a loud skip (exit 0).
# Environment (all optional):
#   WEB_PORT=8080             host port of the web tier (bound to 127.0.0.1)
#   E2E_REGISTRY_PORT=5000    host port of the throwaway registry (bound to 127.0.0.1)
#   E2E_REGISTRY_IMAGE=registry:2
#   E2E_COLD_BUILD=0          1: first builds with --no-cache (a true cold build; slow)
#   E2E_LOAD_WORKERS=4        parallel writers in the SIGKILL test
#   E2E_LOAD_PER_WORKER=60    items each writer POSTs
#   E2E_MAX_API_MB=20         size budget of the API image (MB = 10^6 bytes)
#   VCS_REF / GITHUB_SHA      revision baked into the test images (default: e2e-no-vcs)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

web_port="${WEB_PORT:-8080}"
registry_port="${E2E_REGISTRY_PORT:-5000}"
registry_image="${E2E_REGISTRY_IMAGE:-registry:2}"
cold_build="${E2E_COLD_BUILD:-0}"
load_workers="${E2E_LOAD_WORKERS:-4}"
load_per_worker="${E2E_LOAD_PER_WORKER:-60}"
max_api_mb="${E2E_MAX_API_MB:-20}"

web_url="http://127.0.0.1:$web_port"
artifacts="$repo_root/artifacts/docker"
started_at=$SECONDS
run_id="$(date -u +%Y%m%d%H%M%S)-$$"
project="items-e2e-$run_id"
registry_container="$project-registry"
registry_repo="127.0.0.1:$registry_port/items-e2e"
image_tag="e2e-$run_id"

# What the test images carry; /api/health and the labels must show exactly these.
build_version="0.0.0-e2e.$run_id"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
vcs_ref="${VCS_REF:-${GITHUB_SHA:-e2e-no-vcs}}"

# Compose: this project only, images named <project>-api and <project>-web.
export COMPOSE_PROJECT_NAME="$project"
export WEB_BIND=127.0.0.1 WEB_PORT="$web_port"
export BUILD_VERSION="$build_version" BUILD_DATE="$build_date" VCS_REF="$vcs_ref"
unset REGISTRY IMAGE_TAG API_PORT RUST_LOG
api_image="$project-api"
web_image="$project-web"

current_step="start"
step_no=0
work_dir=""
load_pids=()
declare -A timings=()
declare -A facts=()

step() {
    step_no=$((step_no + 1))
    current_step="$*"
    printf '\n==> [%02d] %s  (+%ss)\n' "$step_no" "$*" "$((SECONDS - started_at))"
}
info() { printf '    %s\n' "$*"; }
ok() { printf '    ok   %s\n' "$*"; }
die() {
    printf '    FAIL %s\n' "$*" >&2
    exit 1
}

skip_or_fail() {
    if [[ "${CI:-}" == true ]]; then
        die "$1 (CI=true: a missing tool is a failure)"
    fi
    printf '\n!!! e2e-docker: SKIPPED: %s\n!!! (install it, or see ../shared/docker-offline on a machine without registry access)\n\n' "$1" >&2
    exit 0
}

# --- helpers -------------------------------------------------------------------------------

compose() { docker compose -f compose.yaml "$@"; }
compose_dev() { docker compose -f compose.yaml -f compose.dev.yaml "$@"; }
compose_registry() { docker compose -f compose.registry.yaml "$@"; }

# timed NAME LOG CMD...: runs CMD with its output in LOG, records the seconds under NAME.
timed() {
    local name="$1" log="$2" start rc=0
    shift 2
    start=$(date +%s.%N)
    "$@" >"$log" 2>&1 || rc=$?
    timings[$name]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if ((rc != 0)); then
        tail -n 40 "$log" >&2
        die "$name failed (exit $rc); full log: $log"
    fi
    info "$name: ${timings[$name]}s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: an unused port in 20000-59999 on 127.0.0.1.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        port_free "$port" && break
    done
    echo "$port"
}

container_of() { compose ps -q "$1"; }

# wait_healthy SERVICE [SECONDS]: until the service's container reports healthy.
wait_healthy() {
    local service="$1" limit="${2:-90}" deadline cid health
    deadline=$((SECONDS + limit))
    while :; do
        cid="$(container_of "$service")"
        health=""
        if [[ -n "$cid" ]]; then
            health="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid" 2>/dev/null || true)"
        fi
        [[ "$health" == healthy ]] && return 0
        ((SECONDS < deadline)) || die "$service not healthy after ${limit}s (status: ${health:-none})"
        sleep 1
    done
}

# api_get PATH: body of a 2xx GET through the web tier.
api_get() { curl -fsS --max-time 10 "$web_url$1"; }

# add_item TEXT: POSTs through the web tier, prints the new id.
add_item() {
    local body
    body="$(jq -cn --arg text "$1" '{text: $text}')"
    curl -fsS --max-time 10 -H 'Content-Type: application/json' --data "$body" \
        "$web_url/api/items" | jq -er '.id'
}

# all_ids: every item id in the database, through the web tier (keyset pages of 1000).
all_ids() {
    local before="" page ids count
    while :; do
        page="$(api_get "/api/items?limit=1000${before:+&before=$before}")"
        ids="$(jq -r '.[].id' <<<"$page")"
        [[ -n "$ids" ]] || break
        printf '%s\n' "$ids"
        count=$(wc -l <<<"$ids")
        ((count == 1000)) || break
        before="$(tail -n 1 <<<"$ids")"
    done
}

# expect_ids FILE WHAT: every id listed in FILE is in the database.
expect_ids() {
    local missing
    missing="$(comm -23 <(sort -u "$1") <(all_ids | sort -u))"
    [[ -z "$missing" ]] || die "$2: missing item ids: $(tr '\n' ' ' <<<"$missing")"
    ok "$2: all $(sort -u "$1" | wc -l) items present"
}

# check_hardening SERVICE: configuration and the live processes of its container.
check_hardening() {
    local service="$1" cid user pid uid cap
    cid="$(container_of "$service")"
    [[ -n "$cid" ]] || die "$service: no container"
    user="$(docker inspect -f '{{.Config.User}}' "$cid")"
    [[ -n "$user" && "$user" != 0* && "$user" != root* ]] || die "$service: runs as user '${user:-root}'"
    [[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$cid")" == true ]] ||
        die "$service: root filesystem is writable"
    [[ "$(docker inspect -f '{{json .HostConfig.CapDrop}}' "$cid")" == *'"ALL"'* ]] ||
        die "$service: capabilities not dropped"
    [[ "$(docker inspect -f '{{json .HostConfig.CapAdd}}' "$cid")" =~ ^(null|\[\])$ ]] ||
        die "$service: capabilities added back"
    [[ "$(docker inspect -f '{{json .HostConfig.SecurityOpt}}' "$cid")" == *no-new-privileges* ]] ||
        die "$service: no-new-privileges not set"
    # The processes themselves (read from the host's /proc when the daemon is local).
    while read -r pid; do
        [[ -r "/proc/$pid/status" ]] || { info "$service: /proc/$pid not readable here; config checks only"; break; }
        uid="$(awk '/^Uid:/ { print $3 }' "/proc/$pid/status")"
        cap="$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")"
        [[ "$uid" != 0 ]] || die "$service: process $pid runs as root"
        [[ "$cap" =~ ^0+$ ]] || die "$service: process $pid has capabilities $cap"
    done < <(docker top "$cid" -eo pid | tail -n +2)
    ok "$service: user $user, read-only rootfs, CapEff 0 for every process, no-new-privileges"
}

# --- cleanup -------------------------------------------------------------------------------

write_report() {
    local status="$1" duration=$((SECONDS - started_at)) t_json f_json
    mkdir -p "$artifacts"
    t_json="$(for k in "${!timings[@]}"; do printf '%s\n%s\n' "$k" "${timings[$k]}"; done |
        jq -Rn '[inputs] | [range(0; length; 2) as $i | {(.[$i]): (.[$i + 1] | tonumber)}] | add // {}')"
    f_json="$(for k in "${!facts[@]}"; do printf '%s\n%s\n' "$k" "${facts[$k]}"; done |
        jq -Rn '[inputs] | [range(0; length; 2) as $i | {(.[$i]): .[$i + 1]}] | add // {}')"
    jq -n --arg status "$status" --arg step "$current_step" --argjson duration "$duration" \
        --arg version "$build_version" --arg date "$build_date" --arg cold "$cold_build" \
        --argjson timings "$t_json" --argjson facts "$f_json" \
        '{status: $status, failed_step: (if $status == "passed" then null else $step end),
          duration_seconds: $duration, build_version: $version, build_date: $date,
          cold_build_forced: ($cold == "1"), timings_seconds: $timings, facts: $facts}' \
        >"$artifacts/e2e.json"
    printf '\n%-34s %s\n' "measure" "value"
    printf '%-34s %s\n' "----------------------------------" "----------"
    while IFS= read -r k; do
        [[ -n "$k" ]] && printf '%-34s %ss\n' "$k" "${timings[$k]}"
    done < <(printf '%s\n' "${!timings[@]}" | sort)
    while IFS= read -r k; do
        [[ -n "$k" ]] && printf '%-34s %s\n' "$k" "${facts[$k]}"
    done < <(printf '%s\n' "${!facts[@]}" | sort)
    printf '%-34s %ss\n' "e2e total" "$duration"
    printf 'report: %s\n' "${artifacts#"$repo_root"/}/e2e.json"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null; done
    if ((rc != 0)); then
        printf '\n!!! e2e-docker FAILED at step: %s\n' "$current_step" >&2
        mkdir -p "$artifacts"
        compose logs --no-color --timestamps >"$artifacts/compose.log" 2>&1
        compose_registry logs --no-color --timestamps >>"$artifacts/compose.log" 2>&1
        echo "--- last lines of the containers' logs (all in artifacts/docker/compose.log):" >&2
        tail -n 40 "$artifacts/compose.log" >&2
    fi
    echo
    echo "==> cleanup: compose project $project, registry, images, temp files"
    compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
    compose_registry down -v --remove-orphans --timeout 5 >/dev/null 2>&1
    docker rm -f -v "$registry_container" >/dev/null 2>&1   # -v: its anonymous storage volume
    docker image rm -f "$api_image" "$web_image" "$api_image:warm" \
        "$registry_repo/api:$image_tag" "$registry_repo/web:$image_tag" >/dev/null 2>&1
    [[ -n "$work_dir" ]] && rm -rf "$work_dir"
    if ((step_no > 0)); then
        write_report "$( ((rc == 0)) && echo passed || echo failed)"
    fi
    if ((rc == 0)); then echo "e2e-docker: PASSED"; else echo "e2e-docker: FAILED" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
# A command that fails outside die() (set -e) names itself instead of ending the run silently.
trap 'printf "    FAIL line %s: %s (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. preflight ----------------------------------------------------------------------------

for tool in docker curl jq; do
    command -v "$tool" >/dev/null || skip_or_fail "$tool is not installed"
done
docker info >/dev/null 2>&1 || skip_or_fail "the Docker daemon is not reachable (docker info failed)"
docker compose version >/dev/null 2>&1 || skip_or_fail "the docker compose plugin is missing"

step "preflight: tools, compose files, free ports"
info "$(docker version -f 'docker client {{.Client.Version}}, engine {{.Server.Version}}')"
info "$(docker compose version)"
mkdir -p "$artifacts"
work_dir="$(mktemp -d)"
for files in "compose.yaml" "compose.yaml compose.dev.yaml" "compose.registry.yaml"; do
    args=()
    for f in $files; do args+=(-f "$f"); done
    docker compose "${args[@]}" config --quiet || die "docker compose ${args[*]} config is invalid"
done
ok "compose config valid: compose.yaml, + compose.dev.yaml, compose.registry.yaml"
port_free "$web_port" || die "127.0.0.1:$web_port is in use (set WEB_PORT to a free port)"
port_free "$registry_port" || die "127.0.0.1:$registry_port is in use (set E2E_REGISTRY_PORT)"
ok "ports $web_port and $registry_port free; project $project"

# --- 2. builds -------------------------------------------------------------------------------

step "build images (compose build; BUILD_VERSION=$build_version)"
no_cache=()
facts["first build"]="build cache reused where present"
if [[ "$cold_build" == 1 ]]; then
    no_cache=(--no-cache)
    facts["first build"]="cold (--no-cache)"
    info "E2E_COLD_BUILD=1: --no-cache (also empties the cargo cache mounts)"
fi
timed "build api (first)" "$artifacts/build-api.log" compose --progress plain build "${no_cache[@]}" api
timed "build web (first)" "$artifacts/build-web.log" compose --progress plain build "${no_cache[@]}" web
timed "build api (no change)" "$artifacts/build-api-nochange.log" compose --progress plain build api

step "rebuild the API after editing one handler (copy of the build context)"
context_copy="$work_dir/context"
mkdir -p "$context_copy/web"
cp -a Cargo.toml Cargo.lock .dockerignore api "$context_copy/"
cp -a web/static web/templates "$context_copy/web/"
handler="api/src/routes/items.rs"
[[ -f "$context_copy/$handler" ]] || handler="api/src/main.rs"
# A code change, not just a comment: a new public function must be compiled and linked.
printf '\n#[doc(hidden)]\npub fn e2e_rebuild_marker() -> &%sstatic str {\n    "%s"\n}\n' "'" "$run_id" \
    >>"$context_copy/$handler"
info "appended a function to $handler (in a copy of the context under $work_dir)"
timed "build api (one handler edited)" "$artifacts/build-api-edit.log" \
    docker build --progress plain -f api/Dockerfile -t "$api_image:warm" "$context_copy"
grep -q 'Compiling items-api' "$artifacts/build-api-edit.log" ||
    die "the edit of $handler did not recompile items-api (stale cache?)"
if grep -E 'Compiling (tokio|axum|rusqlite|libsqlite3-sys) ' "$artifacts/build-api-edit.log"; then
    die "the edit of one handler recompiled dependencies: the cargo cache mount is not reused"
fi
ok "only items-api was recompiled"
docker image rm "$api_image:warm" >/dev/null

# --- 3. image checks -------------------------------------------------------------------------

step "image checks: size, labels, user, health check, build metadata"
for image in "$api_image" "$web_image"; do
    size="$(docker image inspect -f '{{.Size}}' "$image")"
    mb="$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1000000 }')"
    facts["image size ${image##*-}"]="${mb} MB"
    labels="$(docker image inspect -f '{{json .Config.Labels}}' "$image")"
    for key in title description licenses source; do
        jq -e --arg k "org.opencontainers.image.$key" '.[$k] | length > 0' <<<"$labels" >/dev/null ||
            die "$image: label org.opencontainers.image.$key missing"
    done
    jq -e --arg v "$build_version" --arg d "$build_date" --arg r "$vcs_ref" \
        '.["org.opencontainers.image.version"] == $v and .["org.opencontainers.image.created"] == $d
         and .["org.opencontainers.image.revision"] == $r' <<<"$labels" >/dev/null ||
        die "$image: version/created/revision labels do not match the build args: $labels"
    user="$(docker image inspect -f '{{.Config.User}}' "$image")"
    [[ -n "$user" && "$user" != 0* && "$user" != root* ]] || die "$image: runs as '${user:-root}'"
    [[ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$image")" =~ healthz|healthcheck ]] ||
        die "$image: no HEALTHCHECK"
    ok "$image: ${mb} MB, user $user, OCI labels and HEALTHCHECK present"
done
api_size="$(docker image inspect -f '{{.Size}}' "$api_image")"
((api_size <= max_api_mb * 1000000)) || die "$api_image is ${facts["image size api"]}, over the ${max_api_mb} MB budget"
ok "API image within ${max_api_mb} MB"
docker image inspect -f '{{json .Config.Env}}' "$api_image" | jq -e \
    'index("BIND_ADDR=0.0.0.0:8000") and index("DB_PATH=/data/app.db")' >/dev/null ||
    die "$api_image: BIND_ADDR/DB_PATH not set in the image"
ok "API image sets BIND_ADDR and DB_PATH"

# --- 4. the stack --------------------------------------------------------------------------

step "docker compose up -d --wait"
timed "compose up (first start)" "$artifacts/up.log" compose up -d --wait --wait-timeout 120
ok "api and web healthy"

step "smoke test through the web tier ($web_url)"
SMOKE_EXPECT_VERSION="$build_version" "$repo_root/scripts/smoke.sh" "$web_url"
health="$(api_get /api/health)"
jq -e --arg v "$build_version" --arg d "$build_date" --arg r "$vcs_ref" \
    '.version == $v and .build_date == $d and .vcs_ref == $r and .environment == "production"' \
    <<<"$health" >/dev/null || die "/api/health does not show the baked-in build: $health"
ok "/api/health: version $build_version, build_date $build_date, vcs_ref $vcs_ref, production"

step "hardening: non-root, read-only root filesystem, no capabilities; only web published"
check_hardening api
check_hardening web
api_cid="$(container_of api)"
[[ "$(docker inspect -f '{{json .NetworkSettings.Ports}}' "$api_cid")" != *HostPort* ]] ||
    die "api publishes a port in compose.yaml"
if compose exec -T web sh -c 'touch /usr/share/nginx/html/x' 2>/dev/null; then
    die "web: could write to its root filesystem"
fi
compose exec -T web grep -q "proxy_pass" /etc/nginx/conf.d/default.conf ||
    die "web: /etc/nginx/conf.d/default.conf is not our rendered template"
ok "api has no published port; web cannot write its root filesystem; template rendered to the tmpfs"

# --- 5. persistence --------------------------------------------------------------------------

step "persistence: restart the API container, then down and up"
kept="$work_dir/kept-ids"
for n in 1 2 3 4 5; do add_item "persist $n $run_id" >>"$kept"; done
ok "added 5 items: $(tr '\n' ' ' <"$kept")"
timed "restart api" "$artifacts/restart.log" compose restart api
wait_healthy api
expect_ids "$kept" "after restarting the api container"
timed "compose down" "$artifacts/down.log" compose down
docker volume inspect "${project}_db-data" >/dev/null || die "the volume ${project}_db-data is gone after down"
timed "compose up (existing volume)" "$artifacts/up2.log" compose up -d --wait --wait-timeout 120
expect_ids "$kept" "after down and up"

step "backup and restore with items-api (the README's commands)"
compose exec -T api items-api backup /data/backups/e2e.db
compose cp api:/data/backups/e2e.db "$work_dir/backup.db"
[[ -s "$work_dir/backup.db" ]] || die "the backup copied out of the volume is empty"
ok "backup: $(stat -c %s "$work_dir/backup.db") bytes copied to the host"
after_backup="$(add_item "added after the backup $run_id")"
compose stop api
compose cp "$work_dir/backup.db" api:/data/restore.db
compose run --rm --no-deps api restore /data/restore.db
compose start api
wait_healthy api
expect_ids "$kept" "after restore"
if grep -qx "$after_backup" <<<"$(all_ids)"; then
    die "item $after_backup, added after the backup, is still there after the restore"
fi
ok "item $after_backup (added after the backup) is gone: the restore replaced the database"

step "compose.dev.yaml on top: API also on 127.0.0.1, development settings, same volume"
dev_api_port="$(free_port)"
timed "compose up (dev override)" "$artifacts/up-dev.log" \
    env API_PORT="$dev_api_port" docker compose -f compose.yaml -f compose.dev.yaml up -d --wait --wait-timeout 120
dev_health="$(curl -fsS --max-time 10 "http://127.0.0.1:$dev_api_port/api/health")" ||
    die "the API is not reachable on 127.0.0.1:$dev_api_port with compose.dev.yaml"
jq -e '.environment == "development"' <<<"$dev_health" >/dev/null ||
    die "compose.dev.yaml: APP_ENV is not development: $dev_health"
expect_ids "$kept" "with compose.dev.yaml (same volume)"
dev_env="$(docker inspect -f '{{json .Config.Env}}' "$(container_of api)")"
jq -e 'index("RUST_LOG=debug") and index("LOG_FORMAT=pretty")' <<<"$dev_env" >/dev/null ||
    die "compose.dev.yaml: RUST_LOG=debug / LOG_FORMAT=pretty not set: $dev_env"
# Pretty logs: "<time>  INFO target: message", not JSON objects. (Whole output first: `grep -q`
# reading a pipe could stop early and fail the pipeline under pipefail.)
grep -Eq '^[0-9TZ:.-]+ +INFO ' <<<"$(compose_dev logs --no-color --no-log-prefix api)" ||
    die "compose.dev.yaml: the API does not log in the pretty format"
ok "API on 127.0.0.1:$dev_api_port, environment development, RUST_LOG=debug, pretty logs"
timed "compose up (back to compose.yaml)" "$artifacts/up3.log" compose up -d --wait --wait-timeout 120
port_free "$dev_api_port" || die "127.0.0.1:$dev_api_port still open after leaving compose.dev.yaml"
ok "back on compose.yaml: the API port is closed again"

# --- 6. SIGKILL under load -----------------------------------------------------------------

step "SIGKILL the API under write load ($load_workers writers x $load_per_worker items)"
load_dir="$work_dir/load"
mkdir -p "$load_dir"
writer() {
    local w="$1" n code id
    for ((n = 1; n <= load_per_worker; n++)); do
        code="$(curl -s -o "$load_dir/body.$w" -w '%{http_code}' --max-time 10 \
            -H 'Content-Type: application/json' --data "{\"text\":\"load $w-$n\"}" \
            "$web_url/api/items" || true)"
        if [[ "$code" == 201 ]] && id="$(jq -er '.id' "$load_dir/body.$w" 2>/dev/null)"; then
            echo "$id" >>"$load_dir/acked.$w"
        else
            echo "${code:-000}" >>"$load_dir/failed.$w"
        fi
    done
}
for ((w = 1; w <= load_workers; w++)); do
    # Both files exist from the start: a run in which no write fails is a success, not a missing file.
    : >"$load_dir/acked.$w"
    : >"$load_dir/failed.$w"
    writer "$w" &
    load_pids+=("$!")
done
kill_after=$((load_workers * load_per_worker / 4))
deadline=$((SECONDS + 60))
until (($(cat "$load_dir"/acked.* | wc -l) >= kill_after)); do
    ((SECONDS < deadline)) || die "the writers got fewer than $kill_after acknowledgements in 60s"
    sleep 0.05
done
api_cid="$(container_of api)"
docker kill -s KILL "$api_cid" >/dev/null
acked_at_kill=$(cat "$load_dir"/acked.* | wc -l)
ok "SIGKILL sent after $acked_at_kill acknowledged writes"
sleep 3
if [[ "$(docker inspect -f '{{.State.Running}}' "$api_cid")" == true ]]; then
    info "the restart policy brought the container back"
else
    info "docker kill counts as a manual stop for the restart policy: starting it again"
    compose start api >/dev/null
fi
wait_healthy api
for pid in "${load_pids[@]}"; do wait "$pid"; done
load_pids=()
cat "$load_dir"/acked.* >"$load_dir/acked"
acked=$(wc -l <"$load_dir/acked")
failed=$(cat "$load_dir"/failed.* | wc -l)
info "writes: $acked acknowledged (201), $failed not (API down)"
((acked > acked_at_kill)) || die "no write was acknowledged after the restart: the load did not span the kill"
facts["sigkill: acknowledged writes"]="$acked"
facts["sigkill: writes refused while down"]="$failed"
expect_ids "$load_dir/acked" "after SIGKILL"
facts["sigkill: acknowledged writes lost"]="0"

step "down -v removes the data"
timed "compose down -v" "$artifacts/down-v.log" compose down -v
if docker volume inspect "${project}_db-data" >/dev/null 2>&1; then
    die "the volume ${project}_db-data still exists after down -v"
fi
ok "volume ${project}_db-data removed"

# --- 7. registry -----------------------------------------------------------------------------

step "push to a local registry on 127.0.0.1:$registry_port, remove local copies, run compose.registry.yaml"
docker run -d --name "$registry_container" -p "127.0.0.1:$registry_port:5000" "$registry_image" >/dev/null
deadline=$((SECONDS + 30))
until curl -fs -o /dev/null "http://127.0.0.1:$registry_port/v2/"; do
    ((SECONDS < deadline)) || die "the registry did not answer on 127.0.0.1:$registry_port"
    sleep 0.5
done
docker tag "$api_image" "$registry_repo/api:$image_tag"
docker tag "$web_image" "$registry_repo/web:$image_tag"
timed "push api" "$artifacts/push-api.log" docker push "$registry_repo/api:$image_tag"
timed "push web" "$artifacts/push-web.log" docker push "$registry_repo/web:$image_tag"
docker image rm "$api_image" "$web_image" "$registry_repo/api:$image_tag" "$registry_repo/web:$image_tag" >/dev/null
for image in "$registry_repo/api:$image_tag" "$registry_repo/web:$image_tag"; do
    if docker image inspect "$image" >/dev/null 2>&1; then die "$image still present locally"; fi
done
ok "pushed, and removed locally"
export REGISTRY="$registry_repo" IMAGE_TAG="$image_tag"
timed "registry: pull + up" "$artifacts/up-registry.log" compose_registry up -d --wait --wait-timeout 120
grep -qi 'pull' "$artifacts/up-registry.log" || die "compose.registry.yaml did not pull the images"
SMOKE_EXPECT_VERSION="$build_version" "$repo_root/scripts/smoke.sh" "$web_url"
ok "the stack from the registry works and shows version $build_version"
compose_registry down -v >/dev/null 2>&1

current_step="done"
