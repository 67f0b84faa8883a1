#!/usr/bin/env bash
# Make sure redis-server and redis-cli are installed (the cluster fixture creates its cluster
# with `redis-cli --cluster create`): install them with apt when missing and we are root.
# Debian's redis-server package depends on redis-tools, which brings redis-cli.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing: installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server redis-tools >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
redis-server or redis-cli is not installed and this user cannot install them.
Install them first, e.g.:   sudo apt-get install redis-server redis-tools   (Debian/Ubuntu)
or point the router at an existing Redis:   ROUTER_REDIS_URL=redis://host:6379/0 make run
MSG
exit 1
