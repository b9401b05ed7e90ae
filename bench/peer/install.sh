#!/usr/bin/env bash
# Installs the Python OTools peer of `make bench` into .bench/venv (once).
# OTools 0.2.2's sdist builds only with Cython, setuptools and wheel present
# and without build isolation. A failure here is reported, not fatal: the
# benchmark table then shows the OTools column as n/a.
set -u
cd "$(dirname "$0")/../.."
venv=.bench/venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import otools" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv" \
  && "$venv/bin/pip" install -q Cython setuptools wheel \
  && "$venv/bin/pip" install -q --no-build-isolation otools==0.2.2 \
  || echo "warning: the Python OTools peer could not be installed; its column will read n/a"
exit 0
