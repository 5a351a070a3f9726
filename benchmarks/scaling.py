"""Multi-core scaling of the threads backend, against the machine's own scaling.

s0: throughput of a trivial CPU-bound C loop on 2 threads / on 1 thread (what this machine can
    give right now: its second core is at times shared).
s:  agent-steps/s of `shoal bench ENV --backend threads` with 2 workers / with 1 worker.
Prints s, s0 and s/s0 (target >= 0.9). Runs alternate; medians are reported.

    python benchmarks/scaling.py [--env breakout] [--num-envs 4096] [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def build_spin(out_dir: str) -> str:
    exe = os.path.join(out_dir, "spin")
    subprocess.run(["gcc", "-O2", "-pthread", os.path.join(HERE, "spin.c"), "-o", exe], check=True)
    return exe


def spin_rate(exe: str, threads: int, iterations: int) -> float:
    seconds = float(subprocess.run([exe, str(threads), str(iterations)], check=True,
                                   capture_output=True, text=True).stdout)
    return threads * iterations / seconds


def env_rate(env: str, workers: int, num_envs: int, seconds: float, buffers: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "bench", env, "--backend", "threads", "--num-workers",
         str(workers), "--num-envs", str(num_envs), "--num-buffers", str(buffers), "--seconds",
         str(seconds), "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["agent_steps_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="breakout")
    p.add_argument("--num-envs", type=int, default=4096)
    p.add_argument("--num-buffers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--spin-iterations", type=int, default=400_000_000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_spin(tmp)
        s0s, ss = [], []
        for r in range(a.rounds):
            one, two = spin_rate(exe, 1, a.spin_iterations), spin_rate(exe, 2, a.spin_iterations)
            e1 = env_rate(a.env, 1, a.num_envs, a.seconds, a.num_buffers)
            e2 = env_rate(a.env, 2, a.num_envs, a.seconds, a.num_buffers)
            s0s.append(two / one)
            ss.append(e2 / e1)
            print(f"round {r}: spin 1t {one / 1e6:.0f} M/s 2t {two / 1e6:.0f} M/s (s0 {two / one:.2f}); "
                  f"{a.env} 1w {e1 / 1e6:.2f} M/s 2w {e2 / 1e6:.2f} M/s (s {e2 / e1:.2f})", flush=True)
    s0, s = statistics.median(s0s), statistics.median(ss)
    print(json.dumps({"env": a.env, "num_envs": a.num_envs, "num_buffers": a.num_buffers,
                      "rounds": a.rounds, "s0_median": round(s0, 3), "s_median": round(s, 3),
                      "s_over_s0": round(s / s0, 3)}))


if __name__ == "__main__":
    main()
