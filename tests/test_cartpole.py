"""PPO learns Gymnasium's CartPole-v1 through the emulation layer.

Budget: 500,000 agent steps with 16 envs x horizon 64 (batches of 1,024), minibatches of 512, two
passes per batch, learning rate 0.003 (cosine-annealed over the budget), no entropy bonus. The
mean score of the last 100 episodes passes 475 (CartPole's solved threshold) after 177k-310k
steps for seeds 0-3 and reaches the maximum, 500, by the end of the budget; the test stops as
soon as it is >= 475. About 5-10 s on two idle CPU cores.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import shoal  # noqa: E402
from shoal.emulation import make  # noqa: E402

BUDGET = 500_000
SOLVED = 475.0
SETTINGS = dict(train_total_steps=BUDGET, train_horizon=64, train_minibatch_size=512,
                train_update_epochs=2, train_learning_rate=0.003, train_ent_coef=0.0,
                train_torch_threads=1, log_dashboard="off", log_checkpoint_interval=10_000)


def test_ppo_solves_cartpole_within_budget(tmp_path):
    env = make("gym:CartPole-v1", 16, seed=0)

    def solved(trainer, metrics):
        return (metrics.get("score100") or 0.0) >= SOLVED

    summary = shoal.train(env, train_seed=0, callback=solved, log_run_dir=str(tmp_path / "run"),
                          **SETTINGS)
    assert summary["agent_steps"] <= BUDGET + 1024
    assert summary["score"] is not None and summary["score"] >= SOLVED, summary
