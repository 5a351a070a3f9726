"""Small overlapped trainers and anchored stale minibatches, for the tests of the stale batch's
loss (tests/test_stale_batch.py, tests/test_stale_advantages.py)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from shoal.trainer.config import build_config
from shoal.trainer.ppo import Minibatch, Trainer
from shoal.trainer.stale_batch import anchor_at_learner


def overlapped_trainer(tmp_path: Any, **overrides: Any) -> Trainer:
    """A small breakout trainer on the fused rollout with overlap (float32), its run in
    ``tmp_path / "run"``; ``overrides`` (config keys) on top."""
    over = {"train.total_steps": 10**6, "env.num_envs": 8, "train.horizon": 16,
            "train.minibatch_size": 64, "log.dashboard": "off", "policy.hidden": 32,
            "train.rollout": "fused", "train.overlap": True, "train.precision": "float32",
            "env.max_steps": 9, "train.learning_rate": 0.01, "log.run_dir": str(tmp_path / "run"),
            # the default advantages (the hand-computed references) and minibatch draws,
            # whatever breakout's file ships; a test sets its own
            "train.overlap_advantages": "learner", "train.minibatches": "draws"}
    over.update(overrides)
    return Trainer(build_config("breakout", overrides=over))


def stale_minibatch(tr: Trainer, seed: int, spread: float) -> tuple[Any, Minibatch]:
    """After one epoch of ``tr`` (call it inside ``tr.process_state.active()``): a copy of its
    batch anchored at the learner, with learner-to-collector ratios ``exp(U(-spread, spread))``
    and the learner's weights moved on from the anchor by N(0, 0.05²) noise (as after its first
    minibatch), and the minibatch of all its segments."""
    tr.run_epoch()
    batch = copy.deepcopy(tr.storage)
    anchor_at_learner(tr.policy, tr.distribution, batch)
    g = torch.Generator().manual_seed(seed)
    batch.collector_ratio = torch.exp(torch.empty(batch.S, batch.T).uniform_(-spread, spread,
                                                                           generator=g))
    with torch.no_grad():
        for p in tr.policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return batch, Minibatch(batch, torch.arange(batch.S), torch.ones(batch.S))
