#!/usr/bin/env bash
# Sourced by deploy-azure.yml: `deploy APP IMAGE` sets one container app's image and waits for the
# revision that creates. Needs AZURE_RESOURCE_GROUP; az logged in with the containerapp extension.

# Waits until REVISION of APP is provisioned and healthy. Gives up at once when it is degraded,
# unhealthy or failed (its probes keep failing, its containers crash), or after 10 minutes.
wait_for_revision() {
  local app="$1" revision="$2" deadline=$((SECONDS + 600)) state
  while :; do
    state="$(az containerapp revision show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
      --revision "$revision" --output json \
      --query '{provisioning: properties.provisioningState, health: properties.healthState, running: properties.runningState}')"
    echo "$revision: $(jq -c . <<< "$state")"
    if jq -e '.provisioning == "Provisioned" and .health == "Healthy"' <<< "$state" > /dev/null; then
      return 0
    fi
    if jq -e '.provisioning == "Failed" or .running == "Failed" or .running == "Degraded" or .health == "Unhealthy"' \
      <<< "$state" > /dev/null; then
      echo "::error::$revision is not healthy: $(jq -c . <<< "$state")"
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "::error::$revision did not become healthy within 10 minutes"
      break
    fi
    sleep 10
  done
  az containerapp logs show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --type system --tail 50 --output table || true
  return 1
}

# Sets APP's image to IMAGE and waits for its new revision to be healthy.
deploy() {
  local app="$1" image="$2" revision
  echo "::group::$app <- $image"
  az containerapp update --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" --image "$image"
  revision="$(az containerapp show --name "$app" --resource-group "$AZURE_RESOURCE_GROUP" \
    --query properties.latestRevisionName --output tsv)"
  if ! wait_for_revision "$app" "$revision"; then
    echo "::endgroup::"
    return 1
  fi
  echo "::endgroup::"
}
