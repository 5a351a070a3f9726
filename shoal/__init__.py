"""shoal: fast reinforcement learning with environments in C.

    import shoal
    env = shoal.make("breakout", num_envs=1024, seed=0)
    obs, infos = env.reset()

Importing shoal has no side effects: C modules load when an env is made.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["make", "list_envs", "train", "__version__"]


def make(name: str, num_envs: int = 1, **kwargs: Any):
    """A vector env; see :func:`shoal.vector.make` for the arguments."""
    from .vector import make as _make

    return _make(name, num_envs, **kwargs)


def list_envs() -> list[str]:
    """Names of every registered env."""
    from .envs import list_envs as _list

    return _list()


def train(env: Any, **overrides: Any) -> dict:
    """Trains a policy on ``env`` (an env name or a built vector env); returns the summary dict
    (env, agent_steps, wall_seconds, sps, score, episodes, run_dir, ...).

    Overrides are flat ``section_key=value`` keywords mirroring ``shoal train``'s flags:
    ``shoal.train("maze", env_size=15, train_total_steps=2_000_000, policy_name="lstm")`` is
    ``shoal train maze --env.size 15 --train.total-steps 2000000 --policy.name lstm``. Also
    ``config="file.toml"``, ``resume="runs/<run>"``, ``policy=<nn.Module or factory>`` and
    ``callback=fn(trainer, metrics)``; see :func:`shoal.trainer.ppo.train`. Needs torch.
    """
    from .trainer.ppo import train as _train

    return _train(env, **overrides)
