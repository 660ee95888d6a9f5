#!/usr/bin/env bash
# Build the test images in tests/images/<name>/ as outpost-test/<name>:1 and :2 (same program; :2
# differs in its label outpost.test.image-version and env OUTPOST_TEST_IMAGE_VERSION, so its image
# id differs too: use it for update/rollback tests).
#
# Idempotent: an image is rebuilt only when its directory, the base image or the version changed
# (label outpost.test.build-key). Needs a running engine (scripts/services/docker.sh) and the base
# image (scripts/services/base-image.sh). Extra arguments: image names to build (default: all).
#
# Environment: OUTPOST_BASE_IMAGE (default outpost/base:bookworm; any debian:bookworm-slim-like
#              image with python3 works, e.g. debian:bookworm-slim where a registry is reachable
#              and python3 is added).
set -euo pipefail
cd "$(dirname "$0")"

BASE=${OUTPOST_BASE_IMAGE:-outpost/base:bookworm}
VERSIONS=(1 2)
DOCKER=/usr/bin/docker  # Debian's client (see scripts/services/docker.sh)

say() { echo "build.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

timeout 10 "$DOCKER" info >/dev/null 2>&1 || die "Docker engine not answering: run scripts/services/docker.sh first"
base_id=$("$DOCKER" image inspect --format '{{.Id}}' "$BASE" 2>/dev/null) \
    || die "base image $BASE missing: run scripts/services/base-image.sh first"

if [ $# -gt 0 ]; then names=("$@"); else
    names=()
    for d in */; do [ -f "$d/Dockerfile" ] && names+=("${d%/}"); done
fi

t_all=$SECONDS
built=0
for name in "${names[@]}"; do
    [ -f "$name/Dockerfile" ] || die "no such test image: tests/images/$name/Dockerfile"
    # Key: every file of the build context (names and contents), the base image id, the version.
    context_sum=$(cd "$name" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16)
    for v in "${VERSIONS[@]}"; do
        tag="outpost-test/$name:$v"
        key=$(printf '%s\n' "$context_sum" "$base_id" "$v" | sha256sum | cut -c1-16)
        current=$("$DOCKER" image inspect --format '{{index .Config.Labels "outpost.test.build-key"}}' "$tag" 2>/dev/null || true)
        [ "$current" = "$key" ] && continue
        t0=$SECONDS
        # Classic builder: no buildx plugin needed, and the build is a couple of thin layers.
        if ! out=$(DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --build-arg "BASE=$BASE" --build-arg "VERSION=$v" \
                --label "outpost.test.build-key=$key" --tag "$tag" "$name" 2>&1); then
            echo "$out" >&2
            die "docker build of $tag failed"
        fi
        say "built $tag in $((SECONDS - t0)) s"
        built=$((built + 1))
    done
done
# Images replaced by a rebuild are now dangling: drop them (only images carrying our label).
[ $built -eq 0 ] || "$DOCKER" image prune --force --filter label=outpost.test.build-key >/dev/null
say "${#names[@]} test images x ${#VERSIONS[@]} versions ready ($built built) in $((SECONDS - t_all)) s"
