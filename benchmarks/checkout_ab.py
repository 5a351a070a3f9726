"""The same measurements on this checkout and on a baseline checkout, alternating, for overhead.

    python benchmarks/checkout_ab.py --baseline /path/to/other/checkout --rounds 5

Each round runs, for this checkout (A) and the baseline (B) in alternating order (A B, then B A,
...), each in a fresh process with PYTHONPATH set to that checkout (both must be built in place):

1. ``shoal bench ENV --num-envs N --seconds S --json``: raw env agent-steps/s (no policy);
2. ``--epochs`` epochs of ``shoal train ENV`` with the shipped settings and the torch rollout,
   and the same with ``train.rollout='fused'``: training agent-steps/s over the epochs after the
   first ``--skip``.

It prints each run and the medians with the ratio A / B (> 1: this checkout is faster). On a shared
machine timings move by ±10-30% between runs: treat small ratios around 1 as noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = r"""
import json, sys, tempfile, time
from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer
env, rollout, epochs, skip = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with tempfile.TemporaryDirectory() as d:
    tr = Trainer(build_config(env, overrides={"train.rollout": rollout, "log.dashboard": "off",
                                             "log.run_dir": d + "/run", "train.total_steps": 10**9}))
    try:
        for _ in range(skip):
            tr.run_epoch()
        t0 = time.perf_counter()
        for _ in range(epochs):
            tr.run_epoch()
        print(json.dumps({"sps": epochs * tr.batch_size / (time.perf_counter() - t0)}))
    finally:
        tr.close()
"""


def measure(checkout: str, what: str, a: argparse.Namespace) -> float:
    env = dict(os.environ, PYTHONPATH=checkout)
    if what == "env":
        cmd = [sys.executable, "-m", "shoal", "bench", a.env, "--num-envs", str(a.num_envs),
               "--seconds", str(a.seconds), "--json"]
        key = "agent_steps_per_second"
    else:
        cmd = [sys.executable, "-c", TRAIN, a.env, what, str(a.epochs), str(a.skip)]
        key = "sps"
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=checkout)
    return float(json.loads(out.stdout.strip().splitlines()[-1])[key])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the other checkout (built in place)")
    p.add_argument("--env", default="breakout")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--measure", nargs="+", default=["env", "torch", "fused"],
                   choices=("env", "torch", "fused"))
    a = p.parse_args()
    sides = {"A": HERE, "B": os.path.abspath(a.baseline)}
    results: dict[str, dict[str, list[float]]] = {m: {"A": [], "B": []} for m in a.measure}
    for r in range(a.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for what in a.measure:
            for side in order:
                value = measure(sides[side], what, a)
                results[what][side].append(value)
                print(f"round {r} {what:5s} {side}: {value:,.0f} agent-steps/s", flush=True)
    print(f"\nA = {sides['A']}\nB = {sides['B']}\n{a.env}, medians of {a.rounds} rounds:")
    for what, by in results.items():
        ma, mb = statistics.median(by["A"]), statistics.median(by["B"])
        print(f"  {what:5s}  A {ma:,.0f}  B {mb:,.0f}  A/B {ma / mb:.3f}")


if __name__ == "__main__":
    main()
