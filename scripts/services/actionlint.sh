#!/usr/bin/env bash
# Install actionlint (the GitHub Actions workflow linter) as a Go module, for the test that checks
# ci/github/. Idempotent: does nothing when the pinned version is already installed.
#
# Go: the `go` on PATH, else /usr/local/go/bin/go, else Debian's golang-go (apt). Modules come from
# the Go module proxy (GOPROXY, default proxy.golang.org).
# Environment: OUTPOST_ACTIONLINT_VERSION (default v1.7.12), OUTPOST_TOOLS_BIN (default /usr/local/bin).
set -euo pipefail
VERSION=${OUTPOST_ACTIONLINT_VERSION:-v1.7.12}
BIN=${OUTPOST_TOOLS_BIN:-/usr/local/bin}

say() { echo "actionlint.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if [ -x "$BIN/actionlint" ] && "$BIN/actionlint" -version 2>/dev/null | head -1 | grep -Eqx "v?${VERSION#v}"; then
    say "actionlint ${VERSION#v} already installed ($BIN/actionlint)"
    exit 0
fi

go=$(command -v go || true)
[ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; } || true
if [ -z "$go" ]; then
    [ "$(id -u)" -eq 0 ] || die "no Go toolchain: install golang-go (as root) and run again"
    say "installing golang-go ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends golang-go ca-certificates >/dev/null
    go=$(command -v go) || die "go missing after installing golang-go"
fi

t0=$SECONDS
mkdir -p "$BIN"
gopath=$(mktemp -d)
trap 'chmod -R u+w "$gopath" 2>/dev/null; rm -rf "$gopath"' EXIT
GOPATH=$gopath GOBIN=$BIN GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-auto} \
    "$go" install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION" \
    || die "go install of actionlint $VERSION failed ($("$go" version)); actionlint needs a recent Go"
say "installed actionlint $("$BIN/actionlint" -version | head -1) in $((SECONDS - t0)) s"
