"""Python-env throughput: shoal's processes backend vs Gymnasium's AsyncVectorEnv and
Stable-Baselines3's SubprocVecEnv, on the same env and the same number of worker processes.

Every measurement runs in a fresh interpreter (``--one``), and the runners alternate round by
round; the medians and the ratio of shoal to the faster peer are printed. Random actions, no
policy, env-steps per second counted over all envs.

- shoal: ``shoal.make("gym:CartPole-v1", num_envs, backend="processes", num_workers=W)``, several
  envs per worker stepped in a loop into shared memory, one byte each way per step; measured
  both synchronous (``step``) and double-buffered (``recv``/``send`` with ``num_buffers=2``, one
  worker group stepping while the caller prepares the other's actions).
- Gymnasium ``AsyncVectorEnv`` (shared memory on, ``SAME_STEP`` autoreset like shoal) and SB3
  ``SubprocVecEnv``: one process per env, so ``W`` envs for ``W`` workers (their design); with
  ``--peer-envs`` they also run with more envs (one process each), to show oversubscription.

Envs: ``cartpole`` (``gymnasium.make("CartPole-v1")``, ~10 us per step) and ``slow`` (CartPole
plus ``--work-us`` microseconds of pure-Python work per step, an env dominated by its own code).

SB3 is measured only when ``stable_baselines3`` is installed (it is not a shoal dependency).

    python benchmarks/python_env_sps.py [--rounds 5] [--seconds 3] [--workers 2]
                                        [--envs-per-worker 16] [--work-us 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import gymnasium
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def busy_loop_iterations(work_us: float) -> int:
    """Iterations of :func:`burn` that take about ``work_us`` microseconds on this machine."""
    n = 20_000
    start = time.perf_counter()
    burn(n)
    per_iter = (time.perf_counter() - start) / n
    return max(1, int(work_us * 1e-6 / per_iter))


def burn(n: int) -> int:
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def make_env(kind: str, iterations: int) -> Any:
    """The benchmark env: CartPole-v1, plus ``iterations`` of Python work per step for 'slow'."""
    env = gymnasium.make("CartPole-v1")
    if kind == "slow":
        env = SlowWrapper(env, iterations)
    return env


class SlowWrapper(gymnasium.Wrapper):
    """Adds a fixed amount of pure-Python work to every step."""

    def __init__(self, env: Any, iterations: int) -> None:
        super().__init__(env)
        self.iterations = iterations

    def step(self, action: Any):
        burn(self.iterations)
        return self.env.step(action)


class EnvFn:
    """A picklable creator of the benchmark env (spawned workers import this module)."""

    def __init__(self, kind: str, iterations: int) -> None:
        self.kind, self.iterations = kind, iterations

    def __call__(self) -> Any:
        return make_env(self.kind, self.iterations)


# ---- one measurement, in its own interpreter ----

def timed(step: Any, seconds: float, warmup: float) -> tuple[int, float]:
    i = 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        step(i)
        i += 1
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step(n)
        n += 1
    return n, elapsed


def run_shoal(kind: str, iterations: int, workers: int, num_envs: int, buffers: int,
              seconds: float) -> float:
    from shoal.emulation import from_gymnasium
    from shoal.tools.bench import measure

    env = from_gymnasium(EnvFn(kind, iterations), num_envs, seed=0, backend="processes",
                         num_workers=workers, num_buffers=buffers, name=f"bench-{kind}")
    try:
        return measure(env, seconds)  # what `shoal bench` times: step(), or recv()/send()
    finally:
        env.close()


def run_gymnasium(kind: str, iterations: int, num_envs: int, seconds: float) -> float:
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode

    env = AsyncVectorEnv([EnvFn(kind, iterations) for _ in range(num_envs)], shared_memory=True,
                         context="spawn", autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        cache = [rng.integers(0, 2, num_envs) for _ in range(64)]
        n, elapsed = timed(lambda i: env.step(cache[i % 64]), seconds, warmup=0.5)
        return n * num_envs / elapsed
    finally:
        env.close()


def run_sb3(kind: str, iterations: int, num_envs: int, seconds: float) -> float:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    env = SubprocVecEnv([EnvFn(kind, iterations) for _ in range(num_envs)], start_method="spawn")
    try:
        env.seed(0)
        env.reset()
        rng = np.random.default_rng(0)
        cache = [rng.integers(0, 2, num_envs) for _ in range(64)]
        n, elapsed = timed(lambda i: env.step(cache[i % 64]), seconds, warmup=0.5)
        return n * num_envs / elapsed
    finally:
        env.close()


def one(args: argparse.Namespace) -> None:
    runner, kind = args.one
    its = args.iterations
    if runner == "shoal":
        sps = run_shoal(kind, its, args.workers, args.num_envs, 1, args.seconds)
    elif runner == "shoal2":
        sps = run_shoal(kind, its, args.workers, args.num_envs, 2, args.seconds)
    elif runner == "gymnasium":
        sps = run_gymnasium(kind, its, args.num_envs, args.seconds)
    else:
        sps = run_sb3(kind, its, args.num_envs, args.seconds)
    print(json.dumps({"sps": sps}))


# ---- the comparison ----

def measure(runner: str, kind: str, num_envs: int, a: argparse.Namespace, iterations: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", runner, kind,
           "--num-envs", str(num_envs), "--workers", str(a.workers), "--seconds", str(a.seconds),
           "--iterations", str(iterations)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["sps"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=2, help="worker processes (cores) for all")
    p.add_argument("--envs-per-worker", type=int, default=16, help="shoal envs per worker")
    p.add_argument("--peer-envs", type=int, nargs="*", default=[],
                   help="extra env counts for the peers (one process each), e.g. 8")
    p.add_argument("--work-us", type=float, default=200.0,
                   help="pure-Python work per step of the slow env, microseconds")
    p.add_argument("--envs", nargs="*", default=["cartpole", "slow"])
    # internal: one measurement
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--num-envs", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--iterations", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        one(a)
        return
    iterations = busy_loop_iterations(a.work_us)
    shoal_envs = a.workers * a.envs_per_worker
    peers = ["gymnasium"]
    if importlib.util.find_spec("stable_baselines3") is not None:
        peers.append("sb3")
    else:
        print("stable_baselines3 is not installed: SB3 SubprocVecEnv is left out", flush=True)
    runners = [("shoal", shoal_envs), ("shoal2", shoal_envs)] + [(r, a.workers) for r in peers]
    runners += [(r, n) for n in a.peer_envs for r in peers]
    labels = {"shoal": "shoal processes step()", "shoal2": "shoal processes recv/send",
              "gymnasium": "gymnasium AsyncVectorEnv", "sb3": "SB3 SubprocVecEnv"}
    print(f"{a.workers} worker processes, {os.cpu_count()} cores; slow env = CartPole + "
          f"{a.work_us:.0f} us of Python per step ({iterations} loop iterations); "
          f"{a.rounds} rounds x {a.seconds:.0f} s, alternating; medians", flush=True)
    results = []
    for kind in a.envs:
        runs: dict[tuple[str, int], list[float]] = {r: [] for r in runners}
        for _ in range(a.rounds):
            for runner, n in runners:
                runs[(runner, n)].append(measure(runner, kind, n, a, iterations))
        med = {key: statistics.median(v) for key, v in runs.items()}
        best_peer = max(v for (r, _), v in med.items() if r in ("gymnasium", "sb3"))
        for (runner, n), v in med.items():
            print(f"  {kind:<8} {labels[runner]:<28} {n:>3} envs  {v:>10,.0f} steps/s"
                  f"  x{v / best_peer:5.2f} of the faster peer", flush=True)
        best_shoal = max(med[("shoal", shoal_envs)], med[("shoal2", shoal_envs)])
        results.append({"env": kind, "workers": a.workers, "shoal_envs": shoal_envs,
                        "medians": {f"{r}/{n}": v for (r, n), v in med.items()},
                        "runs": {f"{r}/{n}": v for (r, n), v in runs.items()},
                        "shoal_over_faster_peer": round(best_shoal / best_peer, 3)})
        print(f"  {kind:<8} shoal / faster peer: {best_shoal / best_peer:.2f}x", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
