#!/usr/bin/env bash
# Sourced by deploy-azure.yml: the Container Apps side of a deploy. `deploy APP IMAGE SECONDS` sets
# one app's image and waits for the revision that creates; `migrate JOB IMAGE SECONDS` runs the
# migration job with the new API image; `restore APP IMAGE SECONDS` puts an app's previous image
# back. Needs AZURE_RESOURCE_GROUP; az logged in with the containerapp extension.
#
# Every az call has a deadline of its own (az_within), so a hung call fails the function in time
# for the rollback instead of running into the step's timeout-minutes.

# Seconds between two looks at a revision or a job execution, and between two tries of a restore.
POLL_SECONDS=10
RETRY_SECONDS=5
# `az containerapp update` returns once the new revision is provisioned (not yet healthy).
UPDATE_SECONDS=150

az_within() {
  local seconds="$1"
  shift
  timeout --kill-after=10 "$seconds" az "$@"
}

# The restarts of every container of REVISION's replicas, added up (0 while it has none yet).
revision_restarts() {
  local app="$1" revision="$2" counts
  counts="$(az_within 60 containerapp replica list --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --revision "$revision" --query '[].properties.containers[].restartCount' --output json)" || return 1
  jq 'add // 0' <<< "$counts"
}

# Waits until REVISION of APP is provisioned and healthy. Gives up at once when it cannot become
# so: provisioning failed; running state Failed, Degraded or ActivationFailed (the last one is
# missing from the API's documented values but is what a revision whose replicas never get ready
# ends in); health Unhealthy; or its containers' restart count grew since the first look, which is
# what a crashing binary or a failing startup or liveness probe looks like long before the platform
# gives the revision up. Gives up after SECONDS too.
wait_for_revision() {
  local app="$1" revision="$2" deadline=$((SECONDS + $3)) state restarts first_restarts=""
  while :; do
    state="$(az_within 60 containerapp revision show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
      --revision "$revision" --output json \
      --query '{provisioning: properties.provisioningState, health: properties.healthState, running: properties.runningState, details: properties.runningStateDetails}')" ||
      state='{}'
    restarts="$(revision_restarts "$app" "$revision")" || restarts=""
    first_restarts="${first_restarts:-$restarts}"
    echo "$revision: $(jq -c --arg restarts "${restarts:-unknown}" '. + {restarts: $restarts}' <<< "$state")"
    if jq -e '.provisioning == "Provisioned" and .health == "Healthy"' <<< "$state" > /dev/null; then
      return 0
    fi
    if jq -e '.provisioning == "Failed" or .health == "Unhealthy"
        or (.running | IN("Failed", "Degraded", "ActivationFailed"))' <<< "$state" > /dev/null; then
      echo "::error::$revision cannot become healthy: $(jq -c . <<< "$state")"
      break
    fi
    if [ -n "$restarts" ] && [ "$restarts" -gt "$first_restarts" ]; then
      echo "::error::$revision: its containers restarted (count $first_restarts -> $restarts): a crash, or a failing startup or liveness probe"
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "::error::$revision did not become healthy within $3 s"
      break
    fi
    sleep "$POLL_SECONDS"
  done
  az_within 60 containerapp logs show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --type system --tail 50 --output table || true
  return 1
}

# Sets APP's image to IMAGE and waits up to SECONDS for its new revision to be healthy.
deploy() {
  local app="$1" image="$2" seconds="$3" revision
  echo "::group::$app <- $image"
  if ! az_within "$UPDATE_SECONDS" containerapp update --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --image "$image"; then
    echo "::error::$app: the update failed or took longer than $UPDATE_SECONDS s"
    echo "::endgroup::"
    return 1
  fi
  if ! revision="$(az_within 60 containerapp show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --query properties.latestRevisionName --output tsv)" || ! wait_for_revision "$app" "$revision" "$seconds"; then
    echo "::endgroup::"
    return 1
  fi
  echo "::endgroup::"
}

# Runs the Container Apps job JOB (the schema migrations, which only the Postgres backend has) with
# IMAGE and waits up to SECONDS for that execution to succeed. Without the job there is nothing to
# run. Migrations only add to the schema, so a rollback of the apps leaves them in place.
migrate() {
  local job="$1" image="$2" deadline=$((SECONDS + $3)) jobs execution status
  if ! jobs="$(az_within 60 containerapp job list --resource-group "$AZURE_RESOURCE_GROUP" \
    --query '[].name' --output tsv)"; then
    echo "::error::cannot list the Container Apps jobs of $AZURE_RESOURCE_GROUP"
    return 1
  fi
  if ! grep -Fxq -- "$job" <<< "$jobs"; then
    echo "no job $job in $AZURE_RESOURCE_GROUP: nothing to migrate"
    return 0
  fi
  echo "::group::$job <- $image"
  if ! az_within "$UPDATE_SECONDS" containerapp job update --name "$job" --resource-group "$AZURE_RESOURCE_GROUP" \
    --image "$image" ||
    ! execution="$(az_within 60 containerapp job start --name "$job" --resource-group "$AZURE_RESOURCE_GROUP" \
      --query name --output tsv)"; then
    echo "::error::$job: cannot set its image or start it"
    echo "::endgroup::"
    return 1
  fi
  while :; do
    status="$(az_within 60 containerapp job execution show --name "$job" --resource-group "$AZURE_RESOURCE_GROUP" \
      --job-execution-name "$execution" --query properties.status --output tsv)" || status=""
    echo "$execution: ${status:-unknown}"
    case "$status" in
      Succeeded)
        echo "::endgroup::"
        return 0
        ;;
      Failed | Stopped | Degraded)
        echo "::error::the migration $execution ended $status; the apps keep their images"
        break
        ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "::error::the migration $execution did not finish within $3 s (it may still be running)"
      break
    fi
    sleep "$POLL_SECONDS"
  done
  echo "::endgroup::"
  return 1
}

# Puts IMAGE back on APP unless it runs it already, within SECONDS. An update that was cancelled
# half-way may still be going on in Azure (a second one is refused meanwhile), so this first waits
# for the app to settle, then retries the update until the deadline.
restore() {
  local app="$1" image="$2" deadline=$((SECONDS + $3)) app_state revision
  echo "::group::restore $app <- $image"
  while :; do
    app_state="$(az_within 30 containerapp show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" --output json \
      --query '{provisioning: properties.provisioningState, image: properties.template.containers[0].image, revision: properties.latestRevisionName}')" ||
      app_state='{}'
    if jq -e --arg image "$image" '.provisioning != "InProgress" and .image == $image' <<< "$app_state" > /dev/null; then
      echo "$app runs $image"
      break
    fi
    if jq -e '.provisioning != null and .provisioning != "InProgress"' <<< "$app_state" > /dev/null &&
      az_within 90 containerapp update --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" --image "$image"; then
      continue
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "::error::$app: could not put $image back within $3 s"
      echo "::endgroup::"
      return 1
    fi
    sleep "$RETRY_SECONDS"
  done
  revision="$(jq -r '.revision' <<< "$app_state")"
  if ! wait_for_revision "$app" "$revision" "$((deadline > SECONDS ? deadline - SECONDS : 0))"; then
    echo "::endgroup::"
    return 1
  fi
  echo "::endgroup::"
}
