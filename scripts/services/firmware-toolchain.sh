#!/usr/bin/env bash
# The firmware's host and cross toolchains (Debian 12, root). Idempotent: installs only what is
# missing, then unpacks KissFFT's sources (the version Debian packages, from Debian's source
# archive with apt's own verification) for the rv32 image into /var/cache/outpost/kissfft-src.
#
#   host build + GoogleTest: cmake g++ make libgtest-dev libkissfft-dev libjsmn-dev
#   rv32imc cross-compile:   gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
#   running the rv32 image:  qemu-system-misc (qemu-system-riscv32)
#
# ESP-IDF itself cannot be installed here (it downloads its own toolchains): see firmware/README.md.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { echo "firmware-toolchain.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

exec 9>/run/lock/outpost-firmware-toolchain.lock
flock -w 900 9 || die "timed out waiting for another firmware-toolchain.sh to finish"

packages=(cmake g++ make libgtest-dev libkissfft-dev libjsmn-dev gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
          qemu-system-misc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; installing needs root: apt-get install -y ${missing[*]}"
    say "installing ${missing[*]} ..."
    t0=$SECONDS
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "installed in $((SECONDS - t0)) s"
fi

src=${OUTPOST_KISSFFT_SRC:-/var/cache/outpost/kissfft-src}
if [ ! -f "$src/kiss_fftr.c" ]; then
    version=$(dpkg-query -W -f='${source:Version}' libkissfft-dev)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/dl"
    # A private deb-src list: the machine's apt configuration is left as it is.
    cat >"$work/sources.list" <<LIST
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
LIST
    apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o Acquire::Languages=none -o APT::Sandbox::User=root)
    say "fetching KissFFT $version sources ..."
    apt-get -qq "${apt_opts[@]}" update
    (cd "$work/dl" && apt-get -qq "${apt_opts[@]}" source --download-only "kissfft=$version")
    orig=$(ls "$work"/dl/kissfft_*.orig.tar.* 2>/dev/null | head -1)
    [ -n "$orig" ] || die "could not download the kissfft $version source package"
    mkdir -p "$work/unpacked"
    tar -xf "$orig" -C "$work/unpacked"
    mkdir -p "$(dirname "$src")"
    rm -rf "$src.tmp" && mv "$work"/unpacked/kissfft-* "$src.tmp" && mv "$src.tmp" "$src"
    say "KissFFT sources in $src"
fi
[ -f "$src/kiss_fftr.c" ] || die "KissFFT sources missing in $src"
