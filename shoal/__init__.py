"""shoal: fast reinforcement learning with environments in C.

    import shoal
    env = shoal.make("breakout", num_envs=1024, seed=0)
    obs, infos = env.reset()

Importing shoal has no side effects: C modules load when an env is made.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["make", "list_envs", "__version__"]


def make(name: str, num_envs: int = 1, **kwargs: Any):
    """A vector env; see :func:`shoal.vector.make` for the arguments."""
    from .vector import make as _make

    return _make(name, num_envs, **kwargs)


def list_envs() -> list[str]:
    """Names of every registered env."""
    from .envs import list_envs as _list

    return _list()
