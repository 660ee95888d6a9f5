#!/usr/bin/env bash
# Build outpost/base-hub:bookworm: the local base image (base-image.sh) plus Debian's mosquitto,
# for the edge hub's image (modules/edge-hub). Image builds have no network, so the broker comes
# from the rootfs, not from an apt-get in the Dockerfile. Same caching and idempotence as
# base-image.sh (its own key and tarball).
#
# Environment: OUTPOST_HUB_BASE_IMAGE (default outpost/base-hub:bookworm); the rest as base-image.sh.
set -euo pipefail
export OUTPOST_BASE_IMAGE=${OUTPOST_HUB_BASE_IMAGE:-outpost/base-hub:bookworm}
export OUTPOST_BASE_EXTRA_PACKAGES=mosquitto
exec "$(dirname "$0")/base-image.sh" "$@"
