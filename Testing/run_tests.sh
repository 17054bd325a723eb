#!/usr/bin/env bash
# Set up everything the test suite needs and run it: the README's test command and CI's.
#   bash Testing/run_tests.sh [pytest arguments]
# - a virtual environment in .venv with OsteoROI and its test extras (PyPI);
# - Debian's chromium for the headless HTML-report test, when it is missing and this shell
#   may install packages (root); without it that one test is skipped with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null) \
    || echo "note: could not install chromium; the browser test of the HTML report will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
