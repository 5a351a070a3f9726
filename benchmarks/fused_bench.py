"""The fused rollout (train.rollout='fused') against the torch rollout, measured in one run.

Three measurements, each alternating the two sides round after round and reporting medians:

1. ``shoal train breakout`` with the shipped settings (configs/breakout.toml) and
   ``--train.rollout fused`` vs ``--train.rollout torch``: training steps/s over epochs
   ``--skip``.. of a run of ``--epochs`` epochs (a fresh run each round, seed = round).
2. The inference share of an epoch on each side: (rollout time - env stepping time) / epoch
   time, from the same runs' metrics (``time.inference`` / sum of ``time``).
3. The policy's forward + sample per agent-step, breakout's MLP-128 on its 256 agents: the C
   net (shoal_net.h through shoal.net.runtime.CPolicy, one thread) vs torch
   (shoal.trainer.policies.Inference.act, one torch thread), wall and CPU time.

    python benchmarks/fused_bench.py --rounds 5 --epochs 12

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def train_round(rollout: str, epochs: int, seed: int) -> list[dict]:
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    run_dir = tempfile.mkdtemp(prefix=f"shoal-fused-bench-{rollout}-")
    cfg = build_config("breakout", overrides={
        "train.rollout": rollout, "train.seed": seed, "log.dashboard": "off",
        "log.run_dir": os.path.join(run_dir, "run"), "log.checkpoint_interval": 10**6})
    cfg.train.total_steps = epochs * cfg.env.num_envs * cfg.train.horizon
    trainer = Trainer(cfg)
    trainer.train()
    with open(os.path.join(run_dir, "run", "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def policy_round(seconds: float) -> dict[str, tuple[float, float]]:
    """(wall, cpu) microseconds per agent-step of forward + sample for each side."""
    from shoal.net.runtime import CPolicy, agent_rng
    from shoal.trainer.policies import Inference, make_policy
    from shoal.vector import make

    env = make("breakout", num_envs=256)
    policy = make_policy(env, "mlp", hidden=128)
    obs_space = env.single_observation_space
    B = env.num_agents
    env.close()
    obs_space.seed(0)
    obs = np.stack([obs_space.sample() for _ in range(B)])
    inference = Inference(policy, device="cpu", generator=torch.Generator().manual_seed(0))
    cpolicy = CPolicy.from_policy(policy, obs.dtype)
    rng = agent_rng(B, 0)

    def torch_step():
        inference.act(obs, None, None)

    def c_step():
        params, _ = cpolicy.forward(obs)
        cpolicy.sample(params, rng)

    out = {}
    for name, fn in (("torch", torch_step), ("c", c_step)):
        fn()
        wall0, cpu0, n = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall0 < seconds:
            fn()
            n += 1
        out[name] = ((time.perf_counter() - wall0) / n / B * 1e6,
                     (time.process_time() - cpu0) / n / B * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=12, help="epochs per training run")
    ap.add_argument("--skip", type=int, default=2, help="first epochs left out (start-up)")
    ap.add_argument("--policy-seconds", type=float, default=2.0)
    args = ap.parse_args()

    before = torch.get_num_threads()
    sps: dict[str, list[float]] = {"torch": [], "fused": []}
    share: dict[str, list[float]] = {"torch": [], "fused": []}
    cpu: dict[str, list[float]] = {"torch": [], "fused": []}
    per_step: dict[str, list[tuple[float, float]]] = {"torch": [], "c": []}
    for r in range(args.rounds):
        order = ("torch", "fused") if r % 2 == 0 else ("fused", "torch")
        for rollout in order:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            rows = train_round(rollout, args.epochs, seed=r)[args.skip:]
            cpu[rollout].append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
            sps[rollout].append(statistics.median(m["sps"] for m in rows))
            share[rollout].append(statistics.median(
                m["time"]["inference"] / max(1e-9, sum(m["time"].values())) for m in rows))
            print(f"round {r} {rollout:5s}: {sps[rollout][-1]:9.0f} steps/s, inference "
                  f"{100 * share[rollout][-1]:4.1f}% of an epoch, CPU {100 * cpu[rollout][-1]:.0f}% "
                  f"of one core", flush=True)
        torch.set_num_threads(1)
        p = policy_round(args.policy_seconds)
        torch.set_num_threads(before)
        for k, v in p.items():
            per_step[k].append(v)
        print(f"round {r} policy forward+sample per agent-step: torch {p['torch'][0]:.2f} us "
              f"(cpu {p['torch'][1]:.2f}), C {p['c'][0]:.2f} us (cpu {p['c'][1]:.2f})", flush=True)

    med = statistics.median
    print("\nmedians over", args.rounds, "rounds")
    print(f"shoal train breakout steps/s: fused {med(sps['fused']):.0f}, torch "
          f"{med(sps['torch']):.0f}, ratio {med(sps['fused']) / med(sps['torch']):.2f}x")
    print(f"inference share of an epoch: fused {100 * med(share['fused']):.1f}%, torch "
          f"{100 * med(share['torch']):.1f}%")
    print(f"CPU use over a run (process CPU / wall): fused {100 * med(cpu['fused']):.0f}%, torch "
          f"{100 * med(cpu['torch']):.0f}% of one core")
    tw, tc = med(v[0] for v in per_step["torch"]), med(v[1] for v in per_step["torch"])
    cw, cc = med(v[0] for v in per_step["c"]), med(v[1] for v in per_step["c"])
    print(f"policy forward+sample per agent-step (MLP-128, 256 agents): C {cw:.2f} us wall / "
          f"{cc:.2f} us CPU, torch {tw:.2f} us wall / {tc:.2f} us CPU; torch/C {tw / cw:.2f}x wall, "
          f"{tc / cc:.2f}x CPU")


if __name__ == "__main__":
    main()
