#!/bin/sh
# azd's predeploy hook of the api service (azure.yaml). On Postgres it runs the migration job with
# the API image azd has just pushed, before the API gets that image (the API does not migrate at
# start there), and fails the deploy when the migration fails. On SQLite there is no job.
# It talks to Azure Resource Manager with azd's own sign-in (`azd auth token`), so it needs curl and
# jq but no Azure CLI login; azd passes the environment's values (migrateJobName, the image, the
# subscription and resource group) as environment variables.
set -eu

job="${migrateJobName:-}"
if [ -z "$job" ]; then
  echo "no migration job (SQLite backend): nothing to migrate"
  exit 0
fi
image="${SERVICE_API_IMAGE_NAME:-}"
if [ -z "$image" ]; then
  echo "SERVICE_API_IMAGE_NAME is not set: azd has not published the API image" >&2
  exit 1
fi

api_version=2026-01-01
job_url="https://management.azure.com/subscriptions/${AZURE_SUBSCRIPTION_ID}/resourceGroups/${AZURE_RESOURCE_GROUP}/providers/Microsoft.App/jobs/${job}"
token="$(azd auth token --output json | jq -r .token)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# arm METHOD URL [BODY]: the response body goes to $scratch/body, the headers to $scratch/headers;
# prints the HTTP status.
arm() {
  if [ $# -ge 3 ]; then
    curl -sS -X "$1" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -D "$scratch/headers" -o "$scratch/body" -w '%{http_code}' --data "$3" "$2"
  else
    curl -sS -X "$1" -H "Authorization: Bearer $token" \
      -D "$scratch/headers" -o "$scratch/body" -w '%{http_code}' "$2"
  fi
}

fail() {
  echo "$1" >&2
  cat "$scratch/body" >&2 || true
  exit 1
}

# Waits for the job's own provisioning (an update is a long-running operation).
wait_for_job() {
  tries=0
  while :; do
    [ "$(arm GET "$job_url?api-version=$api_version")" = 200 ] || fail "cannot read job $job"
    state="$(jq -r '.properties.provisioningState' "$scratch/body")"
    case "$state" in
      Succeeded) return 0 ;;
      Failed | Canceled) fail "job $job: provisioning $state" ;;
    esac
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || fail "job $job still $state after 10 minutes"
    sleep 10
  done
}

echo "$job <- $image"
wait_for_job
patch="$(jq -c --arg image "$image" \
  '{properties: {template: (.properties.template | .containers[0].image = $image)}}' "$scratch/body")"
status="$(arm PATCH "$job_url?api-version=$api_version" "$patch")"
case "$status" in 200 | 201 | 202) ;; *) fail "updating job $job: HTTP $status" ;; esac
wait_for_job

# Start an execution; its name comes back at once (200) or from the Location to poll (202).
status="$(arm POST "$job_url/start?api-version=$api_version" '{}')"
case "$status" in
  200) execution="$(jq -r '.name' "$scratch/body")" ;;
  202)
    location="$(tr -d '\r' < "$scratch/headers" | sed -n 's/^[Ll]ocation: //p' | tail -n 1)"
    tries=0
    while [ "$(arm GET "$location")" != 200 ]; do
      tries=$((tries + 1))
      [ "$tries" -lt 30 ] || fail "job $job: the execution did not start"
      sleep 5
    done
    execution="$(jq -r '.name' "$scratch/body")"
    ;;
  *) fail "starting job $job: HTTP $status" ;;
esac

echo "waiting for $execution"
tries=0
while :; do
  [ "$(arm GET "$job_url/executions/$execution?api-version=$api_version")" = 200 ] ||
    fail "cannot read execution $execution"
  state="$(jq -r '.properties.status' "$scratch/body")"
  case "$state" in
    Succeeded)
      echo "$execution: migrated"
      exit 0
      ;;
    Failed | Stopped | Degraded)
      echo "$execution: $state (az containerapp job execution show -n $job -g $AZURE_RESOURCE_GROUP --job-execution-name $execution; the log is in Log Analytics)" >&2
      exit 1
      ;;
  esac
  tries=$((tries + 1))
  [ "$tries" -lt 90 ] || fail "$execution still $state after 15 minutes"
  sleep 10
done
