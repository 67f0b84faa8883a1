#!/usr/bin/env bash
# The compiled build (opt-in): a copy of this tree in build/compiled/ where the pure core is
# compiled with mypyc (from PyPI's mypy, in the virtualenv) into C extensions that sit next
# to their .py sources. Python imports an extension before a source of the same name, so in
# that copy the modules below run compiled; every other module, and this tree itself, stay
# pure Python (the fallback: nothing here changes unless you run from build/compiled/).
#
#   scripts/build-compiled.sh            # or: make compiled (make run: only when a source changed)
#   scripts/build-compiled.sh --check    # whether it can build here; if not, says what is missing
#   cd build/compiled && ../../.venv/bin/router serve ...     # run it
#   PYTHONPATH=build/compiled .venv/bin/router serve ...      # the same, from here
#
# Needs gcc and the Python headers (Debian: apt-get install gcc python3-dev). A finished build
# leaves build/compiled/.built, dated when its copy of the tree was taken (the Makefile's stamp).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=build/compiled

# Compiled: pure modules whose outputs the corpus test (tests/integration/test_compiled_build.py)
# compares with the pure build's. Left out, because mypyc changes what they do:
# router/core/schema.py, outcomes.py and consent_input.py (msgspec Structs with generics or
# msgspec.field defaults: msgspec must read their annotations as Python wrote them),
# consent/gpp_sections.py (dataclass field order under mypyc), consent/gcm.py (a map with a
# non-string key raises TypeError instead of ConsentModeError: typed arguments are checked).
# Also router/routing.py (pydantic models, which read their annotations),
# router/compliance/audit_log.py (async generators, which mypyc does not implement; its
# per-decision bookkeeping is router/compliance/audit_groups.py, compiled),
# consent/store.py (compiled, its invalidation listener did not resume after a lost connection
# and aclose let its task's CancelledError through: three integration tests failed; its
# per-subject bookkeeping is consent/cache.py, compiled).
# (destinations/dlp.py compiles because _scan_number says ``int | float``: with ``float``,
# mypyc refused every integer, which the corpus and the DLP tests caught; likewise
# router/observability/metrics.py's _sample. mypyc drops the cause of ``raise ... from``:
# compiled modules set ``__cause__`` by hand where it matters.)
MODULES=(
  router/core/paths.py router/core/jsonscan.py router/core/sanitize.py router/core/plan.py
  router/core/audit_records.py router/core/explain.py router/compliance/subject_tokens.py
  router/compliance/audit_groups.py router/compliance/audit_chain.py
  router/core/signals.py
  consent/tcf.py consent/tcf_bits.py consent/gpp.py consent/usp.py consent/onetrust.py
  consent/iab.py consent/signals.py consent/resolve.py consent/policy.py
  destinations/fields.py destinations/dlp.py destinations/hashing.py
  consent/ids.py consent/memo.py consent/records.py consent/cache.py
  router/queue/keys.py router/queue/items.py router/queue/enqueuer.py
  router/observability/metrics.py router/edge/ingest.py
)
# router/edge/ingest.py is the one edge module compiled (its Python was about 8 % of a
# single-event request's CPU); aiohttp reaches it through router/edge/app.py's
# coroutine function, as it takes a compiled one for a bare function handler.

command -v gcc >/dev/null || { echo "gcc is missing (apt-get install gcc python3-dev)"; exit 1; }
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || { echo "Python.h is missing (apt-get install python3-dev)"; exit 1; }
MYPYC="$(cd "$(dirname "$PYTHON")" && pwd)/mypyc"
[ -x "$MYPYC" ] || { echo "mypyc is missing (.venv/bin/pip install -e '.[dev]')"; exit 1; }
[ "${1:-}" = --check ] && exit 0

# The tree as it is, sources only: with git, the tracked and new files that still exist (not
# the ignored ones); without (a source tarball), every file but what .gitignore names.
sources() {
  if [ -e .git ] && command -v git >/dev/null; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done
  else
    find . \( -name .git -o -name .venv -o -name .run -o -name build -o -name dist \
      -o -name __pycache__ -o -name '*.egg-info' -o -name '.*_cache' -o -name .hypothesis \
      -o -name node_modules \) -prune \
      -o -type f ! -name '*.so' ! -name _speedups.c -printf '%P\0'
  fi
}
rm -rf "$OUT"
mkdir -p "$OUT"
: > "$OUT/.building"
sources | tar --null -T - -cf - | tar -xf - -C "$OUT"
# The native walkers pip built in place (setup.py; ignored by git), when there are any.
for native in router/core/_speedups.*.so destinations/_speedups.*.so consent/_speedups.*.so; do
  [ -f "$native" ] && cp "$native" "$OUT/$(dirname "$native")/"
done
cd "$OUT"
"$MYPYC" "${MODULES[@]}" > mypyc.log 2>&1 || { tail -30 mypyc.log; exit 1; }
rm -rf build
mv .building .built
echo "compiled build: $(find router consent destinations -name '*.so' ! -name '_speedups*' | wc -l) modules (mypyc) in $OUT"
