"""``shoal eval`` estimates the mean score per episode without favouring short episodes.

The env draws each episode short (score 0) or long (score 1) with equal odds: the true mean is
0.5. Stopping at the first N episodes to end, with every env starting together, reads almost only
short ones (near 0); counting each env's first k episodes reads about 0.5.
"""

from __future__ import annotations

import os
import sys

import pytest

from shoal.trainer.config import build_config
from shoal.trainer.eval_cli import evaluate, main
from shoal.trainer.ppo import Trainer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))

ENV = "gym:reliability_envs:LengthScore-v0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("eval") / "run")
    cfg = build_config(ENV, overrides={
        "env.num_envs": 4, "train.horizon": 8, "train.minibatch_size": 32,
        "train.total_steps": 32, "log.dashboard": "off", "log.run_dir": run, "policy.hidden": 8})
    Trainer(cfg).train()
    return run


@pytest.mark.parametrize("num_envs", [64, 16, 1])
def test_eval_is_unbiased_when_length_and_score_go_together(checkpoint, num_envs):
    result = evaluate(checkpoint, episodes=64, num_envs=num_envs, seed=3)
    assert result["episodes"] >= 64
    assert 0.3 < result["score"] < 0.7, result          # 0.5 +- ~3 standard errors
    assert result["episode_length"] > 7                 # (2 + 20) / 2 = 11 on average


def test_eval_cli_prints_the_unbiased_score(checkpoint, capsys):
    assert main([ENV, "--checkpoint", checkpoint, "--episodes", "64", "--seed", "3"]) == 0
    score = float(capsys.readouterr().out.split()[1])
    assert 0.3 < score < 0.7


@pytest.mark.parametrize("name,backend", [("template", "serial"), ("template", "processes"),
                                          (ENV, "serial"), (ENV, "processes")])
def test_log_env_reports_each_envs_own_episodes(name, backend):
    """log_env(i) counts exactly the episodes env i ended (one agent per env here)."""
    import numpy as np

    import shoal

    extra = {"num_workers": 2} if backend == "processes" else {}
    env = shoal.make(name, 4, seed=0, backend=backend, **extra)
    try:
        env.reset()
        ended = np.zeros(4)
        rng = np.random.default_rng(0)
        for _ in range(200):
            acts = rng.integers(0, env.single_action_space.n, 4).astype(np.int32)
            _, _, term, trunc, _ = env.step(acts)
            ended += term | trunc
        counts = [env.log_env(i).get("n", 0.0) for i in range(4)]
        assert counts == list(ended) and sum(counts) > 0
        assert env.log() == {}                         # nothing is reported twice
    finally:
        env.close()
