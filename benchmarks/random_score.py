"""The score of uniformly random actions on a C env: the floor a trained config must clear.

    python benchmarks/random_score.py maze --size 15 --steps 8000 --warmup 2000

Runs ``--num-envs`` copies for ``--steps`` steps with uniform random actions and counts the
episodes that end after the first ``--warmup`` steps, so the early endings (which are the quick
ones: on maze, successes) do not weigh more than they do in steady state. Prints the mean of the
env's ``score`` over those episodes, taken from the env's log.
"""

from __future__ import annotations

import argparse

import numpy as np

import shoal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env")
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", type=int, default=None, help="env parameter size, where it has one")
    a = p.parse_args()
    params = {} if a.size is None else {"size": a.size}
    env = shoal.make(a.env, num_envs=a.num_envs, **params)
    env.reset(seed=a.seed)
    rng = np.random.default_rng(a.seed)
    total, episodes = 0.0, 0.0
    for t in range(a.steps):
        env.step(rng.integers(0, env.single_action_space.n, size=a.num_envs))
        log = env.log()
        if t >= a.warmup and log:
            total += log["score"] * log["n"]
            episodes += log["n"]
    env.close()
    print(f"{a.env} {params}: random score {total / max(episodes, 1):.4f} over "
          f"{episodes:.0f} episodes")


if __name__ == "__main__":
    main()
