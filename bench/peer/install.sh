#!/usr/bin/env bash
# Installs the Python peers of `make bench` into .bench/venv (once each):
# - OTools 0.2.2: its sdist builds only with Cython, setuptools and wheel
#   present and without build isolation.
# - service-framework 0.0.20 (ZeroMQ + msgpack): it declares no
#   dependencies, so pyzmq, msgpack and numpy are installed beside it.
# - os-m3-engine 0.1.2 (threads + queue.Queue); its Python 3.9+ shim
#   (Thread.isAlive) is in bench/peer/m3_peer.py.
# - eventor 5.1.9 (SQLAlchemy run store): its helper packages' sdists
#   (acrilib, acris, acrilog, sshpipe) import a `setup_utils` module that only
#   eventor's sdist ships, so eventor is downloaded first, its setup_utils.py
#   put on PYTHONPATH, and all five built without isolation or dependencies;
#   its own dependencies are installed beside them (SQLAlchemy < 1.4, ...).
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
if ! "$venv/bin/python" -c "import eventor" 2>/dev/null; then
  dl="$PWD/.bench/dl" su="$PWD/.bench/su"
  mkdir -p "$dl" "$su"
  { "$venv/bin/pip" install -q setuptools wheel "SQLAlchemy<1.4" namedlist pyyaml pexpect openpyxl \
    && "$venv/bin/pip" download -q --no-deps -d "$dl" eventor==5.1.9 \
    && tar xzf "$dl"/eventor-5.1.9.tar.gz -C "$dl" \
    && cp "$dl"/eventor-5.1.9/setup_utils.py "$su"/ \
    && PYTHONPATH="$su" "$venv/bin/pip" download -q --no-deps --no-build-isolation -d "$dl" acrilib acris acrilog sshpipe \
    && PYTHONPATH="$su" "$venv/bin/pip" install -q --no-deps --no-build-isolation \
      "$dl"/acrilib-*.tar.gz "$dl"/acris-*.tar.gz "$dl"/acrilog-*.tar.gz "$dl"/sshpipe-*.tar.gz "$dl"/eventor-5.1.9.tar.gz; } \
    || echo "warning: the eventor peer could not be installed; its column will read n/a"
fi
exit 0
