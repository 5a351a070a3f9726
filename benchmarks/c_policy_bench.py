"""The C policy's forward + sample at breakout's shape, in thread CPU time per agent-step.

    python benchmarks/c_policy_bench.py                       # this checkout only
    python benchmarks/c_policy_bench.py --baseline /path/to/other/checkout --rounds 5

Times shoal.net.runtime.CPolicy (the binding of shoal/net/shoal_net.h, built in place with
`python setup.py build_ext --inplace`) on breakout's MLP-128 policy and 256 agents per call, one
thread (OMP_NUM_THREADS=1), the forward and the sampling separately. Each round runs this
checkout and, with --baseline, the other one in a fresh process each, alternating which goes
first; the summary gives medians over rounds and the baseline/this ratio. Thread CPU time is
used so that the numbers hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = r"""
import json, sys, time
import numpy as np
import shoal
from shoal.net.runtime import CPolicy, agent_rng
from shoal.trainer.policies import make_policy
from shoal.vector import make

seconds = float(sys.argv[1])
env = make("breakout", num_envs=256)
policy = make_policy(env, "mlp", hidden=128)
B = env.num_agents
obs, _ = env.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(50):  # observations from play, not only the reset
    obs, *_ = env.step(rng.integers(0, 3, size=B))
obs = np.array(obs)
env.close()
cpolicy = CPolicy.from_policy(policy, obs.dtype)
states = agent_rng(B, 0)
params, _ = cpolicy.forward(obs)


def per_agent_us(fn):
    fn()
    t0, n = time.thread_time(), 0
    while time.thread_time() - t0 < seconds:
        fn()
        n += 1
    return (time.thread_time() - t0) / n / B * 1e6


forward = per_agent_us(lambda: cpolicy.forward(obs))
sample = per_agent_us(lambda: cpolicy.sample(params, states))
print(json.dumps({"module": shoal.__file__, "forward": forward, "sample": sample}))
"""


def measure(checkout: str, seconds: float) -> dict[str, float]:
    """One fresh process timing the C policy of the checkout at ``checkout``."""
    env = dict(os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEASURE, str(seconds)], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not os.path.realpath(result["module"]).startswith(os.path.realpath(checkout)):
        raise SystemExit(f"{checkout}: imported shoal from {result['module']}; build it in place "
                         "(python setup.py build_ext --inplace)")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=None, help="another shoal checkout, built in place")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per timing")
    args = ap.parse_args()
    sides = {"this": HERE, **({"baseline": os.path.abspath(args.baseline)} if args.baseline else {})}
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for side in order:
            m = measure(sides[side], args.seconds)
            runs[side].append(m)
            print(f"round {r} {side:8s}: forward {m['forward']:.3f} us, sample "
                  f"{m['sample']:.3f} us per agent-step (thread CPU)", flush=True)
    med = {side: {k: statistics.median(m[k] for m in runs[side]) for k in ("forward", "sample")}
           for side in sides}
    print(f"\nmedians over {args.rounds} rounds (MLP-128 breakout policy, 256 agents per call, "
          "one thread)")
    for side in sides:
        total = med[side]["forward"] + med[side]["sample"]
        print(f"{side:8s}: forward {med[side]['forward']:.3f} us + sample "
              f"{med[side]['sample']:.3f} us = {total:.3f} us per agent-step")
    if "baseline" in sides:
        for k in ("forward", "sample"):
            print(f"baseline/this {k}: {med['baseline'][k] / med['this'][k]:.2f}x")
        tb = med["baseline"]["forward"] + med["baseline"]["sample"]
        tt = med["this"]["forward"] + med["this"]["sample"]
        print(f"baseline/this forward + sample: {tb / tt:.2f}x")


if __name__ == "__main__":
    main()
