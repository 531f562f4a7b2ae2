#!/usr/bin/env python3
"""Time the control tool from the outside (BENCHMARKS.md, "The control tool").

Usage: bench/control_tool.py target/release/hotswap DIR
where DIR holds a release, e.g. from `target/release/hotswap demo --release-dir DIR`.
Starts the node in the background 20 times; each time pings it 3 times, leaves it idle for
200 ms, and stops it. Prints the medians."""
import statistics
import subprocess
import sys
import time

hotswap, rel = sys.argv[1], sys.argv[2]


def timed(args):
    t = time.perf_counter()
    r = subprocess.run([hotswap] + args, capture_output=True, text=True)
    return time.perf_counter() - t, r


pings, stops = [], []
for _ in range(20):
    r = subprocess.run([hotswap, "start", rel, "--background"], capture_output=True, text=True)
    assert r.returncode == 0, r
    for _ in range(3):
        dt, r = timed(["ping", "-d", rel])
        assert r.stdout == "pong\n", r
        pings.append(dt)
    time.sleep(0.2)
    dt, r = timed(["stop", "-d", rel])
    assert r.returncode == 0, r
    stops.append(dt)
for name, xs in [("ping round trip incl. process start", pings), ("stop of an idle node to OS exit", stops)]:
    print(f"{name}: median {statistics.median(xs) * 1e3:.2f} ms, min {min(xs) * 1e3:.2f}, max {max(xs) * 1e3:.2f} (n={len(xs)})")
t = time.perf_counter()
subprocess.run(["/bin/true"])
print(f"baseline: /bin/true {(time.perf_counter() - t) * 1e3:.2f} ms")
