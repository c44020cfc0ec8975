#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh: .venv with kemu and its Cython extension) and runs
# kemu's main job: the bundled capture replayed through the bundled example cluster, to an
# annotated pcapng and a Hubble-style flow log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/kemu replay -f examples/cluster -r examples/capture.pcap -w example.pcapng --flows example.jsonl
