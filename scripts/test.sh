#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh: .venv with kemu and its Cython extension) and runs
# the whole test suite twice with the venv's python: once with the Cython fast path, once
# more with the extension disabled (the pure-Python reference alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=.venv/bin/python
"$py" -m ruff check kemu tests bench examples
"$py" -m pytest -q -p no:cacheprovider
KEMU_NO_EXTENSIONS=1 "$py" -m pytest -q -p no:cacheprovider
