"""The same measurements on this checkout and on a baseline checkout, alternating, for overhead.

    python benchmarks/checkout_ab.py --baseline /path/to/other/checkout --rounds 5

Each round runs, for this checkout (A) and the baseline (B) in alternating order (A B, then B A,
...), each in a fresh process with PYTHONPATH set to that checkout (both must be built in place):

1. ``env``: ``--num-envs`` envs of ENV on the serial backend stepped ``--env-steps`` times with
   random actions (no policy);
2. ``torch`` / ``fused``: ``--epochs`` epochs of ``shoal train ENV`` with the shipped settings
   and ``train.rollout`` torch / fused, after ``--skip`` epochs of start-up.

Each reports agent-steps per second of wall time and per second of the process's CPU time; the
CPU-time rate is the steadier one on a busy machine (other jobs take wall time, not this
process's CPU time). It prints each run, then the medians with the ratio A / B (> 1: this checkout
is faster). Treat ratios within a few percent of 1 as noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, tempfile, time
import numpy as np
what, env, n, skip, num_envs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if what == "env":
    import shoal
    vec = shoal.make(env, num_envs, seed=0)
    vec.reset()
    acts = [np.random.default_rng(i).integers(0, 2, vec.actions.shape).astype(np.int32)
            for i in range(16)]
    for i in range(skip):
        vec.step(acts[i % 16])
    w, c = time.perf_counter(), time.process_time()
    for i in range(n):
        vec.step(acts[i % 16])
    steps = n * vec.num_agents
    vec.close()
else:
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer
    with tempfile.TemporaryDirectory() as d:
        # synchronous and float32 on either path, whatever the env's shipped file chooses
        tr = Trainer(build_config(env, overrides={
            "train.rollout": what, "train.overlap": False, "train.precision": "float32",
            "log.dashboard": "off", "log.run_dir": d + "/run", "train.total_steps": 10**9}))
        try:
            for _ in range(skip):
                tr.run_epoch()
            w, c = time.perf_counter(), time.process_time()
            for _ in range(n):
                tr.run_epoch()
            steps = n * tr.batch_size
        finally:
            tr.close()
print(json.dumps({"wall": steps / (time.perf_counter() - w), "cpu": steps / (time.process_time() - c)}))
"""


def measure(checkout: str, what: str, a: argparse.Namespace) -> dict[str, float]:
    n = a.env_steps if what == "env" else a.epochs
    skip = 10 if what == "env" else a.skip
    cmd = [sys.executable, "-c", CHILD, what, a.env, str(n), str(skip), str(a.num_envs)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=checkout), cwd=checkout)
    if out.returncode != 0:
        raise SystemExit(f"the {what} measurement failed in {checkout}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the other checkout (built in place)")
    p.add_argument("--env", default="breakout")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--num-envs", type=int, default=1024, help="envs of the env measurement")
    p.add_argument("--env-steps", type=int, default=2000, help="vector steps of the env measurement")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--measure", nargs="+", default=["env", "torch", "fused"],
                   choices=("env", "torch", "fused"))
    a = p.parse_args()
    sides = {"A": HERE, "B": os.path.abspath(a.baseline)}
    results: dict[str, dict[str, list[dict[str, float]]]] = {m: {"A": [], "B": []}
                                                             for m in a.measure}
    for r in range(a.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for what in a.measure:
            for side in order:
                value = measure(sides[side], what, a)
                results[what][side].append(value)
                print(f"round {r} {what:5s} {side}: {value['wall']:,.0f} agent-steps/s wall, "
                      f"{value['cpu']:,.0f} per CPU-second", flush=True)
    print(f"\nA = {sides['A']}\nB = {sides['B']}\n{a.env}, medians of {a.rounds} rounds "
          f"(agent-steps/s):")
    for what, by in results.items():
        for clock in ("wall", "cpu"):
            ma = statistics.median(v[clock] for v in by["A"])
            mb = statistics.median(v[clock] for v in by["B"])
            print(f"  {what:5s} {clock:4s}  A {ma:,.0f}  B {mb:,.0f}  A/B {ma / mb:.3f}")


if __name__ == "__main__":
    main()
