#!/usr/bin/env bash
# Install Debian's Docker registry (distribution v2) and htpasswd for the registry tests.
# Idempotent. The tests start their own registry on 127.0.0.1 with their own config; the
# packaged service (which demands its own htpasswd setup) is never started.
set -euo pipefail
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v docker-registry >/dev/null || { echo "registry.sh: docker-registry missing after install" >&2; exit 1; }
echo "registry.sh: $(docker-registry --version 2>&1 | head -1)" >&2
