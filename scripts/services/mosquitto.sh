#!/usr/bin/env bash
# Make the Mosquitto broker binary available for the hub and its integration tests (Debian 12, root).
# Idempotent: installs mosquitto and mosquitto-clients only when missing. The hub (and every test)
# starts its OWN broker with its own config on 127.0.0.1 and a free port, so the packaged system
# service is stopped and disabled here: it must not hold port 1883 or run with Debian's config.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { echo "mosquitto.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# One invocation at a time (parallel test workers, a parallel shell...).
exec 9>/run/lock/outpost-mosquitto.lock
flock -w 600 9 || die "timed out waiting for another mosquitto.sh to finish"

have() { [ -x /usr/sbin/mosquitto ] && command -v mosquitto_pub >/dev/null && command -v mosquitto_passwd >/dev/null; }

if ! have; then
    [ "$(id -u)" -eq 0 ] || die "mosquitto is not installed and installing it needs root: apt-get install -y mosquitto mosquitto-clients"
    say "installing mosquitto mosquitto-clients ..."
    t0=$SECONDS
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
    say "installed in $((SECONDS - t0)) s"
fi
have || die "mosquitto is still missing after the install"

# The packaged service: stopped and disabled (no-ops where there is no init system).
if [ "$(id -u)" -eq 0 ]; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    else
        service mosquitto stop >/dev/null 2>&1 || true
        update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
fi
say "ready: $(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1)"
