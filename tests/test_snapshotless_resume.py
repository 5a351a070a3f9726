"""Envs that cannot snapshot themselves still train, checkpoint and resume (with fresh episodes).

The envs here are real: a built ``gymnasium.vector.SyncVectorEnv`` adapted with
``shoal.from_gymnasium`` (shoal cannot reach inside it), and a PettingZoo ParallelEnv that holds a
live connection (a socket, as an env talking to a simulator does), which cannot be pickled. Their
checkpoints hold everything but the env; the run says so on the dashboard and in the summary.
"""

from __future__ import annotations

import json
import os
import sys

import gymnasium
import pytest

import shoal
from shoal.trainer.checkpoint import list_checkpoints, load_checkpoint
from shoal.trainer.config import apply_overrides, default_config
from shoal.trainer.ppo import Trainer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from reliability_envs import LinkedDuel  # noqa: E402  (a module process workers can import)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = {"train.horizon": 8, "train.minibatch_size": 32, "train.total_steps": 4 * 8 * 4,
       "log.checkpoint_interval": 1, "log.dashboard": "plain", "log.print_interval": 1e9,
       "train.device": "cpu", "policy.hidden": 16}


def config(**extra):
    cfg = default_config()
    apply_overrides(cfg, {**RUN, **extra})
    return cfg


def gym_vector_env():
    return shoal.from_gymnasium(gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1") for _ in range(4)]))


def pz_env(backend="serial"):
    if backend == "processes":
        return shoal.from_pettingzoo(LinkedDuel, 2, backend="processes", num_workers=1)
    return shoal.from_pettingzoo(LinkedDuel, 2)


def epochs(run_dir) -> list[int]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line)["epoch"] for line in fh]


@pytest.mark.parametrize("make_env", [gym_vector_env, pz_env, lambda: pz_env("processes")],
                         ids=["gymnasium-SyncVectorEnv", "pettingzoo-serial",
                              "pettingzoo-processes"])
def test_env_without_snapshots_checkpoints_and_resumes_fresh(tmp_path, capsys, make_env):
    run = str(tmp_path / "r")
    env = make_env()
    env.reset(0)
    with pytest.raises(NotImplementedError):
        env.save_state()                     # the premise: this env really cannot snapshot
    first = Trainer(config(), env=env, run_dir=run, callback=lambda tr, m: tr.epoch == 2)
    summary = first.train()
    out = capsys.readouterr().out
    assert not summary["finished"] and summary["epochs"] == 2
    assert "checkpoints hold no env state" in out and "fresh episodes" in out
    assert "fresh episodes" in summary["resume_note"]
    assert json.loads(open(os.path.join(run, "summary.json")).read())["resume_note"]
    ckpt = load_checkpoint(list_checkpoints(run)[-1])
    assert ckpt["epoch"] == 2 and ckpt["env_state"] is None

    resumed = Trainer.resume(run, env=make_env())
    assert resumed.epoch == 2
    summary = resumed.train()
    out = capsys.readouterr().out
    assert "episodes in progress restarted" in out
    assert summary["finished"] and resumed.exact_resume is False
    assert epochs(run) == [1, 2, 3, 4]
