"""CPU seconds per epoch, float32 against bfloat16, at PufferLib's breakout shape, in one run.

PufferLib's breakout network and batch shape (LSTM-128, 8,192 envs x 64 steps, minibatches of
32,768, one pass), the synchronous torch rollout, torch on ONE thread. Two trainers (one per
``train.precision``, same seed) are built in this process and their epochs alternate; each
epoch's rollout and update are timed in CPU seconds of this thread (``time.thread_time``), so
the figures hold up on a machine shared with other jobs, where wall-clock rates do not. Prints
the median CPU seconds of each phase per precision over ``--epochs`` epochs (after one warm-up
epoch each) and the ratio float32 / bfloat16 of the whole epoch, which is the speed-up a run
bound by CPU time would see. Steps/s against PufferLib come from ``train_bench.py --mode sps``
(BENCHMARKS.md).

    python benchmarks/precision_cpu_bench.py [--epochs 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

SHAPE = {"policy.name": "lstm", "policy.hidden": 128, "env.num_envs": 8192,
         "train.horizon": 64, "train.minibatch_size": 32768, "train.update_epochs": 1,
         "train.torch_threads": 1,
         # the synchronous torch rollout (breakout ships the fused one with overlap)
         "train.rollout": "torch", "train.overlap": False}
PRECISIONS = ("float32", "bfloat16")


def make_trainer(precision: str, seed: int):
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    run_dir = tempfile.mkdtemp(prefix=f"shoal-precision-cpu-{precision}-")
    cfg = build_config("breakout", overrides={
        **SHAPE, "train.precision": precision, "train.seed": seed, "log.dashboard": "off",
        "log.run_dir": run_dir + "/run", "log.checkpoint_interval": 10**6,
        "train.total_steps": 10**9})
    return Trainer(cfg)


def epoch(trainer) -> tuple[float, float]:
    """(rollout, update) CPU seconds of this thread for one epoch."""
    t0 = time.thread_time()
    episodes = trainer.rollout()
    t1 = time.thread_time()
    trainer.update(episodes)
    trainer.storage.shift()
    return t1 - t0, time.thread_time() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainers = {prec: make_trainer(prec, a.seed) for prec in PRECISIONS}
        for prec in PRECISIONS:                       # warm-up: first-touch memory, oneDNN
            epoch(trainers[prec])
        times: dict[str, list[tuple[float, float]]] = {prec: [] for prec in PRECISIONS}
        for i in range(a.epochs):
            order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]
            for prec in order:
                times[prec].append(epoch(trainers[prec]))
                r, u = times[prec][-1]
                print(f"epoch {i} {prec:<8} rollout {r:.2f} s  update {u:.2f} s  "
                      f"total {r + u:.2f} s", flush=True)
        totals = {}
        for prec in PRECISIONS:
            roll = statistics.median(r for r, _ in times[prec])
            upd = statistics.median(u for _, u in times[prec])
            totals[prec] = statistics.median(r + u for r, u in times[prec])
            print(f"{prec:<8} CPU s per 524,288-step epoch (median): rollout {roll:.2f}  "
                  f"update {upd:.2f}  total {totals[prec]:.2f}")
        print(f"float32 / bfloat16 CPU time per epoch: "
              f"{totals['float32'] / totals['bfloat16']:.2f}x")
        for t in trainers.values():
            t.close()
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    main()
