"""The Python OTools (0.2.2) side of `make bench`: each workload of the
table, written the way an OTools user would, printing one JSON line with
its figure. The Rust harness (bench/src/main.rs) runs it, unpinned and
pinned to one CPU, and keeps the better run.

Two shims, both documented in BENCHMARKS.md:
- Python 3.9+ removed Thread.isAlive, which OTools.run() calls.
- A TriggerCondition's main() is called with the class as `self`, so the
  documented counter-trigger example never fires; the condition here keeps
  its state in class attributes, which works with either `self`.
"""

import json
import sys
import threading
import time

threading.Thread.isAlive = threading.Thread.is_alive

from otools import LoggingLevel  # noqa: E402
from otools.core.Context import Context  # noqa: E402
from otools.core.Dataframe import Dataframe  # noqa: E402
from otools.core.OTools import OTools  # noqa: E402
from otools.core.Service import Service  # noqa: E402
from otools.core.Trigger import Trigger  # noqa: E402
from otools.core.TriggerCondition import TriggerCondition  # noqa: E402

QUIET = LoggingLevel.ERROR


def emit(**figures):
    print(json.dumps(figures), flush=True)


def app(*contexts):
    o = OTools()
    for c in contexts:
        o += c
    return o


def df_pairs(n):
    """get+set pairs per second from one service's main."""
    ctx = Context(level=QUIET, name="C")
    df = Dataframe(name="d")
    result = {}

    class Pairs:
        def setup(self):
            df.set("k", 0)

        def main(self):
            t = time.perf_counter()
            for _ in range(n):
                df.set("k", df.get("k") + 1)
            result["rate"] = n / (time.perf_counter() - t)
            ctx._active = False

    ctx += df
    ctx += Service(Pairs)
    o = app(ctx)
    o.setup()
    o.run()
    emit(rate=result["rate"])


def main_calls(iterations, watchdog=False):
    """main calls per second, 10 trivial services in one context
    (with `watchdog`: each service's main watched, 1 s, action warn)."""
    ctx = Context(level=QUIET, name="C")
    state = {"n": 0}

    class Nop:
        def main(self):
            pass

    class Stop:
        def main(self):
            state["n"] += 1
            if state["n"] >= iterations:
                ctx._active = False

    services = [Service(Nop, name="nop{}".format(i)) for i in range(10)]
    for svc in services:
        ctx += svc
    ctx += Service(Stop, name="stop")
    o = app(ctx)
    if watchdog:
        for svc in services:
            o.Watchdog += (svc, {"main": {"enable": True, "timeout": 1, "action": "warn"}})
        o.Watchdog.enable()
    o.setup()
    t = time.perf_counter()
    o.run()
    elapsed = time.perf_counter() - t
    emit(rate=10 * state["n"] / elapsed)


def loops(seconds):
    """4 services' loops incrementing one key with get+set: rate and loss."""
    ctx = Context(level=QUIET, name="C")
    df = Dataframe(name="d")
    attempts = [0, 0, 0, 0]
    stop = threading.Event()

    def make(i):
        class Inc:
            def setup(self):
                df.set("k", 0)

            def loop(self):
                if stop.is_set():
                    time.sleep(0.01)
                    return
                df.set("k", df.get("k") + 1)
                attempts[i] += 1

        return Inc

    class Timer:
        def setup(self):
            self.t0 = time.perf_counter()

        def main(self):
            if time.perf_counter() - self.t0 >= seconds:
                stop.set()
                ctx._active = False

    ctx += df
    for i in range(4):
        ctx += Service(make(i), name="inc{}".format(i))
    ctx += Service(Timer, name="timer")
    o = app(ctx)
    o.setup()
    t = time.perf_counter()
    o.run()
    elapsed = time.perf_counter() - t
    total = sum(attempts)
    final = df.get("k") if total else 0
    emit(rate=final / elapsed, lost=100.0 * (total - final) / max(total, 1))


def counter_trigger(limit):
    """OTools' counter trigger example, to `limit`: the process timing is measured outside."""
    ctx = Context(level=QUIET, name="C")
    df = Dataframe(name="counter")

    class Increment:
        def setup(self):
            df.set("count", 0)

        def main(self):
            df.set("count", df.get("count") + 1)

    class AtLeast:
        # Called with the class as `self` (see the module doc): class state only.
        dataframe = df

        def main(self):
            return AtLeast.dataframe.get("count") >= limit

    class Shutdown:
        def main(self):
            ctx._active = False

    trigger = Trigger(name="stop", triggerType="or")
    trigger += TriggerCondition(AtLeast)
    trigger += Service(Shutdown)
    ctx += df
    ctx += Service(Increment)
    ctx += trigger
    o = app(ctx)
    o.setup()
    o.run()
    emit(count=df.get("count"))


if __name__ == "__main__":
    workload, arg = sys.argv[1], float(sys.argv[2])
    {
        "df_pairs": lambda: df_pairs(int(arg)),
        "main_calls": lambda: main_calls(int(arg)),
        "main_calls_watchdog": lambda: main_calls(int(arg), watchdog=True),
        "loops": lambda: loops(arg),
        "counter_trigger": lambda: counter_trigger(int(arg)),
    }[workload]()
