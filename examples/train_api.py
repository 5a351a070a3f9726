"""Train from Python: ``shoal.train(env, **overrides)`` runs the trainer and returns the summary.

It reads no command line: overrides are keywords named ``section_key``, mirroring the CLI flags
(``train_learning_rate=0.01`` is ``--train.learning-rate 0.01``; env parameters are
``env_<param>``). ``callback(trainer, metrics)`` runs after every epoch; returning True stops
training (after a checkpoint).

    python examples/train_api.py                   # breakout, 5M steps, about half a minute
    python examples/train_api.py --steps 200000    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import time

import shoal


def main() -> None:
    parser = argparse.ArgumentParser(description="shoal.train('breakout', ...) from Python.")
    parser.add_argument("--steps", type=int, default=5_000_000, help="agent steps to train for")
    parser.add_argument("--run-dir", default=None,
                        help="where to write the run (default: examples/runs/breakout-<time>)")
    args = parser.parse_args()
    run_dir = args.run_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs",
                                           time.strftime("breakout-%Y%m%d-%H%M%S"))

    def progress(trainer, metrics):
        if metrics["epoch"] % 50 == 0:
            print(f"  {metrics['agent_steps']:>10,} steps  score {metrics['score100']}")
        return False                       # True would stop training here

    summary = shoal.train(
        "breakout",                        # configs/breakout.toml applies, then these:
        train_total_steps=args.steps,
        train_seed=7,
        env_lives=3,                       # an env parameter (shoal train breakout --env.lives 3)
        log_dashboard="off",               # no terminal output from the trainer itself
        log_run_dir=run_dir,
        callback=progress,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
