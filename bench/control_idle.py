#!/usr/bin/env python3
"""Time `hotswap ping` while idle clients hold the control socket (BENCHMARKS.md, "The
control tool"; issue 10, part 7).

Usage: bench/control_idle.py target/release/hotswap DIR [IDLE]
where DIR holds a release, e.g. from `target/release/hotswap demo --release-dir DIR`.
For each of 5 runs: starts the node in the background, times 20 pings with no other
client, opens IDLE (default 1000) connections that send nothing, times 20 more pings while
they are all connected, checks that the node has closed none of them yet, and stops the
node. Prints the median of each run and over all runs."""
import resource
import socket
import statistics
import subprocess
import sys
import time

hotswap, rel = sys.argv[1], sys.argv[2]
idle_n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < idle_n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle_n + 64), hard))


def pings(n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run([hotswap, "ping", "-d", rel], capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        assert r.returncode == 0 and r.stdout == "pong\n", r
    return out


alone, loaded = [], []
for run in range(5):
    r = subprocess.run([hotswap, "start", rel, "--background"], capture_output=True, text=True)
    assert r.returncode == 0, r
    a = pings(20)
    idle = [socket.socket(socket.AF_UNIX) for _ in range(idle_n)]
    for s in idle:
        s.connect(rel + "/run/control.sock")
    b = pings(20)
    for s in idle:
        s.setblocking(False)
        try:
            s.recv(1)
            raise SystemExit("the node answered or closed an idle connection before its deadline")
        except BlockingIOError:
            pass
        s.close()
    r = subprocess.run([hotswap, "stop", "-d", rel], capture_output=True, text=True)
    assert r.returncode == 0, r
    print(f"run {run + 1}: ping median {statistics.median(a) * 1e3:.2f} ms alone, "
          f"{statistics.median(b) * 1e3:.2f} ms with {idle_n} idle connections (max {max(b) * 1e3:.2f}; "
          f"the first, right after they connected, {b[0] * 1e3:.2f})")
    alone += a
    loaded += b
for name, xs in [("alone", alone), (f"with {idle_n} idle connections", loaded)]:
    print(f"ping {name}: median {statistics.median(xs) * 1e3:.2f} ms, "
          f"min {min(xs) * 1e3:.2f}, max {max(xs) * 1e3:.2f} (n={len(xs)})")
