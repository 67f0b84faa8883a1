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
.venv/bin/router serve --config "$ROUTER_CONFIG"
