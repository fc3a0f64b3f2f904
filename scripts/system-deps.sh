#!/bin/sh
# Debian packages the tests need. `make test` needs Chromium (browser tests of the labeling app);
# `make test-all` also wants PostgreSQL. Installs only what is missing; never fails the build:
# tests that need an absent package skip with a clear reason.
set -u
need=""
[ -x /usr/bin/chromium ] || need="$need chromium"
if [ "${1:-}" = "--all" ]; then
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$need postgresql"
fi
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing$need (not root or no apt-get); the tests that need them will skip" >&2
    exit 0
fi
echo "system-deps: installing$need" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null) \
    || echo "system-deps: could not install$need; the tests that need them will skip" >&2
exit 0
