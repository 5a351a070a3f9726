"""The default config learns a third-party-style env without tuning: a goal-reaching grid with a
per-step penalty (tests/support/goal_env.py), whatever the reward's units or offset.

Random play reaches the goal in ~17-20% of episodes (returns ~-90 per episode). Every variant
(rewards x0.01, x1, x100, and x1 shifted by -1 per step) must reach it in at least THRESHOLD of
the last 100 episodes within BUDGET agent steps, with every trainer setting at its default and
256 envs. With the old defaults (one gradient step per 16k-step epoch, raw rewards) every
variant ended below random play (docs/train.md, "Defaults for an untuned env").
"""

from __future__ import annotations

import importlib.util
import os

import pytest

import shoal
from shoal.trainer.ppo import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUDGET = 450_000
THRESHOLD = 0.6


def _goal_grid():
    path = os.path.join(os.path.dirname(__file__), "support", "goal_env.py")
    spec = importlib.util.spec_from_file_location("shoal_test_goal_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GoalGrid


@pytest.mark.parametrize("scale, shift", [(0.01, 0.0), (1.0, 0.0), (100.0, 0.0), (1.0, -1.0)],
                         ids=["x0.01", "x1", "x100", "shift-1"])
def test_default_config_learns_a_per_step_penalty(scale, shift, tmp_path):
    env = shoal.from_gymnasium(_goal_grid(), num_envs=256, seed=0, scale=scale, shift=shift)
    summary = train(env, train_total_steps=BUDGET, train_device="cpu", log_dashboard="off",
                    log_run_dir=str(tmp_path / "run"), log_checkpoint_interval=10_000)
    assert summary["score"] is not None and summary["score"] >= THRESHOLD, summary
