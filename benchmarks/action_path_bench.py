"""Cost of the action checks on the stepping path: this tree against a baseline checkout.

Each configuration is timed in a fresh interpreter for this tree and for the baseline (a checkout
built in place, e.g. the commit before the change), alternating, --rounds times each; the medians
and the ratio (this tree / baseline, agent-steps per second) are printed. The configurations are
small on purpose (few envs, cheap envs), so that any per-send overhead shows:

- serial/threads step(): the binding copies the actions before checking them;
- threads recv()/send() with the actions written into env.actions (the trainer's path);
- processes recv()/send() with the actions written into env.actions: now checked in Python.

    python benchmarks/action_path_bench.py --baseline /path/to/baseline/checkout [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# (label, env, make() keywords, how actions are handed over)
CONFIGS = [
    ("serial step, template x64", "template", dict(num_envs=64), "step"),
    ("serial step, maze x1024", "maze", dict(num_envs=1024), "step"),
    ("threads send, env.actions, maze x64", "maze",
     dict(num_envs=64, backend="threads", num_workers=2, num_buffers=2), "direct"),
    ("processes send, env.actions, template x64", "template",
     dict(num_envs=64, backend="processes", num_workers=2, num_buffers=2), "direct"),
]

CHILD = r"""
import sys, time, numpy as np, shoal
name, kw, mode, seconds = sys.argv[1], eval(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if __name__ == "__main__":
    env = shoal.make(name, seed=0, **kw)
    env.reset()
    rng = np.random.default_rng(0)
    n = env.single_action_space.n
    if mode == "step":
        cache = [rng.integers(0, n, env.num_agents).astype(np.int32) for _ in range(64)]
        tick = lambda i: env.step(cache[i % 64])
        rows_per_tick = env.num_agents
    else:
        rows_per_tick = env.num_agents // env.num_buffers
        cache = [rng.integers(0, n, rows_per_tick).astype(np.int32) for _ in range(64)]
        def tick(i):
            *_, rows = env.recv()
            env.actions[rows] = cache[i % 64]
            env.send(env.actions[rows])
    for i in range(200):
        tick(i)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        tick(steps)
        steps += 1
    print(steps * rows_per_tick / elapsed)
    env.close()
"""


def rate(tree: Path, name: str, kw: dict, mode: str, seconds: float) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, name, repr(kw), mode, str(seconds)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a shoal checkout built in place (python setup.py build_ext --inplace)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    print(f"{'configuration':46s} {'this tree':>12s} {'baseline':>12s} {'ratio':>7s}")
    for label, name, kw, mode in CONFIGS:
        mine, base = [], []
        for _ in range(args.rounds):
            mine.append(rate(HERE, name, kw, mode, args.seconds))
            base.append(rate(args.baseline, name, kw, mode, args.seconds))
        m, b = statistics.median(mine), statistics.median(base)
        print(f"{label:46s} {m:12,.0f} {b:12,.0f} {m / b:7.3f}", flush=True)


if __name__ == "__main__":
    main()
