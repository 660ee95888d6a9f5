#!/usr/bin/env bash
# Let this machine run and build foreign-architecture images (linux/arm64, linux/arm/v7) under QEMU
# user-mode emulation, as root. Idempotent: installs qemu-user-static and binfmt-support only when
# missing (and arch-test, which mmdebstrap needs for
# foreign root filesystems), mounts binfmt_misc only when it is not mounted, enables only the handlers that are off.
# The handlers use the F (fix-binary) flag of Debian's qemu-user-static, so containers can use them
# without the emulator inside the image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { echo "qemu.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and registers binfmt handlers)"
exec 9>/run/lock/outpost-qemu.lock
flock -w 600 9 || die "timed out waiting for another qemu.sh to finish"

need=()
[ -x /usr/bin/qemu-aarch64-static ] && [ -x /usr/bin/qemu-arm-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
# mmdebstrap refuses foreign architectures without arch-test (base-image.sh OUTPOST_BASE_ARCH=arm64).
command -v arch-test >/dev/null || need+=(arch-test)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} ..."
    t0=$SECONDS
    # Other installers may hold the dpkg lock: wait for it rather than fail.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    say "installed ${need[*]} in $((SECONDS - t0)) s"
fi

BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/status" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
    || die "could not mount binfmt_misc on $BINFMT (a container needs --privileged for this)"

for handler in qemu-aarch64 qemu-arm; do
    if ! grep -qx enabled "$BINFMT/$handler" 2>/dev/null; then
        update-binfmts --enable "$handler" || die "update-binfmts --enable $handler failed"
    fi
    grep -qx enabled "$BINFMT/$handler" || die "$handler is not enabled in $BINFMT"
done
say "emulation ready: $(for h in qemu-aarch64 qemu-arm; do printf '%s(%s) ' "$h" "$(sed -n 's/^flags: //p' "$BINFMT/$h")"; done)"
