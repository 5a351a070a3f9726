"""The exported C policy's forward pass per agent-step against torch's, same policy, same run.

    python benchmarks/export_bench.py [RUN_DIR] [--batches 1,16,256] [--rounds 7]

RUN_DIR: a breakout run (default: a fresh untrained MLP policy of hidden 128, the shipped
size). For each batch size both sides run the same observations (recorded from the env) in
alternating rounds; each round times repeated calls, and the medians are reported as
microseconds per agent-step with the ratio torch / C. The C side is ``shoal_net.h`` through its
Python binding (``shoal.net.runtime.CPolicy``, one thread); torch runs the policy under
``inference_mode`` with one thread, as a single-agent player would.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

import shoal  # noqa: E402
from shoal.net.runtime import CPolicy  # noqa: E402
from shoal.trainer.policies import make_policy  # noqa: E402


def timed(fn, seconds: float = 0.3) -> float:
    """Seconds per call of fn, over at least `seconds`."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="run directory (default: untrained breakout MLP)")
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.run:
        from shoal.tools.runs import load_run
        from shoal.trainer.eval_cli import load_policy

        run = load_run(args.run)
        env = shoal.make(run.env_name, 256, seed=0, **run.env_params)
        policy = load_policy(run.checkpoint, env)
        label = f"{run.env_name} {run.policy_name} ({args.run})"
    else:
        env = shoal.make("breakout", 256, seed=0)
        torch.manual_seed(0)
        policy = make_policy(env, "mlp", hidden=128).eval()
        label = "breakout mlp hidden 128 (untrained)"
    obs, _ = env.reset(0)
    rng = np.random.default_rng(0)
    for _ in range(50):       # observations from the middle of episodes
        obs, *_ = env.step(rng.integers(0, 3, env.num_agents).astype(np.int32))
    obs = obs.copy()
    env.close()
    cpol = CPolicy.from_policy(policy, obs.dtype)
    print(f"policy: {label}; torch {torch.__version__}, 1 thread")
    print("| batch | torch us/agent-step | C us/agent-step | torch / C |")
    print("|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        o = np.ascontiguousarray(obs[:batch])
        o_t = torch.from_numpy(o).unsqueeze(1)
        state_t = policy.initial_state(batch) if hasattr(policy, "initial_state") else None
        state_c = cpol.initial_state(batch)

        def run_torch():
            with torch.inference_mode():
                policy(o_t, state_t, None)

        def run_c():
            cpol.forward(o, None, state_c)

        t_times, c_times = [], []
        for _ in range(args.rounds):         # alternate, so drift hits both sides alike
            t_times.append(timed(run_torch) / batch)
            c_times.append(timed(run_c) / batch)
        t, c = statistics.median(t_times), statistics.median(c_times)
        print(f"| {batch} | {t * 1e6:.2f} | {c * 1e6:.2f} | {t / c:.2f}x |")


if __name__ == "__main__":
    main()
