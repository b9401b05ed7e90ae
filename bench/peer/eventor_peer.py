"""The eventor 5.1.9 side of `make bench`'s flow rows (bench/src/flow.rs runs
it). Prints one JSON line with its figures.

- `chain N CONSTRUCT SLEEP`: N steps in a chain (event e<i> activates step
  s<i>, whose success raises e<i+1>), one sequence, in a fresh SQLite store;
  steps per second over `run()`. CONSTRUCT is eventor's `task_construct`
  (`process`, its default, or `thread`), SLEEP its `sleep_between_loops`
  (default 0.25 s: the harness passes a small one, the peer's best).
- `probe`: exits 0 when eventor imports (with the shims below).
- `recover N K CONSTRUCT SLEEP`: the same chain in its own process, whose
  step K sleeps until that process is killed (SIGKILL, its whole process
  group, once step K has started); then a new process runs eventor in
  `RunMode.recover` on the same store. Reports the milliseconds from
  starting that process to step K starting again (resume_ms), and the
  seconds to the end of the recovered run (finish_s).

Shims eventor needs on Python 3.11 (see /work/shared/PEERS.md): the
`collections` ABC aliases removed in 3.10 (acrilib, acris use them), and
`socketserver.ThreadingTCPServer.daemon_threads = True` before importing
eventor (its `run()` never returns otherwise: its log server joins handler
threads whose sockets stay open).
"""

import collections
import collections.abc
import json
import os
import signal
import socketserver
import subprocess
import sys
import tempfile
import time

for _name in ("MutableMapping", "Mapping", "Sequence", "Iterable", "Callable",
              "MutableSet", "MutableSequence", "Set", "Hashable"):
    setattr(collections, _name, getattr(collections.abc, _name))
socketserver.ThreadingTCPServer.daemon_threads = True

import logging  # noqa: E402

import eventor as evr  # noqa: E402


def emit(**figures):
    print(json.dumps(figures), flush=True)


def nop(i):
    return i


def step_k(marker, phase):
    """Step K: marks that it started; in the first run, sleeps until killed."""
    with open(marker + "." + phase, "w") as f:
        f.write("started")
    if phase == "first":
        while True:
            time.sleep(1)
    return True


def build(store, n, k, construct, sleep, mode, marker=None, phase=None):
    config = {
        "task_construct": construct,
        "sleep_between_loops": sleep,
        "LOGGING": {"logging_level": logging.ERROR,
                    "logdir": os.path.join(os.path.dirname(store), "log")},
    }
    ev = evr.Eventor(name="chain", store=store, run_mode=mode, config=config)
    events = [ev.add_event("e%d" % i) for i in range(n)]
    for i in range(n):
        triggers = {evr.StepStatus.success: (events[i + 1],)} if i + 1 < n else {}
        if i == k:
            step = ev.add_step("s%d" % i, func=step_k,
                               kwargs={"marker": marker, "phase": phase},
                               triggers=triggers)
        else:
            step = ev.add_step("s%d" % i, func=nop, kwargs={"i": i}, triggers=triggers)
        ev.add_assoc(events[i], step)
    return ev, events


def chain(n, construct, sleep):
    d = tempfile.mkdtemp(prefix="eventor-chain-")
    ev, events = build(os.path.join(d, "chain.db"), n, -1, construct, sleep,
                       evr.RunMode.restart)
    ev.trigger_event(events[0], 1)
    t = time.perf_counter()
    ok = ev.run()
    elapsed = time.perf_counter() - t
    ev.close()
    emit(steps_per_s=n / elapsed, seconds=elapsed, ok=bool(ok))


def child(phase, store, n, k, construct, sleep, marker):
    mode = evr.RunMode.restart if phase == "first" else evr.RunMode.recover
    ev, events = build(store, n, k, construct, sleep, mode, marker, phase)
    # A recovery runs the same program again: its first event is raised
    # again, and the steps that succeeded are skipped.
    ev.trigger_event(events[0], 1)
    ok = ev.run()
    ev.close()
    sys.exit(0 if ok else 1)


def wait_for(path, proc, limit):
    deadline = time.perf_counter() + limit
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise SystemExit("the eventor run ended (%s) before %s" % (proc.returncode, path))
        if time.perf_counter() > deadline:
            raise SystemExit("no %s within %ss" % (path, limit))
        time.sleep(0.0005)


def recover(n, k, construct, sleep):
    d = tempfile.mkdtemp(prefix="eventor-recover-")
    store, marker = os.path.join(d, "chain.db"), os.path.join(d, "k")
    me = [sys.executable, os.path.abspath(__file__)]
    args = [store, str(n), str(k), construct, str(sleep), marker]
    first = subprocess.Popen(me + ["_child", "first"] + args, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker + ".first", first, 3600)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    t = time.perf_counter()
    second = subprocess.Popen(me + ["_child", "recover"] + args, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker + ".recover", second, 3600)
    resume = time.perf_counter() - t
    code = second.wait()
    finish = time.perf_counter() - t
    emit(resume_ms=resume * 1e3, finish_s=finish, ok=code == 0)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "chain":
        chain(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    elif what == "recover":
        recover(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    elif what == "probe":
        emit(eventor=evr.__name__)
    elif what == "_child":
        phase, store, n, k, construct, sleep, marker = sys.argv[2:9]
        child(phase, store, int(n), int(k), construct, float(sleep), marker)
    else:
        raise SystemExit("usage: eventor_peer.py chain N CONSTRUCT SLEEP | recover N K CONSTRUCT SLEEP")
