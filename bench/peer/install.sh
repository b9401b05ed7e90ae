#!/usr/bin/env bash
# Installs the Python peers of `make bench` into .bench/venv (once each):
# - OTools 0.2.2: its sdist builds only with Cython, setuptools and wheel
#   present and without build isolation.
# - service-framework 0.0.20 (ZeroMQ + msgpack): it declares no
#   dependencies, so pyzmq, msgpack and numpy are installed beside it.
# - os-m3-engine 0.1.2 (threads + queue.Queue); its Python 3.9+ shim
#   (Thread.isAlive) is in bench/peer/m3_peer.py.
# A failure here is reported, not fatal: the benchmark table then shows that
# peer's column as n/a.
set -u
cd "$(dirname "$0")/../.."
venv=.bench/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" \
  || { echo "warning: no venv for the Python peers; their columns will read n/a"; exit 0; }
if ! "$venv/bin/python" -c "import otools" 2>/dev/null; then
  "$venv/bin/pip" install -q Cython setuptools wheel \
    && "$venv/bin/pip" install -q --no-build-isolation otools==0.2.2 \
    || echo "warning: the Python OTools peer could not be installed; its column will read n/a"
fi
if ! "$venv/bin/python" -c "import service_framework, zmq, msgpack, numpy" 2>/dev/null; then
  "$venv/bin/pip" install -q pyzmq msgpack numpy service-framework==0.0.20 \
    || echo "warning: the service-framework peer could not be installed; its column will read n/a"
fi
if ! "$venv/bin/python" -c "import os_m3_engine" 2>/dev/null; then
  "$venv/bin/pip" install -q os-m3-engine==0.1.2 \
    || echo "warning: the os-m3-engine peer could not be installed; its column will read n/a"
fi
exit 0
