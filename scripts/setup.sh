#!/usr/bin/env bash
# Sets up kemu on a fresh machine: Debian tools (tshark for the pcapng checks, iproute2 and
# iptables for the kernel comparison), then a virtual environment .venv in the repository
# with kemu installed in it (editable), its Cython extension built in place, and the test
# dependencies. Idempotent; safe to run again (a healthy .venv is reused).
#
# Why a venv: Debian 12 and Ubuntu 23.04+ mark their system Python "externally managed"
# (PEP 668), and pip refuses to install into it. .venv is made with the python3 on PATH, or
# with $PYTHON when set. Afterwards: `. .venv/bin/activate`, or call .venv/bin/kemu and
# .venv/bin/python directly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v capinfos >/dev/null 2>&1 || need+=(wireshark-common)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# the topology page's browser tests (tests/test_topology_browser.py) drive Debian's Chromium
# through Playwright (pip, the test extras); never `playwright install`: it downloads browsers
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
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

# --- the virtual environment -------------------------------------------------------------
PY="${PYTHON:-python3}"
VENV=.venv
pip_q=(-q --disable-pip-version-check)

healthy() {  # the venv's python runs, is 3.11 or newer, and has pip
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 &&
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

if ! healthy; then
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup: $PY not found; install Python 3.11 or newer (Debian: apt-get install python3)," \
      "or point PYTHON at one" >&2
    exit 1
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: kemu needs Python 3.11 or newer; $PY is $("$PY" -V 2>&1)." \
      "Point PYTHON at a newer one: PYTHON=python3.11 bash $0" >&2
    exit 1
  fi
  # Debian and Ubuntu ship venv's ensurepip (which puts pip into a new venv) separately
  if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: $PY cannot make a venv (no ensurepip); installing python3-venv" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq python3-venv >/dev/null
    fi
    if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "setup: $PY ($("$PY" -c 'import sys; print(sys.executable)')) cannot make a virtual" \
        "environment: its ensurepip module is missing. On Debian/Ubuntu install, as root:" \
        "apt-get install python3-venv (for another version than the distribution's python3:" \
        "$("$PY" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')), then run" \
        "this again; or point PYTHON at another Python 3.11+." >&2
      exit 1
    fi
  fi
  rm -rf "$VENV"
  echo "setup: creating $VENV with $("$PY" -c 'import sys; print(sys.executable)') ($("$PY" -V 2>&1))"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "setup: '$PY -m venv $VENV' failed (see above)" >&2
    exit 1
  fi
  healthy || { echo "setup: $VENV was created but its python or pip does not run" >&2; exit 1; }
fi
vpy="$VENV/bin/python"

# --- kemu in the venv --------------------------------------------------------------------
# the dask extra too: tests/test_replay_shard.py runs replay on a Dask cluster (#21)
"$vpy" -m pip install "${pip_q[@]}" -e ".[test,dask]"
# an editable install does not rebuild the extension when the .pyx changes: build it here,
# with the build requirements (pip installed them only in its isolated build environment)
"$vpy" -m pip install "${pip_q[@]}" "setuptools>=77" "Cython>=3.0"
"$vpy" setup.py -q build_ext --inplace
"$vpy" -c "import kemu._backend as b; assert b.BACKEND == 'cython', b.BACKEND; print('kemu: backend', b.BACKEND, 'in $VENV')"
# byte code now, as a regular pip install does (an editable install leaves it to the first
# run, and never writes it when PYTHONDONTWRITEBYTECODE is set: every start would compile)
"$vpy" -m compileall -q kemu >/dev/null
