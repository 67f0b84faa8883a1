#!/usr/bin/env bash
# Start the router with config/router.yaml. Without ROUTER_REDIS_URL, start a local Redis with
# append-only persistence under .run/redis (git-ignored) and stop it when the router exits.
# The compiled build (build/compiled/, scripts/build-compiled.sh; rebuilt by make only when a
# source changed) runs when gcc and the Python headers are there, else the pure source with a
# line saying what to install. ROUTER_BUILD=pure: the pure source; ROUTER_BUILD=compiled: fail
# instead of falling back.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export ROUTER_CONFIG="${ROUTER_CONFIG:-config/router.yaml}"
build="${ROUTER_BUILD:-auto}"
case "$build" in
  pure) ;;
  auto | compiled)
    if ! missing=$(PYTHON="$VENV/bin/python" scripts/build-compiled.sh --check); then
      [ "$build" = compiled ] && { echo "ROUTER_BUILD=compiled: $missing" >&2; exit 1; }
      echo "running the pure-Python build, not the compiled one: $missing" >&2
      build=pure
    elif ! PYTHON="$VENV/bin/python" "${MAKE:-make}" -s --no-print-directory VENV="$VENV" \
      build/compiled/.built; then
      [ "$build" = compiled ] && exit 1
      echo "the compiled build failed (build/compiled/mypyc.log): running the pure-Python build" >&2
      build=pure
    else
      build=compiled
      export PYTHONPATH="$PWD/build/compiled${PYTHONPATH:+:$PYTHONPATH}"
    fi
    ;;
  *) echo "ROUTER_BUILD=$build: use pure or compiled (unset: compiled when it can be built)" >&2; exit 2 ;;
esac
if [ -z "${ROUTER_REDIS_URL:-}" ]; then
  port="${ROUTER_LOCAL_REDIS_PORT:-6390}"
  mkdir -p .run/redis
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    redis-server config/redis.conf --port "$port" --dir "$PWD/.run/redis" \
      --daemonize yes --pidfile "$PWD/.run/redis/redis.pid" --logfile "$PWD/.run/redis/redis.log"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    trap 'redis-cli -p "$port" shutdown >/dev/null 2>&1 || true' EXIT
  fi
  export ROUTER_REDIS_URL="redis://127.0.0.1:${port}/0"
  echo "local Redis on port ${port} (data in .run/redis)" >&2
fi
# Development secrets of encryption at rest and of the keyed subject hashes, made on the first
# run and kept in .run/dev-keys (git-ignored) so that later runs read what earlier ones stored.
# Never use these in production: set ROUTER_ENCRYPTION_KEYS and ROUTER_SUBJECT_KEY yourself.
if [ -z "${ROUTER_ENCRYPTION_KEYS:-}${ROUTER_SUBJECT_KEY:-}" ]; then
  mkdir -p .run
  if [ ! -f .run/dev-keys ]; then
    umask 077
    {
      echo "export ROUTER_ENCRYPTION_KEYS='$("$VENV/bin/router" keys generate --id dev1)'"
      echo "export ROUTER_SUBJECT_KEY='$(head -c 32 /dev/urandom | base64)'"
    } > .run/dev-keys
  fi
  # shellcheck source=/dev/null
  . .run/dev-keys
  echo "encryption at rest on with the development keys of .run/dev-keys" >&2
fi
# The audit trail's subject tokens are HMACs under ROUTER_AUDIT_KEY: without one, a list of ids
# reverses them. Same treatment: a development key in .run/dev-audit-key unless one is set.
if [ -z "${ROUTER_AUDIT_KEY:-}" ]; then
  mkdir -p .run
  if [ ! -f .run/dev-audit-key ]; then
    (umask 077; echo "export ROUTER_AUDIT_KEY='$(head -c 32 /dev/urandom | base64)'" > .run/dev-audit-key)
  fi
  # shellcheck source=/dev/null
  . .run/dev-audit-key
fi
# The router runs in the background and this script waits for it, passing on SIGTERM, SIGINT
# and SIGHUP (reload): a shell waiting on a foreground child would be killed by SIGTERM
# without running its EXIT trap, leaving the local Redis running. ``trap - INT`` undoes the
# SIGINT-ignoring that a background command gets, so an early Ctrl-C still stops it.
(trap - INT; exec "$VENV/bin/router" serve --config "$ROUTER_CONFIG") &
router=$!
for sig in TERM INT HUP; do
  # shellcheck disable=SC2064
  trap "kill -$sig $router 2>/dev/null || true" "$sig"
done
status=0
while :; do
  wait "$router" && status=0 || status=$?
  kill -0 "$router" 2>/dev/null || break # a signal interrupted the wait: wait for the exit
done
exit "$status"
