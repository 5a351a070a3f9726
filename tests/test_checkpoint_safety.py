"""Resuming never runs code from a checkpoint unless the user opts in.

A checkpoint loads with ``torch.load(weights_only=True)``, but a Python env's saved state is the
envs pickled, and unpickling runs whatever code the bytes name. Here a checkpoint is crafted whose
env state, if unpickled, writes a marker file: resume (library and CLI, serial and processes
backends) must not create it and must continue with fresh episodes, naming the opt-in
(``--trust-pickled-env-state``); with the opt-in the bytes are unpickled (the marker appears), which
shows the crafted state really is code.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import shoal
from shoal.trainer import cli
from shoal.trainer.checkpoint import TRUST_FLAG, list_checkpoints, load_checkpoint, save_checkpoint
from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer
from shoal.vector.base import PickledStateError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WritesMarker:
    """Unpickling this calls ``exec`` on a line that creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('unpickled')",))


def gym_run(run_dir: str, backend: str = "serial", steps_epochs: int = 2, **extra):
    over = {"env.num_envs": 2, "env.backend": backend, "train.horizon": 8,
            "train.minibatch_size": 16, "train.total_steps": 16 * 4, "log.dashboard": "off",
            "log.run_dir": run_dir, "policy.hidden": 8, **extra}
    if backend == "processes":
        over["env.num_workers"] = 1
    return build_config("gym:CartPole-v1", overrides=over)


def crafted_run(tmp_path, backend: str) -> tuple[str, str]:
    """A run stopped at epoch 2 whose newest checkpoint's env state is a code-running pickle."""
    run = str(tmp_path / "run")
    Trainer(gym_run(run, backend), callback=lambda tr, m: tr.epoch == 2).train()
    path = list_checkpoints(run)[-1]
    ckpt = load_checkpoint(path)
    marker = str(tmp_path / "marker")
    blob = torch.frombuffer(bytearray(pickle.dumps(WritesMarker(marker))), dtype=torch.uint8)
    keys = [k for k in ckpt["env_state"] if k.endswith("python.envs")]
    assert keys, sorted(ckpt["env_state"])        # the premise: the state holds pickled envs
    for k in keys:
        ckpt["env_state"][k] = blob
    del ckpt["path"]
    save_checkpoint(path, ckpt)
    return run, marker


@pytest.mark.parametrize("backend", ["serial", "processes"])
def test_resume_does_not_unpickle_env_state_by_default(tmp_path, backend):
    run, marker = crafted_run(tmp_path, backend)
    trainer = Trainer.resume(run)
    try:
        assert not os.path.exists(marker)
        assert trainer.exact_resume is False and TRUST_FLAG in trainer.resume_note
    finally:
        trainer.close()
    # the opt-in does unpickle: the crafted state was live code all along
    with pytest.raises(Exception):
        Trainer.resume(run, trust_pickled_env_state=True)
    assert open(marker).read() == "unpickled"
    os.unlink(marker)
    summary = shoal.train("gym:CartPole-v1", resume=run)
    assert summary["finished"] and not os.path.exists(marker)


def test_cli_resume_refuses_pickled_state_and_names_the_opt_in(tmp_path, capsys):
    run, marker = crafted_run(tmp_path, "serial")
    assert cli.main(["--resume", run, "--log.dashboard", "plain"]) == 0
    out = capsys.readouterr().out
    assert not os.path.exists(marker)
    assert TRUST_FLAG in out and "restarted" in out
    assert TRUST_FLAG in cli.help_text() and "RISK" in cli.help_text()
    assert cli.main([TRUST_FLAG, "gym:CartPole-v1"]) == 2      # meaningless without --resume


def test_env_load_state_refuses_pickles_unless_allowed():
    a = shoal.make("gym:CartPole-v1", 2, seed=0)
    b = shoal.make("gym:CartPole-v1", 2, seed=1)
    a.reset()
    b.reset()
    with pytest.raises(PickledStateError, match="allow_pickle=True"):
        b.load_state(a.save_state())
    b.load_state(a.save_state(), allow_pickle=True)    # a snapshot this process made
    for e in (a, b):
        e.close()


def test_trusted_resume_of_a_python_env_is_exact(tmp_path):
    whole = str(tmp_path / "whole")
    Trainer(gym_run(whole)).train()
    part = str(tmp_path / "part")
    Trainer(gym_run(part), callback=lambda tr, m: tr.epoch == 2).train()
    resumed = Trainer.resume(part, trust_pickled_env_state=True)
    resumed.train()
    assert resumed.exact_resume is True
    read = lambda d: [line.split('"sps"')[0] for line in open(os.path.join(d, "metrics.jsonl"))]  # noqa: E731
    assert read(whole) == read(part)
