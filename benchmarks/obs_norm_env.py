"""Learning with and without running observation normalisation (train.norm_obs), runs
alternated under the same seeds: the badly scaled one-step env of tests/support/scaled_env.py
(observations ``scale * u + offset``), or a registered env with its shipped config.

    python benchmarks/obs_norm_env.py --seeds 3 --steps 20000 [--scale 1000 --offset 5000]
    python benchmarks/obs_norm_env.py --env target --seeds 3      # shipped budget

Prints each run's final score (mean of the last 100 episodes) and the median per setting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import shoal
from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer, _config_for_env
from support_envs import support_class


def offset_cue():
    return support_class("scaled_env.py", "OffsetCue")


def run(args: argparse.Namespace, seed: int, norm: bool) -> float:
    overrides = {"log.dashboard": "off", "log.checkpoint_interval": 100_000,
                 "train.device": "cpu", "train.seed": seed, "train.norm_obs": norm,
                 "log.run_dir": tempfile.mkdtemp(prefix="obsnorm-")}
    if args.env:
        if args.steps:
            overrides["train.total_steps"] = args.steps
        return Trainer(build_config(args.env, overrides=overrides)).train()["score"]
    env = shoal.from_gymnasium(offset_cue(), num_envs=64, seed=seed, scale=args.scale,
                               offset=args.offset)
    overrides.update({"train.total_steps": args.steps or 20_000, "train.horizon": 16,
                      "train.minibatch_size": 256})
    return Trainer(_config_for_env(env, [], overrides), env=env).train()["score"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="", help="a registered env (default: the scaled test env)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="0: 20,000 / the shipped budget")
    p.add_argument("--scale", type=float, default=1000.0)
    p.add_argument("--offset", type=float, default=5000.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    scores: dict[bool, list[float]] = {False: [], True: []}
    for seed in range(a.seeds):
        for norm in (False, True):           # alternated, same seed
            start = time.time()
            score = run(a, seed, norm)
            scores[norm].append(score)
            print(f"seed {seed}  norm_obs={str(norm).lower():5}  score {score:.3f}  "
                  f"{time.time() - start:.0f} s", flush=True)
    for norm in (False, True):
        print(f"norm_obs={str(norm).lower():5}  median score {statistics.median(scores[norm]):.3f}"
              f"  ({', '.join(f'{s:.3f}' for s in scores[norm])})")


if __name__ == "__main__":
    main()
