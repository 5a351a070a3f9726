"""The trainer learns: each sanity env is solved within a documented step budget on the CPU.

| env        | what it checks                      | policy   | budget (agent steps) | score needed |
|------------|-------------------------------------|----------|----------------------|--------------|
| template   | sparse reward down a corridor       | mlp      |  40,000              | >= 0.95      |
| bandit     | credit assigned over a delay        | mlp      |  40,000              | >= 0.95      |
| stochastic | the entropy bonus keeps a mixed      | mlp      |  40,000              | >= 0.86 (*)  |
|            | policy                              |          |                      |              |
| password   | exploration of a sparse reward      | mlp      |  50,000              | >= 0.95      |
| recall     | memory across blank steps           | lstm-32  | 100,000              | >= 0.90      |
| target     | continuous (Gaussian) actions       | mlp      | 100,000              | >= 0.90      |
| coord      | two agents per env, shared weights  | mlp      | 100,000              | >= 0.90      |

(*) the best memoryless policy scores 0.908 and any deterministic one 0.7.

Score = the trainer's summary score: the mean score of the last 100 episodes, in [0, 1] for
these envs (1 = solved). Settings are CPU-friendly (64 envs, horizon 16, minibatch 256, one
torch thread); the whole file takes about 20 s on a 2-core machine. Each env reaches its score
well inside its budget (typically in a third of it), so these are regression alarms, not
tuning targets.
"""

from __future__ import annotations

import pytest
import torch

from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer

COMMON = {"env.num_envs": 64, "train.horizon": 16, "train.minibatch_size": 256,
          "train.learning_rate": 0.01, "train.device": "cpu", "train.seed": 1,
          "log.dashboard": "off", "log.checkpoint_interval": 10_000}

CASES = {
    "template": ({"env.length": 10, "env.max_steps": 20}, 40_000, 0.95),
    "bandit": ({}, 40_000, 0.95),
    "stochastic": ({}, 40_000, 0.86),
    "password": ({}, 50_000, 0.95),
    "recall": ({"policy.name": "lstm", "policy.hidden": 32}, 100_000, 0.90),
    "target": ({}, 100_000, 0.90),
    "coord": ({}, 100_000, 0.90),
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("env", list(CASES))
def test_solves_sanity_env(env, tmp_path):
    from shoal.envs import list_envs

    if env not in list_envs():
        pytest.skip(f"env {env} is not registered in this build")
    extra, budget, threshold = CASES[env]
    overrides = dict(COMMON, **extra)
    overrides["train.total_steps"] = budget
    overrides["log.run_dir"] = str(tmp_path / env)
    summary = Trainer(build_config(env, overrides=overrides)).train()
    assert summary["agent_steps"] <= budget + 64 * 16
    assert summary["score"] is not None and summary["score"] >= threshold, summary
