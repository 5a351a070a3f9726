"""shoal's PPO trainer.

    from shoal.trainer import Trainer, build_config
    trainer = Trainer(build_config("breakout", overrides={"train.total_steps": 2_000_000}))
    summary = trainer.train()

The pieces are importable on their own for custom training loops (examples/own_loop.py):
:func:`~shoal.trainer.advantage.compute_advantages`, :mod:`~shoal.trainer.sampling`,
:func:`~shoal.trainer.policies.make_policy` / :class:`~shoal.trainer.policies.Inference`,
:mod:`~shoal.trainer.distributions`, and :class:`~shoal.trainer.ppo.RolloutStorage` /
:func:`~shoal.trainer.ppo.ppo_loss`.

Names are resolved lazily so that importing :mod:`shoal.trainer.config` (for ``--help``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Trainer": "ppo", "train": "launch", "RolloutStorage": "ppo", "Minibatch": "ppo",
    "ppo_loss": "ppo", "make_optimizer": "ppo",
    "Config": "config", "ConfigError": "config", "build_config": "config",
    "compute_advantages": "advantage",
    "make_policy": "policies", "Inference": "policies",
    "make_distribution": "distributions",
    "sample_segments": "sampling",
    "load_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "evaluate": "eval_cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'shoal.trainer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
