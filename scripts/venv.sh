#!/usr/bin/env bash
# Makes ./.venv (or brings it up to date) on the fastest CPython 3.11+ of this machine, then
# runs `.venv/bin/pip install -q "$@"` in it. `venv.sh --check` only tells (exit status) whether
# /usr/bin/python3 can be that interpreter (3.11+ with venv and its C headers).
#
# The distribution's /usr/bin/python3 comes first: Debian's (like Ubuntu's, Fedora's and the
# official Docker images') is built with profile-guided optimization and LTO, and here costs
# ~12 % less CPU per query than a default pyenv build, which has neither (BENCHMARKS.md, "The
# interpreter"). Any other python3 on the PATH is the fallback. A venv made on another
# interpreter than the one chosen is made anew.
set -euo pipefail
cd "$(dirname "$0")/.."
usable='import ensurepip, os, sys, sysconfig, venv
sys.exit(sys.version_info < (3, 11)
         or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
py=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "$usable" 2>/dev/null; then
  py=/usr/bin/python3
elif [ "${1:-}" = --check ]; then
  exit 1
fi
[ "${1:-}" = --check ] && exit 0
real='import os, sys; print(os.path.realpath(sys._base_executable))'
want=$("$py" -c "$real")
have=$(.venv/bin/python -c "$real" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  "$py" -m venv --clear .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "$@"
