"""Train shoal's PPO on `chase`, a C env that lives in this folder, not in shoal.

Build the env once, then train (from this folder):

    python setup.py build_ext --inplace
    python train_chase.py                 # 200k steps, a few seconds
    python train_chase.py --steps 50000   # a quick check

The run is written under runs/ in this folder (or --run-dir).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # so that `import chase` finds ./chase when run from elsewhere

import shoal  # noqa: E402

try:
    import chase  # noqa: E402
    chase.SPEC.load()
except ImportError:
    sys.exit(f"chase is not built: run `python setup.py build_ext --inplace` in {HERE}")


def random_score(num_envs: int = 64, episodes: int = 2, **params) -> float:
    """Mean score of uniformly random actions: what the trained policy has to beat."""
    env = chase.make(num_envs, seed=123, **params)
    env.reset()
    rng = np.random.default_rng(0)
    max_steps = chase.SPEC.resolve(params)["max_steps"]
    for _ in range(episodes * max_steps):
        env.step(rng.integers(0, 5, env.num_agents, dtype=np.int32))
    score = env.log()["score"]
    env.close()
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="agent steps to train for")
    parser.add_argument("--run-dir", default=None, help="where to write the run "
                                                        "(default: runs/chase-<time>/ here)")
    args = parser.parse_args()

    params = {"size": 8, "max_steps": 64}
    print(f"random policy: score {random_score(**params):.2f} targets per episode")

    env = chase.make(num_envs=64, seed=0, **params)  # the trainer closes it when done
    summary = shoal.train(
        env,
        train_total_steps=args.steps,
        train_horizon=16,
        train_minibatch_size=256,
        train_learning_rate=0.01,
        train_device="cpu",
        train_torch_threads=1,            # tiny batches: one thread is fastest
        log_dashboard="off",
        log_run_dir=args.run_dir or _new_run_dir(),
    )
    print(f"trained policy: score {summary['score']:.2f} targets per episode after "
          f"{summary['agent_steps']:,} steps ({summary['wall_seconds']:.1f} s) -> "
          f"{summary['run_dir']}")


def _new_run_dir() -> str:
    return os.path.join(HERE, "runs", time.strftime("chase-%Y%m%d-%H%M%S"))


if __name__ == "__main__":
    main()
