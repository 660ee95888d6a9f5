#!/usr/bin/env bash
# Build the base images `outpost build` uses by default, one per target platform:
#   outpost/base:bookworm-amd64  outpost/base:bookworm-arm64  outpost/base:bookworm-armhf
# (Debian bookworm + python3, python3-venv, ca-certificates; armhf also python3-numpy, because PyPI
# has no armv7 numpy wheel). Foreign ones are built under QEMU (qemu.sh, run first). Idempotent and
# cached like base-image.sh, which does the work: a second run takes a second.
#
#   scripts/services/base-images.sh              all three
#   scripts/services/base-images.sh arm64        only these Debian architectures
# OUTPOST_BASE_HUB=1 builds the edge hub's bases instead (outpost/base-hub:bookworm-ARCH: plus
# Debian's mosquitto, and on armhf python3-cffi and python3-crc32c; modules/edge-hub/module.json names them).
# Environment: OUTPOST_BASE_PREFIX (default outpost/base:bookworm-, or outpost/base-hub:bookworm-);
#              the rest as base-image.sh.
set -euo pipefail
here=$(dirname "$0")
HUB=${OUTPOST_BASE_HUB:-0}
if [ "$HUB" = 1 ]; then PREFIX=${OUTPOST_BASE_PREFIX:-outpost/base-hub:bookworm-}; else PREFIX=${OUTPOST_BASE_PREFIX:-outpost/base:bookworm-}; fi
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 armhf)
host=$(dpkg --print-architecture)
for arch in "${archs[@]}"; do
    [ "$arch" = "$host" ] || "$here/qemu.sh"
    # armhf: what PyPI has no armv7 wheel for comes from Debian (outpost build finds these packages in
    # the base image and installs no wheel for them): numpy for the modules; cffi (cryptography's
    # backend) and crc32c (kafka-python's checksum) for the hub.
    extra=""
    [ "$arch" = armhf ] && extra=python3-numpy
    if [ "$HUB" = 1 ]; then
        extra=mosquitto
        [ "$arch" = armhf ] && extra=mosquitto,python3-cffi,python3-crc32c
    fi
    OUTPOST_BASE_ARCH=$arch OUTPOST_BASE_EXTRA_PACKAGES=$extra OUTPOST_BASE_IMAGE="$PREFIX$arch" "$here/base-image.sh"
done
