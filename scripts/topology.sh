#!/usr/bin/env bash
# Regenerates the pictures README shows: docs/topology.svg, the example cluster drawn by
# `kemu topology` (static, deterministic: rerunning gives the same bytes). With --png also
# docs/topology.png, the screenshot the browser tests take of the example's page (needs
# Chromium and Playwright: scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
"$py" -m kemu topology -f examples/cluster -o docs/topology.svg
if [ "${1:-}" = "--png" ]; then
  KEMU_ARTIFACTS="$PWD/tests/artifacts" "$py" -m pytest -q -p no:cacheprovider \
    tests/test_topology_browser.py -k screenshot
  cp tests/artifacts/topology.png docs/topology.png
  echo "wrote docs/topology.png"
fi
