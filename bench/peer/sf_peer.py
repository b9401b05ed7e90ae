"""The service-framework (0.0.20, ZeroMQ + msgpack) side of `make bench`'s
messaging rows, written the way its README shows a service: a module with
`connection_models`, run by `service_framework.Service`. Prints one JSON
line with its figures; the Rust harness (bench/src/main.rs) runs it.

- `round_trip N`: a replier service (its own process, as `Service.run_service`
  starts it) and a requester in main mode (this process) that times N
  requests with `perf_counter`: p50/p99 in microseconds, and messages per
  second (N over the whole loop). service-framework has no working one-way
  connection between two services (its subscriber's validator rejects the
  handler key it then reads; see /work/shared/PEERS.md), so the harness
  reports this rate as the peer's one-way figure, labelled as request/reply.
- `idle N SECS`: N repliers, each its own process, as shipped (no
  `service_loop_min_wait_time_s`: the loop polls with a zero timeout); the
  CPU they use over SECS seconds, in percent of one core, from
  /proc/<pid>/stat of every replier process.
"""

import json
import os
import socket
import sys
import time
import types

from service_framework import Service

QUIET = "ERROR"


def emit(**figures):
    print(json.dumps(figures), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_echo(args, to_send, config):
    return {"x": args["x"]}


def service_module(name, side, connection_type, **extra):
    """A service module with one connection `echo` that takes and returns
    {"x": int}."""
    m = types.ModuleType(name)
    model = {
        "connection_type": connection_type,
        "required_arguments": {"x": int},
        "required_return_arguments": {"x": int},
    }
    model.update(extra)
    m.connection_models = {side: {"echo": model}}
    return m


def replier_module():
    return service_module(
        "bench_replier",
        "in",
        "replyer",
        required_creation_arguments={"connection_function": on_echo},
    )


def start_replier(port):
    svc = Service(
        service_module=replier_module(),
        addresses={"in": {"echo": {"replyer": "127.0.0.1:%d" % port}}},
        console_loglevel=QUIET,
    )
    svc.run_service()
    return svc


def round_trip(n):
    port = free_port()
    replier = start_replier(port)
    result = {}

    def main(to_send, config):
        for _ in range(min(n, 1000)):  # warm-up, and waits for the replier to bind
            to_send("echo", {"x": 1})
        times = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            to_send("echo", {"x": i})
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        times.sort()
        result["p50_us"] = times[len(times) // 2] * 1e6
        result["p99_us"] = times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6
        result["rate"] = n / total

    requester = service_module("bench_requester", "out", "requester")
    requester.main = main
    Service(
        service_module=requester,
        addresses={"out": {"echo": {"requester": "127.0.0.1:%d" % port}}},
        console_loglevel=QUIET,
    ).run_service_as_main_blocking()
    replier.process.kill()
    replier.process.join()
    emit(**result)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle(n, secs):
    repliers = [start_replier(free_port()) for _ in range(n)]
    time.sleep(1.0)  # every replier imported, bound and in its loop
    pids = [r.process.pid for r in repliers]
    c0 = sum(cpu_ticks(p) for p in pids)
    t0 = time.perf_counter()
    time.sleep(secs)
    c1 = sum(cpu_ticks(p) for p in pids)
    wall = time.perf_counter() - t0
    for r in repliers:
        r.process.kill()
    for r in repliers:
        r.process.join()
    hz = os.sysconf("SC_CLK_TCK")
    emit(cpu_percent=(c1 - c0) / hz / wall * 100.0, repliers=n)


if __name__ == "__main__":
    {
        "round_trip": lambda: round_trip(int(sys.argv[2])),
        "idle": lambda: idle(int(sys.argv[2]), float(sys.argv[3])),
    }[sys.argv[1]]()
