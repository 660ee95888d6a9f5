#!/usr/bin/env bash
# Build the local base image outpost/base:bookworm (Debian bookworm + python3, python3-venv,
# ca-certificates), the stand-in for debian:bookworm-slim on machines where no image registry is
# reachable. Dockerfiles take it as `ARG BASE=outpost/base:bookworm` / `FROM ${BASE}`.
#
# Idempotent and cached: the image is rebuilt only when missing or built from a different recipe
# (label outpost.base.key), and the rootfs tarball is cached under /var/cache/outpost/ keyed by that
# recipe, so a second run on the same machine is instant. Needs a running engine (docker.sh) and
# mmdebstrap; runs as root.
#
# Environment: OUTPOST_BASE_IMAGE (default outpost/base:bookworm),
#              OUTPOST_BASE_EXTRA_PACKAGES (comma-separated Debian packages added to the rootfs, e.g.
#              mosquitto for the hub's base, see base-image-hub.sh; default none),
#              OUTPOST_BASE_ARCH (Debian architecture of the image: amd64, arm64, armhf, ...; default this
#              machine's; a foreign one is built under QEMU emulation, see qemu.sh, and tagged with its
#              Docker platform by a BuildKit build),
#              OUTPOST_DEBIAN_MIRROR (default: the bookworm mirror apt uses on this machine),
#              OUTPOST_CACHE_DIR (default /var/cache/outpost).
set -euo pipefail

IMAGE=${OUTPOST_BASE_IMAGE:-outpost/base:bookworm}
CACHE=${OUTPOST_CACHE_DIR:-/var/cache/outpost}
SUITE=bookworm
VARIANT=apt
INCLUDE=python3,python3-venv,ca-certificates
EXTRA=${OUTPOST_BASE_EXTRA_PACKAGES:-}
EXTRA=${EXTRA// /}
[ -z "$EXTRA" ] || INCLUDE="$INCLUDE,$EXTRA"
# Tarballs of each package set are cached side by side (the plain base keeps its historical name).
FLAVOR=${EXTRA:+-${EXTRA//,/+}}
DOCKER=/usr/bin/docker  # Debian's client (see docker.sh)
# Keep it slim like debian:bookworm-slim: no man pages, docs (except copyrights) or translations.
DPKG_OPTS=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/locale/*'
    'path-exclude=/usr/share/info/*'
)
# merged-/usr set up by mmdebstrap's hook instead of the usrmerge package (which drags in perl).
HOOKS=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
RECIPE_VERSION=1  # bump when the recipe below changes in a way the key does not capture

say() { echo "base-image.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap builds the rootfs as root)"
[ -x "$DOCKER" ] || die "$DOCKER not found: run scripts/services/docker.sh first"
timeout 10 "$DOCKER" info >/dev/null 2>&1 || die "Docker engine not answering: run scripts/services/docker.sh first"

arch=${OUTPOST_BASE_ARCH:-$(dpkg --print-architecture)}
case "$arch" in
    amd64) platform=linux/amd64 ;;
    arm64) platform=linux/arm64 ;;
    armhf) platform=linux/arm/v7 ;;
    i386) platform=linux/386 ;;
    *) die "OUTPOST_BASE_ARCH=$arch: no Docker platform known for it (amd64, arm64, armhf, i386)" ;;
esac
foreign=0
[ "$arch" = "$(dpkg --print-architecture)" ] || foreign=1
key=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$VARIANT" "$INCLUDE" "$arch" "${DPKG_OPTS[@]}" "${HOOKS[@]}" \
    | sha256sum | cut -c1-16)

current=$("$DOCKER" image inspect --format '{{index .Config.Labels "outpost.base.key"}}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$key" ]; then
    say "$IMAGE is up to date (key $key)"
    exit 0
fi

# One build at a time; the cache directory is shared.
mkdir -p "$CACHE"
exec 9>"$CACHE/.base-image.lock"
flock -w 600 9 || die "timed out waiting for another base-image.sh to finish"

tarball="$CACHE/rootfs-$SUITE-$arch$FLAVOR-$key.tar"
if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap not installed: run scripts/services/docker.sh first"

    # Use the mirrors apt uses on this machine (they work without internet), for the main suite,
    # -updates and -security. Both apt source formats are read: one-line and deb822 (.sources).
    mirror_for() {  # $1 = suite; prints the first URI apt has for it, if any
        local f
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            case "$f" in
            *.sources)
                awk -v want="$1" '
                    function flush() { if (types ~ /(^| )deb( |$)/) for (i = 1; i <= ns; i++) if (s[i] == want) { print uri; exit } ;
                                       types = ""; uri = ""; ns = 0 }
                    /^[ \t]*$/ { flush(); next }
                    /^[ \t]*#/ { next }
                    tolower($1) == "types:"  { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; types = types " " }
                    tolower($1) == "uris:"   { uri = $2 }
                    tolower($1) == "suites:" { ns = 0; for (i = 2; i <= NF; i++) s[++ns] = $i }
                    END { flush() }' "$f"
                ;;
            *)
                awk -v want="$1" '
                    $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                  if ($(i + 1) == want) { print $i; exit } }' "$f"
                ;;
            esac
        done | head -n1
    }
    main_mirror=${OUTPOST_DEBIAN_MIRROR:-$(mirror_for "$SUITE")}
    main_mirror=${main_mirror:-http://deb.debian.org/debian}
    security_mirror=$(mirror_for "$SUITE-security")
    sources=("deb $main_mirror $SUITE main" "deb $main_mirror $SUITE-updates main")
    [ -n "$security_mirror" ] && sources+=("deb $security_mirror $SUITE-security main")

    tmp_tarball="$CACHE/.partial-$key.tar"  # mmdebstrap picks the output format from the .tar suffix
    say "building rootfs with mmdebstrap from: ${sources[*]}"
    t0=$SECONDS
    dpkgopt_args=()
    for o in "${DPKG_OPTS[@]}"; do dpkgopt_args+=("--dpkgopt=$o"); done
    mmdebstrap --quiet --mode=root --variant="$VARIANT" --architectures="$arch" \
        --include="$INCLUDE" "${dpkgopt_args[@]}" "${HOOKS[@]}" \
        "$SUITE" "$tmp_tarball" "${sources[@]}" >"$CACHE/mmdebstrap.log" 2>&1 9>&- \
        || { rm -f "$tmp_tarball"; tail -n 40 "$CACHE/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $CACHE/mmdebstrap.log)"; }
    mv "$tmp_tarball" "$tarball"
    say "rootfs built in $((SECONDS - t0)) s: $tarball ($(du -h "$tarball" | cut -f1))"
    # Tarballs of older recipes of this package set are dead weight (other sets' are kept).
    find "$CACHE" -maxdepth 1 -name "rootfs-$SUITE-$arch$FLAVOR-????????????????.tar" \
        ! -name "$(basename "$tarball")" -delete
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
ln "$tarball" "$ctx/rootfs.tar" 2>/dev/null || cp "$tarball" "$ctx/rootfs.tar"
cat >"$ctx/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
LABEL outpost.base.key="$key" \\
      outpost.base.recipe="mmdebstrap --variant=$VARIANT --include=$INCLUDE $SUITE"
ENV LANG=C.UTF-8
CMD ["bash"]
EOF
t0=$SECONDS
if [ $foreign -eq 0 ]; then
    # The classic builder is enough for FROM scratch + ADD, and needs no buildx.
    DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --tag "$IMAGE" "$ctx" >/dev/null 9>&- \
        || die "docker build of $IMAGE failed"
else
    # Only a BuildKit build records a foreign architecture in the image (`docker import --platform`
    # does not on this engine); FROM scratch runs nothing, so this needs no emulation.
    DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --platform "$platform" --tag "$IMAGE" "$ctx" >/dev/null 9>&- \
        || die "docker build of $IMAGE ($platform) failed"
fi
# The image this one replaced (if any) is now dangling: drop it (only images carrying our label).
"$DOCKER" image prune --force --filter label=outpost.base.key >/dev/null
say "built $IMAGE in $((SECONDS - t0)) s ($("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
