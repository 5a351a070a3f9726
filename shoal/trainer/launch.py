"""Starting or continuing a training run from Python: :func:`train`, behind ``shoal.train``
(the CLI's counterpart is :mod:`shoal.trainer.cli`). It builds the config (a registered env's
name, or a prebuilt env object via :func:`~shoal.trainer.config.config_for_env`) or resumes a run,
and trains a :class:`~shoal.trainer.ppo.Trainer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .config import build_config, config_for_env
from .distributed import elastic_resume_target

if TYPE_CHECKING:
    from .ppo import Trainer

__all__ = ["train"]


def train(env: Any, *, config: str | None = None, resume: str | None = None,
          policy: Any = None, callback: Callable[[Trainer, dict], Any] | None = None,
          trust_pickled_env_state: bool = False, **overrides: Any) -> dict[str, Any]:
    """Trains on ``env`` (a registered env name, or a built vector env); returns the summary.

    Overrides are flat ``section_key=value`` keywords mirroring the CLI flags:
    ``train_learning_rate=0.01`` is ``--train.learning-rate 0.01``, ``env_num_envs=64`` is
    ``--env.num-envs 64`` and env parameters are ``env_<param>`` (``env_size=15``).
    ``config`` is a TOML file applied before them; ``resume`` a run directory (or checkpoint)
    to continue; ``policy`` an ``nn.Module`` or a callable ``(obs_space, act_space) -> Module``.
    ``trust_pickled_env_state`` lets ``resume`` unpickle a Python env's saved state (see
    :meth:`~shoal.trainer.ppo.Trainer.resume`: only for checkpoints you made or trust).
    """
    from .ppo import Trainer    # here: ppo imports this module for its own ``train`` name

    flat = {k: v for k, v in overrides.items()}
    files = [config] if config else []
    # a worker group torchrun restarted (--max-restarts) continues from the last checkpoint
    resume = resume or elastic_resume_target(flat.get("log_run_dir") or flat.get("log.run_dir"))
    if resume is not None:
        name = env if isinstance(env, str) else None
        trainer = Trainer.resume(resume, env_name=name, files=files, overrides=flat,
                                 env=None if isinstance(env, str) else env, policy=policy,
                                 callback=callback,
                                 trust_pickled_env_state=trust_pickled_env_state)
        return trainer.train()
    if isinstance(env, str):
        cfg = build_config(env, files, flat)
        return Trainer(cfg, policy=policy, callback=callback).train()
    cfg = config_for_env(env, files, flat)
    return Trainer(cfg, env=env, policy=policy, callback=callback).train()
