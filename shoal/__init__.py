"""shoal: fast reinforcement learning with environments in C.

    import shoal
    env = shoal.make("breakout", num_envs=1024, seed=0)
    obs, infos = env.reset()

    env = shoal.make("gym:CartPole-v1", num_envs=16, backend="processes")   # any Gymnasium id
    env = shoal.from_gymnasium(MyEnv, num_envs=8)                           # any creator
    env = shoal.from_pettingzoo(my_parallel_env, num_envs=4)                # multi-agent

Importing shoal has no side effects: C modules load when an env is made, and Gymnasium,
PettingZoo and torch are imported only by the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: importing shoal imports nothing heavy
    from .vector.base import VecEnv

__version__ = "0.1.0"

__all__ = ["make", "from_gymnasium", "from_pettingzoo", "list_envs", "train", "__version__"]


def make(name: str, num_envs: int = 1, **kwargs: Any) -> "VecEnv":
    """A vector env of a C env (``"breakout"``) or a Python env (``"gym:CartPole-v1"``,
    ``"pz:pettingzoo.butterfly.pistonball_v6"``); see :func:`shoal.vector.make` for the
    arguments."""
    from .vector import make as _make

    return _make(name, num_envs, **kwargs)


def from_gymnasium(creator: Any, num_envs: int = 1, **kwargs: Any) -> "VecEnv":
    """A vector env of ``num_envs`` Gymnasium envs, each ``creator(**env_kwargs)``.

    ``creator`` is a callable returning a ``gymnasium.Env``, a Gymnasium id, or a built
    ``gymnasium.vector.VectorEnv`` (adapted as it is); see
    :func:`shoal.emulation.from_gymnasium` for the arguments.
    """
    from .emulation import from_gymnasium as _from_gymnasium

    return _from_gymnasium(creator, num_envs, **kwargs)


def from_pettingzoo(creator: Any, num_envs: int = 1, **kwargs: Any) -> "VecEnv":
    """A vector env of ``num_envs`` PettingZoo parallel envs (``len(possible_agents)`` rows
    each, with ``masks`` for absent agents); see :func:`shoal.emulation.from_pettingzoo`."""
    from .emulation import from_pettingzoo as _from_pettingzoo

    return _from_pettingzoo(creator, num_envs, **kwargs)


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
    ``callback=fn(trainer, metrics)``; see :func:`shoal.trainer.launch.train`. Needs torch.
    """
    from .trainer.launch import train as _train

    return _train(env, **overrides)
