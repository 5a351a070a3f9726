"""Run-level checks shared by the trainer's tests: two runs of one config log the same thing,
and a run stopped after epoch 2 and resumed logs what the uninterrupted run logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.trainer.advantage import compute_advantages
from shoal.trainer.config import build_config
from shoal.trainer.ppo import Trainer


def estimate_advantages(trainer: Trainer) -> None:
    """The batch's plain GAE into ``trainer.storage.advantages``, as ``Trainer.update`` computes
    it first: the estimates minibatches are drawn with (their moments normalise the loss's)."""
    b, t = trainer.storage, trainer.config.train
    compute_advantages(b.values, b.rewards, b.dones, None, t.gamma, t.gae_lambda, t.rho_clip,
                       t.c_clip, out=b.advantages)


def metric_rows(run_dir: Path) -> list[tuple]:
    """(epoch, losses, episodes) of each line of a run's metrics.jsonl."""
    with open(Path(run_dir) / "metrics.jsonl") as fh:
        return [(m["epoch"], m["losses"], m["episodes"]) for m in map(json.loads, fh)]


def assert_repeats_and_resumes_exactly(tmp_path: Path, env: str, overrides: dict[str, Any],
                                       check_resumed: Callable[[Trainer], None] | None = None
                                       ) -> None:
    """Train ``env`` with ``overrides`` twice (run dirs ``a`` and ``c``) and assert both log the
    same; then train it into ``b`` until epoch 2, resume, assert the resume is exact (and
    ``check_resumed(trainer)`` where given), finish it and assert it logs what ``a`` logs."""
    def config(name: str):
        return build_config(env, overrides=dict(overrides, **{"log.run_dir": str(tmp_path / name)}))

    for name in ("a", "c"):
        Trainer(config(name)).train()
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "c")
    Trainer(config("b"), callback=lambda tr, m: tr.epoch == 2).train()
    resumed = Trainer.resume(str(tmp_path / "b"))
    assert resumed.exact_resume
    if check_resumed is not None:
        check_resumed(resumed)
    resumed.train()
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
