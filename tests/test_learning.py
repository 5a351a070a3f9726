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
these envs (1 = solved). Every env but template trains with its shipped config
(shoal/trainer/configs/<env>.toml, whose total_steps is the budget), so this checks what
`shoal train ENV` does with no flags; template has no shipped file and gets the same settings
here. Settings are CPU-friendly (64 envs, horizon 16, minibatch 256, one torch thread); the
whole file takes about 10 s on a 2-core machine. Each env reaches its score well inside its
budget (typically in a third of it), so these are regression alarms, not tuning targets.
"""

from __future__ import annotations

import pytest

from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer

RUN = {"log.dashboard": "off", "log.checkpoint_interval": 10_000}

# template is the env to copy and ships no config: it gets the sanity settings here
TEMPLATE = {"env.num_envs": 64, "train.horizon": 16, "train.minibatch_size": 256,
            "train.learning_rate": 0.01, "train.device": "cpu", "train.torch_threads": 1,
            "train.total_steps": 40_000, "env.length": 10, "env.max_steps": 20}

# env: (budget = the shipped train.total_steps, score needed)
CASES = {
    "template": (40_000, 0.95),
    "bandit": (40_000, 0.95),
    "stochastic": (40_000, 0.86),
    "password": (50_000, 0.95),
    "recall": (100_000, 0.90),
    "target": (100_000, 0.90),
    "coord": (100_000, 0.90),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("env", list(CASES))
def test_solves_sanity_env(env, tmp_path):
    from shoal.envs import list_envs

    if env not in list_envs():
        pytest.skip(f"env {env} is not registered in this build")
    budget, threshold = CASES[env]
    overrides = dict(RUN, **(TEMPLATE if env == "template" else {}))
    overrides["log.run_dir"] = str(tmp_path / env)
    cfg = build_config(env, overrides=overrides)
    assert cfg.train.total_steps == budget, "the shipped config's budget changed: update CASES"
    summary = Trainer(cfg).train()
    agents = summary["batch_size"] // cfg.train.horizon
    assert summary["agent_steps"] <= budget + agents * cfg.train.horizon
    assert summary["score"] is not None and summary["score"] >= threshold, summary
