"""The os-m3-engine 0.1.2 side of the pipeline rows of `make bench`.

Usage: m3_peer.py throughput N | blocked SECONDS

- throughput N: a frontend yields the integers 0..N-1, four transport
  threads pass each item on unchanged, one backend counts them; prints
  {"items": n, "seconds": s, "rate": n / s}, timed around `engine.start()`
  (which returns once the backend has drained).
- blocked SECONDS: a frontend yields integers for ever into a backend whose
  first `process` call waits (the queue, 100 items, fills up); once it is
  full, the process's CPU time (all threads) is measured over SECONDS;
  prints {"cpu_seconds": c, "window": w}.

The shim: os-m3-engine calls `Thread.isAlive()`, removed in Python 3.9; it
is aliased to `is_alive` here (without it `start()` raises and items are
lost).
"""

import json
import os
import sys
import threading
import time

threading.Thread.isAlive = threading.Thread.is_alive

from os_config import Config  # noqa: E402
from os_m3_engine.core.backend import Backend  # noqa: E402
from os_m3_engine.core.frontend import Frontend  # noqa: E402
from os_m3_engine.core.transport import Transport  # noqa: E402
from os_m3_engine.launcher import create  # noqa: E402

N = 0
COUNTS = []
RELEASE = threading.Event()


class Numbers(Frontend):
    def produce(self):
        return iter(range(N))


class Forever(Frontend):
    def produce(self):
        i = 0
        while True:
            yield i
            i += 1


class Pass(Transport):
    def transport(self, data):
        return data


class Count(Backend):
    def setup(self):
        self.n = 0

    def process(self, data):
        self.n += 1

    def cleanup(self):
        COUNTS.append(self.n)


class Stuck(Backend):
    def process(self, data):
        RELEASE.wait()


def throughput(n):
    global N
    N = n
    engine = create(
        frontend_cls=Numbers,
        transport_cls=Pass,
        backend_cls=Count,
        engine_transport_config=Config.create(thread_num=4),
    )
    t0 = time.perf_counter()
    engine.start()
    seconds = time.perf_counter() - t0
    items = sum(COUNTS)
    print(json.dumps({"items": items, "seconds": seconds, "rate": items / seconds}))


def blocked(window):
    engine = create(frontend_cls=Forever, transport_cls=None, backend_cls=Stuck)
    threading.Thread(target=engine.start, daemon=True).start()
    queue = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        queue = getattr(engine._runtime_context, "frontend_thread_queue", None)
        if queue is not None and queue.full():
            break
        time.sleep(0.01)
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(window)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    print(json.dumps({"cpu_seconds": cpu, "window": wall, "full": bool(queue and queue.full())}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "throughput":
        throughput(int(sys.argv[2]))
    elif sys.argv[1] == "blocked":
        blocked(float(sys.argv[2]))
    else:
        sys.exit("usage: m3_peer.py throughput N | blocked SECONDS")
