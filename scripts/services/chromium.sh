#!/usr/bin/env bash
# Debian's chromium for the console's browser tests (Playwright drives it by executable_path; no
# `playwright install`, no browser download). Idempotent: installs only when /usr/bin/chromium is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { echo "chromium.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

exec 9>/run/lock/outpost-chromium.lock
flock -w 900 9 || die "timed out waiting for another chromium.sh to finish"

if [ ! -x /usr/bin/chromium ]; then
    [ "$(id -u)" -eq 0 ] || die "chromium is not installed and installing it needs root: apt-get install -y chromium"
    say "installing chromium ..."
    t0=$SECONDS
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    say "installed in $((SECONDS - t0)) s"
fi
/usr/bin/chromium --version >/dev/null 2>&1 || die "/usr/bin/chromium does not run"
say "$(/usr/bin/chromium --version)"
