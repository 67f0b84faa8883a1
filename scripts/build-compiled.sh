#!/usr/bin/env bash
# The compiled build (opt-in): a copy of this tree in build/compiled/ where the pure core is
# compiled with mypyc (from PyPI's mypy, in the virtualenv) into C extensions that sit next
# to their .py sources. Python imports an extension before a source of the same name, so in
# that copy the modules below run compiled; every other module, and this tree itself, stay
# pure Python (the fallback: nothing here changes unless you run from build/compiled/).
#
#   scripts/build-compiled.sh            # or: make compiled
#   cd build/compiled && ../../.venv/bin/router serve ...     # run it
#   PYTHONPATH=build/compiled .venv/bin/router serve ...      # the same, from here
#
# Needs gcc and the Python headers (Debian: apt-get install gcc python3-dev).
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
# Also router/edge/ingest.py (its tests replace parse_body and RequestPlanner.add, which compiled
# calls would bypass), router/routing.py (pydantic models, which read their annotations),
# router/compliance/audit_log.py (async generators, which mypyc does not implement),
# consent/store.py (compiled, its invalidation listener did not resume after a lost connection
# and aclose let its task's CancelledError through: three integration tests failed).
# (destinations/dlp.py compiles because _scan_number says ``int | float``: with ``float``,
# mypyc refused every integer, which the corpus and the DLP tests caught; likewise
# router/observability/metrics.py's _sample. mypyc drops the cause of ``raise ... from``:
# compiled modules set ``__cause__`` by hand where it matters.)
MODULES=(
  router/core/paths.py router/core/jsonscan.py router/core/sanitize.py router/core/plan.py
  router/core/audit_records.py router/core/explain.py
  router/core/signals.py
  consent/tcf.py consent/tcf_bits.py consent/gpp.py consent/usp.py consent/onetrust.py
  consent/iab.py consent/signals.py consent/resolve.py consent/policy.py
  destinations/fields.py destinations/dlp.py destinations/hashing.py
  consent/ids.py consent/memo.py consent/records.py
  router/queue/keys.py router/queue/items.py router/queue/enqueuer.py
  router/observability/metrics.py
)

command -v gcc >/dev/null || { echo "gcc is missing: apt-get install gcc python3-dev"; exit 1; }
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || { echo "Python.h is missing: apt-get install python3-dev"; exit 1; }
MYPYC="$(cd "$(dirname "$PYTHON")" && pwd)/mypyc"
[ -x "$MYPYC" ] || { echo "mypyc is missing: .venv/bin/pip install -e '.[dev]'"; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
# The tree as it is (tracked and new files, not the ignored ones), sources only.
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$OUT"
# The native walkers pip built in place (setup.py; ignored by git), when there are any.
for native in router/core/_speedups.*.so destinations/_speedups.*.so; do
  [ -f "$native" ] && cp "$native" "$OUT/$(dirname "$native")/"
done
cd "$OUT"
"$MYPYC" "${MODULES[@]}" > mypyc.log 2>&1 || { tail -30 mypyc.log; exit 1; }
rm -rf build
echo "compiled build in $OUT: $(ls router/core/*.so consent/*.so destinations/*.so | grep -vc _speedups) modules compiled"
