"""Reward scaling (``train.norm_reward``) in the fused rollout: its cost, measured in one run.

``shoal train breakout`` with its shipped settings (256 envs x 64 steps, one torch thread),
``--train.rollout fused``, two trainers built side by side: ``norm_reward = false`` (the C call
adds the truncation bootstrap to the rewards) and ``norm_reward = true`` (the C call writes raw
rewards and the bootstrap term apart; the scaler then runs over the segment and the term is
added). Rounds alternate the sides; medians over ``--rounds``:

* a rollout (``Trainer.rollout`` + ``storage.shift``), each side's ms and the ratio true/false;
* a synchronous epoch (``Trainer.run_epoch``: rollout + update), each side and the ratio;
* the scaling alone on one ``[256, 64]`` segment: ``ReturnScaler.scale_segment_`` (what the
  fused rollout calls) against ``ReturnScaler.scale_`` called step by step (what the torch
  rollout calls, interleaved with env steps), on the same data, and its share of a fused
  rollout (the least load-sensitive number here: both are measured in the same run).

    python benchmarks/norm_reward_bench.py --rounds 15

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from shoal.trainer.config import build_config
from shoal.trainer.normalize import ReturnScaler
from shoal.trainer.ppo import Trainer


def _trainer(run_dir: str, norm_reward: bool, seed: int) -> Trainer:
    return Trainer(build_config("breakout", overrides={
        # the synchronous fused rollout in float32 (breakout ships overlap and precision auto)
        "train.rollout": "fused", "train.overlap": False, "train.precision": "float32",
        "train.norm_reward": norm_reward, "train.seed": seed,
        "log.dashboard": "off", "log.run_dir": run_dir, "log.checkpoint_interval": 10**9}))


def _scaling_alone(rounds: int) -> tuple[float, float]:
    """Median ms of scale_segment_ and of the step-by-step scale_ loop on one [256, 64]
    segment of random rewards (1.5% episode ends, every row live)."""
    S, T = 256, 64
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(S, T, generator=gen)
    dones = (torch.rand(S, T, generator=gen) < 0.015).float()
    live = torch.ones(S, T)
    segment, stepwise = ReturnScaler(S, 0.99), ReturnScaler(S, 0.99)
    times: dict[str, list[float]] = {"segment": [], "steps": []}
    for _ in range(rounds):
        r = rewards.clone()
        t0 = time.perf_counter()
        segment.scale_segment_(r, dones, live, [slice(0, S)])
        times["segment"].append(time.perf_counter() - t0)
        r = rewards.clone()
        t0 = time.perf_counter()
        for t in range(T):
            stepwise.scale_(r[:, t], dones[:, t], slice(0, S), live[:, t])
        times["steps"].append(time.perf_counter() - t0)
    return (1e3 * statistics.median(times["segment"]), 1e3 * statistics.median(times["steps"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # breakout's shipped train.torch_threads
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sides = {flag: _trainer(f"{tmp}/{flag}", flag, 0) for flag in (False, True)}
            rollout: dict[bool, list[float]] = {False: [], True: []}
            epoch: dict[bool, list[float]] = {False: [], True: []}
            try:
                for _ in range(2):                          # warm-up
                    for tr in sides.values():
                        tr.rollout()
                        tr.storage.shift()
                for _ in range(args.rounds):
                    for flag, tr in sides.items():
                        t0 = time.perf_counter()
                        tr.rollout()
                        tr.storage.shift()
                        rollout[flag].append(time.perf_counter() - t0)
                    for flag, tr in sides.items():
                        t0 = time.perf_counter()
                        tr.run_epoch()
                        epoch[flag].append(time.perf_counter() - t0)
            finally:
                for tr in sides.values():
                    tr.close()
        segment_ms, steps_ms = _scaling_alone(args.rounds)
    finally:
        torch.set_num_threads(threads)

    def med(xs: list[float]) -> float:
        return 1e3 * statistics.median(xs)

    print(f"breakout shipped settings, fused rollout, {args.rounds} alternating rounds (medians)")
    for name, d in (("rollout", rollout), ("epoch  ", epoch)):
        off, on = med(d[False]), med(d[True])
        print(f"  {name}: norm_reward false {off:8.2f} ms   true {on:8.2f} ms   "
              f"ratio true/false {on / off:.3f}")
    print(f"  scaling one [256, 64] segment: scale_segment_ {segment_ms:.2f} ms, "
          f"scale_ step by step {steps_ms:.2f} ms ({steps_ms / segment_ms:.1f}x)")
    print(f"  scale_segment_ / fused rollout (norm_reward false): "
          f"{100 * segment_ms / med(rollout[False]):.1f}%")


if __name__ == "__main__":
    main()
