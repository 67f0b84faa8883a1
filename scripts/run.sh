#!/usr/bin/env bash
# Start the router with config/router.yaml. Without ROUTER_REDIS_URL, start a local Redis with
# append-only persistence under .run/redis (git-ignored) and stop it when the router exits.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUTER_CONFIG="${ROUTER_CONFIG:-config/router.yaml}"
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
      echo "export ROUTER_ENCRYPTION_KEYS='$(.venv/bin/router keys generate --id dev1)'"
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
.venv/bin/router serve --config "$ROUTER_CONFIG"
