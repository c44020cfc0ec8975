#!/usr/bin/env bash
# Sets everything up and runs the whole test suite twice: once with the Cython fast path,
# once more with the extension disabled (the pure-Python reference alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check kemu tests bench examples
python3 -m pytest -q -p no:cacheprovider
KEMU_NO_EXTENSIONS=1 python3 -m pytest -q -p no:cacheprovider
