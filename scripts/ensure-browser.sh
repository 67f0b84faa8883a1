#!/usr/bin/env bash
# What the browser tests (tests/e2e/browser) need: Debian's chromium, node and npm (installed
# with apt when missing and we are root), then the SDKs from package-lock.json (npm ci) and the
# consent wrapper's bundle (npm run build). Playwright drives /usr/bin/chromium: no browser is
# downloaded. ROUTER_SKIP_BROWSER_TESTS=1 skips all of this (and the tests).
set -euo pipefail
if [ "${ROUTER_SKIP_BROWSER_TESTS:-}" = "1" ]; then
  echo "ROUTER_SKIP_BROWSER_TESTS=1: browser tests skipped" >&2
  exit 0
fi
cd "$(dirname "$0")/../tests/e2e/browser"

missing=()
[ -x "${ROUTER_TEST_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "${missing[*]} missing: installing with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    cat >&2 <<MSG
The browser tests need ${missing[*]}, and this user cannot install them.
Install them first, e.g.:   sudo apt-get install ${missing[*]}   (Debian/Ubuntu)
or skip the browser tests:  ROUTER_SKIP_BROWSER_TESTS=1 make test
MSG
    exit 1
  fi
fi

# npm ci when node_modules is missing or older than the lock file; then the bundle.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -f build/consent-tools.js ] || [ node_modules/.package-lock.json -nt build/consent-tools.js ]; then
  npm run --silent build
fi
