"""PPO learns Gymnasium's CartPole-v1, named as ``gym:CartPole-v1`` like any shoal env.

The env is made by the trainer from its name (``shoal.train("gym:CartPole-v1", ...)`` is
``shoal train gym:CartPole-v1`` with the same flags), through the config system and
``shoal.make``, not handed in prebuilt.

Budget: 500,000 agent steps with 16 envs x horizon 64 (batches of 1,024), minibatches of 512, two
passes per batch, learning rate 0.003 (cosine-annealed over the budget), no entropy bonus. The
mean score of the last 100 episodes passes 475 (CartPole's solved threshold) after 177k-310k
steps for seeds 0-3 and reaches the maximum, 500, by the end of the budget; the test stops as
soon as it is >= 475. About 5-10 s on two idle CPU cores. The same run from the command line:

    shoal train gym:CartPole-v1 --env.num-envs 16 --train.total-steps 500000 \\
        --train.horizon 64 --train.minibatch-size 512 --train.update-epochs 2 \\
        --train.learning-rate 0.003 --train.ent-coef 0 --train.torch-threads 1
"""

from __future__ import annotations

import json
import tomllib

import pytest

torch = pytest.importorskip("torch")

import shoal  # noqa: E402
from shoal.trainer import cli  # noqa: E402

BUDGET = 500_000
SOLVED = 475.0
SETTINGS = dict(env_num_envs=16, train_total_steps=BUDGET, train_horizon=64,
                train_minibatch_size=512, train_update_epochs=2, train_learning_rate=0.003,
                train_ent_coef=0.0, train_torch_threads=1, log_dashboard="off",
                log_checkpoint_interval=10_000)


def test_ppo_solves_cartpole_within_budget(tmp_path):
    def solved(trainer, metrics):
        return (metrics.get("score100") or 0.0) >= SOLVED

    summary = shoal.train("gym:CartPole-v1", train_seed=0, callback=solved,
                          log_run_dir=str(tmp_path / "run"), **SETTINGS)
    assert summary["env"] == "gym:CartPole-v1"
    assert summary["agent_steps"] <= BUDGET + 1024
    assert summary["score"] is not None and summary["score"] >= SOLVED, summary


def test_shoal_train_cli_with_gymnasium_kwargs_and_resume(tmp_path, capsys):
    """`shoal train gym:CartPole-v1 --env.max-episode-steps 5`: the flag reaches gymnasium.make
    (every episode is truncated at 5 steps: CartPole never falls that fast), is kept in the run's
    config.toml, and a resumed run makes the same env from it."""
    run = tmp_path / "run"
    flags = ["--env.num-envs", "8", "--env.max-episode-steps", "5", "--train.horizon", "32",
             "--train.minibatch-size", "256", "--train.torch-threads", "1",
             "--log.dashboard", "off", "--run-dir", str(run)]
    assert cli.main(["gym:CartPole-v1", "--train.total-steps", "2048", *flags]) == 0
    with open(run / "config.toml", "rb") as fh:
        saved = tomllib.load(fh)
    assert saved["env"]["name"] == "gym:CartPole-v1"
    assert saved["env"]["max_episode_steps"] == 5                    # an int, not "5"
    episodes = [json.loads(line).get("episodes", {}) for line in open(run / "metrics.jsonl")]
    lengths = [e["episode_length"] for e in episodes if e.get("n")]
    assert lengths and all(x == 5.0 for x in lengths)
    assert cli.main(["--resume", str(run), "--train.total-steps", "4096"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["agent_steps"] == 4096 and summary["env"] == "gym:CartPole-v1"
    episodes = [json.loads(line).get("episodes", {}) for line in open(run / "metrics.jsonl")]
    assert len(episodes) == 16 and all(e["episode_length"] == 5.0 for e in episodes[8:])
