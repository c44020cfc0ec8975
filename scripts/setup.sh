#!/usr/bin/env bash
# Sets up kemu on a fresh machine: Debian tools (tshark for the pcapng checks, iproute2 and
# iptables for the kernel comparison), then kemu itself with its Cython extension built in
# place, and the test dependencies. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v capinfos >/dev/null 2>&1 || need+=(wireshark-common)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "debconf wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]} (install them as root for the full test suite)" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
# an editable install does not rebuild the extension when the .pyx changes: build it here,
# with the build requirements (pip installed them only in its isolated build environment)
python3 -m pip install -q --disable-pip-version-check "setuptools>=77" "Cython>=3.0"
python3 setup.py -q build_ext --inplace
python3 -c "import kemu._backend as b; assert b.BACKEND == 'cython', b.BACKEND; print('kemu: backend', b.BACKEND)"
# byte code now, as a regular pip install does (an editable install leaves it to the first
# run, and never writes it when PYTHONDONTWRITEBYTECODE is set: every start would compile)
python3 -m compileall -q kemu >/dev/null
