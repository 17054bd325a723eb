#!/usr/bin/env bash
# Set up everything the test suite needs and run it: the README's test command and CI's.
#   bash Testing/run_tests.sh [pytest arguments]
# - a virtual environment in .venv with OsteoROI and its test extras (PyPI);
# - Debian's chromium for the headless HTML-report test, when it is missing and this shell
#   may install packages (root); without it that one test is skipped with a reason;
# - without pytest arguments (the full run, as CI does it), a second run on Python 3.9, the
#   Python of Slicer 5.6, in .venv/py39, when a Python 3.9 interpreter is found ($OSTEOROI_PY39,
#   pyenv's 3.9.x, or python3.9 on PATH); otherwise a note says it was skipped. slicer-core has
#   no Python 3.9 wheel, so there the MRML tests skip and the core and static checks run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null) \
    || echo "note: could not install chromium; the browser test of the HTML report will be skipped"
fi
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi

status=0
.venv/bin/python -m pytest || status=$?

py39=""
for candidate in "${OSTEOROI_PY39:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python "$(command -v python3.9 || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then py39="$candidate"; break; fi
done
if [ -z "$py39" ]; then
  echo "note: no Python 3.9 interpreter found (set OSTEOROI_PY39); the Python 3.9 run (Slicer 5.6's Python) is skipped"
else
  echo "== Python 3.9 run ($py39): Slicer 5.6's Python; the MRML tests skip (slicer-core has no 3.9 wheel)"
  [ -x .venv/py39/bin/python ] || "$py39" -m venv .venv/py39
  .venv/py39/bin/pip install -q --disable-pip-version-check -e . pytest hypothesis jsonschema pydicom 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/py39/bin/python -m pytest -q -p no:cacheprovider || status=$?
fi
exit "$status"
