"""Trains the per-step-penalty goal grid (tests/support/goal_env.py) with the default config and
any overrides, and prints the final score (goal reached in the last 100 episodes; random play
~0.2), episode return, policy entropy and value loss.

    python benchmarks/penalty_env.py --steps 1000000 [--scale 100] [--shift -1]
    # the defaults before return scaling and 4 passes (docs/train.md, "Defaults for an untuned env"):
    python benchmarks/penalty_env.py --steps 1000000 --set train.norm_reward=false \\
        --set train.minibatch_size=16384 --set train.update_epochs=1

The env's rewards are ``-scale`` per step (+ ``shift``) and ``goal_reward`` at the goal.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import shoal
from shoal.trainer.config import parse_free_value
from shoal.trainer.ppo import Trainer, _config_for_env
from support_envs import support_class


def goal_grid():
    return support_class("goal_env.py", "GoalGrid")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600_000)
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--shift", type=float, default=0.0)
    p.add_argument("--goal-reward", type=float, default=0.0)
    p.add_argument("--size", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="section.key=value override")
    a = p.parse_args()
    env = shoal.from_gymnasium(goal_grid(), num_envs=a.num_envs, seed=a.seed, scale=a.scale,
                               shift=a.shift, goal_reward=a.goal_reward, size=a.size)
    overrides = {"log.dashboard": "off", "log.checkpoint_interval": 100_000,
                 "train.device": "cpu", "train.total_steps": a.steps, "train.seed": a.seed,
                 "train.torch_threads": 1,  # a tiny policy: a second thread only contends
                 "log.run_dir": tempfile.mkdtemp(prefix="penalty-")}
    for item in a.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_free_value(value)
    cfg = _config_for_env(env, [], overrides)
    start = time.time()
    trainer = Trainer(cfg, env=env)
    summary = trainer.train()
    losses = trainer.last_metrics["losses"]
    print(f"score {summary['score']:.3f}  return {summary['episode_return']:.1f}  entropy "
          f"{losses['entropy']:.2f}  value loss {losses['value']:.4g}  "
          f"{time.time() - start:.0f} s  ({' '.join(a.set) or 'defaults'})")


if __name__ == "__main__":
    main()
