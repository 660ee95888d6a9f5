#!/usr/bin/env bash
# Make a Docker engine available for the integration tests on this (Debian 12) machine, as root.
# Idempotent: installs docker.io and mmdebstrap only when missing, starts dockerd only when nothing
# answers on /var/run/docker.sock, then waits (bounded) until `docker info` works.
#
# The daemon runs WITHOUT the default bridge (--bridge=none --iptables=false --ip-masq=false):
# containers use `network_mode: host` or `none`. Never create bridge networks on these machines.
#
# Environment: OUTPOST_DOCKERD_LOG (default /tmp/outpost-dockerd.log),
#              OUTPOST_DOCKERD_TIMEOUT seconds to wait for the engine (default 60).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

LOG=${OUTPOST_DOCKERD_LOG:-/tmp/outpost-dockerd.log}
TIMEOUT=${OUTPOST_DOCKERD_TIMEOUT:-60}
SOCK=/var/run/docker.sock
# Debian's client. The `docker` 28.x in /usr/local/bin wants a buildx plugin that is not installed.
DOCKER=/usr/bin/docker

say() { echo "docker.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts dockerd)"

# One invocation at a time (pytest-xdist workers, a parallel shell...).
exec 9>/run/lock/outpost-docker.lock
flock -w 600 9 || die "timed out waiting for another docker.sh to finish"

# --- install -----------------------------------------------------------------------------------
need=()
{ [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ]; } || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} ..."
    t0=$SECONDS
    apt-get update -qq
    # No recommends: apparmor/needrestart/git are not needed and only slow the install down.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    say "installed ${need[*]} in $((SECONDS - t0)) s"
fi

engine_up() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }

check_no_bridge() {
    # A daemon we did not start may have been started with the default bridge: refuse to use it.
    if "$DOCKER" network ls --format '{{.Name}}' | grep -qx bridge; then
        die "the running Docker engine has a 'bridge' network; these machines require
  dockerd --bridge=none --iptables=false --ip-masq=false. Stop that daemon and run this script again."
    fi
}

if engine_up; then
    check_no_bridge
    say "engine already running ($("$DOCKER" version --format '{{.Server.Version}}'))"
    exit 0
fi

# --- start -------------------------------------------------------------------------------------
# dockerd 20.10 starts and supervises its own containerd (socket under /var/run/docker/containerd)
# when no system containerd socket exists at /run/containerd/containerd.sock, which is the case
# here (no systemd, and policy-rc.d stops apt from starting services). So containerd needs no
# separate start. A dockerd that is already starting (pid alive, socket not ready yet) is waited for.
started=no
pid=""
if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    pid=$(cat /var/run/docker.pid)
    say "dockerd (pid $pid) is running but not answering yet; waiting for it"
else
    rm -f /var/run/docker.pid
    say "starting dockerd (log: $LOG)"
    echo "=== $(date -Is) docker.sh starting dockerd" >>"$LOG"
    # setsid + nohup: the daemon outlives this script and the test session that ran it.
    setsid nohup /usr/sbin/dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    started=yes
fi

deadline=$((SECONDS + TIMEOUT))
until engine_up; do
    if [ "$started" = yes ] && ! kill -0 "$pid" 2>/dev/null; then
        say "dockerd exited during startup; last lines of $LOG:"
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
        say "ERROR: Docker engine did not answer on $SOCK within ${TIMEOUT} s; last lines of $LOG:"
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    sleep 0.2
done
check_no_bridge
say "engine up ($("$DOCKER" version --format '{{.Server.Version}}'), storage $("$DOCKER" info --format '{{.Driver}}'), cgroup $("$DOCKER" info --format '{{.CgroupDriver}} v{{.CgroupVersion}}'))"
