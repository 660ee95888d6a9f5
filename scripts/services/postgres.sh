#!/usr/bin/env bash
# PostgreSQL for the fleet's tests and benchmarks (Debian 12, root). Idempotent.
#
#   postgres.sh                 install Debian's postgresql if missing (its packaged cluster stays down)
#   postgres.sh start DIR       init (first time) and start a private cluster in DIR on 127.0.0.1 and a
#                               free port; writes DIR/url (0600): postgresql://outpost:PASSWORD@127.0.0.1:PORT/postgres
#   postgres.sh stop DIR        stop that cluster (fast shutdown)
#
# Each caller (a test session, a benchmark) starts its OWN cluster in its own DIR, so nothing is
# shared with another user of the machine. The cluster listens on 127.0.0.1 only, with
# scram-sha-256 passwords; its socket lives in DIR/sock.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

say() { echo "postgres.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install() {
    exec 9>/run/lock/outpost-postgres.lock
    flock -w 600 9 || die "timed out waiting for another postgres.sh to finish"
    if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
        [ "$(id -u)" -eq 0 ] || die "postgresql is not installed and installing it needs root: apt-get install -y postgresql"
        say "installing postgresql ..."
        t0=$SECONDS
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        say "installed in $((SECONDS - t0)) s"
    fi
    [ -x "$(bindir)/initdb" ] || die "initdb is still missing after the install"
    # The packaged cluster: stopped (no-op where there is no init system).
    service postgresql stop >/dev/null 2>&1 || true
    flock -u 9
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() {
    if [ "$(id -un)" = postgres ] || [ "$(id -u)" -ne 0 ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

start() {
    local dir=$1 bin port password
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
        as_postgres mkdir -p "$dir/data" "$dir/sock"
        printf '%s\n' "$password" | as_postgres tee "$dir/pwfile" >/dev/null
        as_postgres chmod 600 "$dir/pwfile"
        as_postgres "$bin/initdb" -D "$dir/data" -U outpost -A scram-sha-256 --pwfile="$dir/pwfile" >"$dir/initdb.log" 2>&1 \
            || die "initdb failed; see $dir/initdb.log"
    fi
    password=$(as_postgres cat "$dir/pwfile")
    if as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        port=$(as_postgres sed -n '4p' "$dir/data/postmaster.pid")
    else
        port=$(free_port)
        as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null \
            || die "PostgreSQL did not start; see $dir/log"
    fi
    umask 077
    echo "postgresql://outpost:${password}@127.0.0.1:${port}/postgres" > "$dir/url"
    say "ready on 127.0.0.1:$port (URL in $dir/url)"
}

stop() {
    local dir=$1
    [ -f "$dir/data/PG_VERSION" ] || return 0
    as_postgres "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    say "stopped the cluster in $dir"
}

install
case "${1:-}" in
    "") say "ready: $("$(bindir)/postgres" --version)" ;;
    start) [ -n "${2:-}" ] || die "usage: postgres.sh start DIR"; start "$2" ;;
    stop) [ -n "${2:-}" ] || die "usage: postgres.sh stop DIR"; stop "$2" ;;
    *) die "usage: postgres.sh [start DIR | stop DIR]" ;;
esac
