#!/usr/bin/env bash
# Sourced by publish.yml and deploy-azure.yml: which commit a published image was built from, so
# that neither a moving tag nor production ever goes back to an older commit. Needs `docker buildx`
# and jq, and a login to the registry for private packages.

# Prints the commit IMAGE (name:tag or name@sha256:digest) was built from: the index annotation
# publish.yml writes, else the org.opencontainers.image.revision label of its linux images (images
# published before the annotation existed). Prints nothing when neither names a commit.
# Returns 2 when IMAGE does not exist, 1 when the registry cannot be read.
image_revision() {
  local image="$1" errors manifest config revision
  errors="$(mktemp)"
  if ! manifest="$(docker buildx imagetools inspect "$image" --format '{{json .Manifest}}' 2> "$errors")"; then
    if grep -qi 'not found' "$errors"; then
      rm -f "$errors"
      return 2
    fi
    cat "$errors" >&2
    rm -f "$errors"
    return 1
  fi
  revision="$(jq -r '.annotations["org.opencontainers.image.revision"] // empty' <<< "$manifest")"
  if [ -z "$revision" ]; then
    if ! config="$(docker buildx imagetools inspect "$image" --format '{{json .Image}}' 2> "$errors")"; then
      cat "$errors" >&2
      rm -f "$errors"
      return 1
    fi
    # One platform: the image config itself; several: a map from platform to config.
    revision="$(jq -r 'if has("rootfs") then . else ([to_entries[] | select(.key | startswith("linux/")) | .value] | first) end
      | .config.Labels["org.opencontainers.image.revision"] // empty' <<< "$config")"
  fi
  rm -f "$errors"
  # The Dockerfiles default VCS_REF to "unknown": only a full commit id counts.
  if [[ "$revision" =~ ^[0-9a-f]{40}$ ]]; then
    echo "$revision"
  fi
}

# True when commit NEW is OLD or descends from it. Needs the history of both (fetch-depth: 0); a
# commit this clone does not know (history rewritten) is never a descendant.
descends_from() {
  local new="$1" old="$2"
  git cat-file -e "${old}^{commit}" 2> /dev/null && git merge-base --is-ancestor "$old" "$new"
}
