"""Any Python environment behind shoal's vector-env interface: Gymnasium and PettingZoo.

    import shoal
    env = shoal.make("gym:CartPole-v1", num_envs=16, backend="processes", seed=0)
    env = shoal.make("pz:pettingzoo.butterfly.pistonball_v6", num_envs=4)
    env = shoal.from_gymnasium(lambda: MyEnv(), num_envs=8)
    env = shoal.from_pettingzoo(my_parallel_env, num_envs=8, backend="processes")

The result is a :class:`shoal.vector.base.VecEnv` like a C env's: the same buffers, the same
``step``/``recv``/``send``/``log``/``render``, the same same-step autoreset contract
(docs/envs.md), so the trainer, ``shoal train``, ``shoal bench`` and the dashboard take it as it is.

- Names: ``gym:ID`` is any id ``gymnasium.make`` accepts, including ``gym:module:ID`` (imports
  ``module`` first, which registers ``ID``); ``pz:MODULE`` is a PettingZoo env module with
  ``parallel_env()`` (e.g. ``pz:pettingzoo.butterfly.pistonball_v6``), ``pz:MODULE.CALLABLE``
  or ``pz:MODULE:CALLABLE`` any callable returning a parallel env, and ``pz:FAMILY/NAME-vN`` an
  id of PettingZoo's registry (``pz:butterfly/pistonball-v6``, PettingZoo >= 1.27). Extra
  keyword arguments go to ``gymnasium.make`` / the creator. :func:`check_name` checks a name
  without building an env.
- Gymnasium vector envs: ``from_gymnasium(vector_env)`` adapts a built
  ``gymnasium.vector.VectorEnv`` in any autoreset mode (:mod:`.gymnasium`).
- Spaces: structured observations (Dict, Tuple, nested) are flattened into one buffer row per agent
  (:mod:`.spaces`); ``env.single_observation_space`` is the row's Box and
  ``env.structured_observation_space`` the env's own space, which :func:`unflatten` rebuilds from a
  batch of rows. Actions: ``env.single_action_space`` is Discrete, MultiDiscrete or Box, and each
  env receives its structured action (see :mod:`.spaces`).
- Seeding: ``reset(seed=s)`` resets env ``i`` with ``seed=s + i``.
- Multi-agent: ``len(possible_agents)`` rows per env; ``masks`` marks the agents present
  (:mod:`.pettingzoo`).
- Backends: ``serial`` (a loop on the calling thread), ``threads`` (a thread pool per vector: it
  overlaps stepping with the policy, but pure-Python envs share the GIL), ``processes`` (worker
  processes over shared memory, several envs per worker: the one for pure-Python envs on several
  cores).
"""

from __future__ import annotations

from typing import Any, Callable

from ..vector.base import VecEnv
from ..vector.cores import usable_cores
from .base import EnvError, PythonVecEnv
from .factory import GYMNASIUM, PETTINGZOO, PythonEnvFactory, check_gym_id, resolve_pettingzoo
from .spaces import (ActionLayout, ObservationLayout, action_layout, flatten, flatten_action,
                     observation_layout, unflatten, unflatten_action)

__all__ = ["EnvError", "PythonEnvFactory", "PythonVecEnv", "check_name", "flatten",
           "flatten_action", "from_gymnasium", "from_pettingzoo", "is_emulated_name", "make",
           "split_name", "unflatten", "unflatten_action", "ActionLayout", "ObservationLayout",
           "action_layout", "observation_layout"]

PREFIXES = {"gym:": GYMNASIUM, "pz:": PETTINGZOO}
BACKENDS = ("serial", "threads", "processes")


def is_emulated_name(name: str) -> bool:
    """True for names ``make`` routes here (``gym:...`` and ``pz:...``)."""
    return isinstance(name, str) and name.startswith(tuple(PREFIXES))


def split_name(name: str) -> tuple[str, str]:
    """``"gym:CartPole-v1"`` -> ``("gymnasium", "CartPole-v1")``; ValueError with the fix for a
    name that is not ``gym:ID`` / ``pz:PATH``."""
    for prefix, kind in PREFIXES.items():
        if isinstance(name, str) and name.startswith(prefix):
            target = name[len(prefix):]
            if not target:
                example = ("gym:CartPole-v1" if kind == GYMNASIUM
                           else "pz:pettingzoo.butterfly.pistonball_v6")
                raise ValueError(f"{name!r} names no env: write {prefix}ID, e.g. {example}")
            return kind, target
    raise ValueError(f"{name!r} is not a Python env name: use gym:ID (a Gymnasium id) or "
                     f"pz:MODULE.ENV (a PettingZoo parallel env's import path)")


def check_name(name: str) -> None:
    """Checks that a ``gym:``/``pz:`` name resolves, without building an env.

    ``gym:ID``: the id is registered (after importing ``module`` for ``gym:module:ID``);
    ``pz:PATH``: the module imports and names a creator. Raises ValueError or ImportError whose
    message names the problem and the fix.
    """
    kind, target = split_name(name)
    if kind == GYMNASIUM:
        check_gym_id(target)
    else:
        resolve_pettingzoo(target)


def make(name: str, num_envs: int = 1, *, seed: int | None = None, backend: str = "serial",
         num_workers: int | None = None, num_buffers: int = 1, **env_kwargs: Any) -> VecEnv:
    """A vector env of the Python env ``name`` (``gym:ID`` or ``pz:PATH``).

    The arguments are those of :func:`shoal.make`; ``env_kwargs`` go to ``gymnasium.make`` (e.g.
    ``max_episode_steps``, ``render_mode``) or to the PettingZoo creator.
    """
    check_name(name)   # an unknown id or module fails here, with the fix
    kind, target = split_name(name)
    factory = PythonEnvFactory(kind, target, env_kwargs, name=name)
    return vectorize(factory, num_envs, seed=seed, backend=backend, num_workers=num_workers,
                     num_buffers=num_buffers)


def from_gymnasium(creator: Callable[..., Any] | str | Any, num_envs: int = 1, *,
                   seed: int | None = None, backend: str = "serial",
                   num_workers: int | None = None, num_buffers: int = 1, name: str | None = None,
                   **env_kwargs: Any) -> VecEnv:
    """A vector env of ``num_envs`` Gymnasium envs, each ``creator(**env_kwargs)``.

    ``creator`` is a callable returning a ``gymnasium.Env`` (a class, a function, a lambda: for
    ``backend="processes"`` it is sent to the workers with cloudpickle), or an env id. See
    :func:`shoal.make` for the other arguments.

    ``creator`` may also be a built ``gymnasium.vector.VectorEnv`` (``gymnasium.make_vec``,
    ``SyncVectorEnv``, ``AsyncVectorEnv``) in any autoreset mode: it is adapted as it is
    (:class:`~shoal.emulation.gymnasium.GymnasiumVectorAdapter`), so ``num_envs`` must be 1 or
    its ``num_envs``, ``backend`` ``"serial"`` and ``num_buffers`` 1.
    """
    from gymnasium.vector import VectorEnv

    if isinstance(creator, VectorEnv):
        return _adapt_vector_env(creator, num_envs, seed=seed, backend=backend,
                                 num_workers=num_workers, num_buffers=num_buffers, name=name,
                                 env_kwargs=env_kwargs)
    factory = PythonEnvFactory(GYMNASIUM, creator, env_kwargs, name=name)
    return vectorize(factory, num_envs, seed=seed, backend=backend, num_workers=num_workers,
                     num_buffers=num_buffers)


def from_pettingzoo(creator: Callable[..., Any] | str, num_envs: int = 1, *,
                    seed: int | None = None, backend: str = "serial",
                    num_workers: int | None = None, num_buffers: int = 1, name: str | None = None,
                    **env_kwargs: Any) -> VecEnv:
    """A vector env of ``num_envs`` PettingZoo parallel envs, each ``creator(**env_kwargs)``.

    ``creator`` is a callable returning a ``pettingzoo.ParallelEnv`` (an AEC env is converted with
    ``aec_to_parallel``) or an import path as in ``pz:``. Each env gives
    ``len(possible_agents)`` rows; see :mod:`shoal.emulation.pettingzoo`.
    """
    factory = PythonEnvFactory(PETTINGZOO, creator, env_kwargs, name=name)
    return vectorize(factory, num_envs, seed=seed, backend=backend, num_workers=num_workers,
                     num_buffers=num_buffers)


def _adapt_vector_env(vector_env: Any, num_envs: int, *, seed: int | None, backend: str,
                      num_workers: int | None, num_buffers: int, name: str | None,
                      env_kwargs: dict[str, Any]) -> VecEnv:
    from .gymnasium import GymnasiumVectorAdapter

    n = int(vector_env.num_envs)
    label = name or f"gym:{type(vector_env).__name__}"
    problems = []
    if num_envs not in (1, n):
        problems.append(f"num_envs={num_envs} (it has {n} envs: leave num_envs out)")
    if backend != "serial" or num_workers is not None:
        problems.append(f"backend={backend!r}/num_workers={num_workers!r} (it steps its envs its "
                        f"own way: for processes make it with vectorization_mode='async')")
    if num_buffers != 1:
        problems.append(f"num_buffers={num_buffers} (it steps all its envs in one call)")
    if env_kwargs:
        problems.append(f"env keyword arguments {sorted(env_kwargs)} (it is already built)")
    if problems:
        raise ValueError(f"{label}: a built Gymnasium vector env is adapted as it is, so it takes "
                         f"none of: {'; '.join(problems)}. Fix: drop those arguments, or pass a "
                         f"creator of one env to vectorise it shoal's way")
    return GymnasiumVectorAdapter(vector_env, name=label, seed=seed)


def default_num_workers(num_envs: int, num_buffers: int) -> int:
    """The most worker processes, up to the cores this process may use
    (:func:`~shoal.vector.cores.usable_cores`), that split ``num_envs`` evenly."""
    cores = usable_cores()
    for w in range(min(cores, num_envs), 0, -1):
        if num_envs % w == 0 and w % num_buffers == 0:
            return w
    return num_buffers


def vectorize(factory: PythonEnvFactory, num_envs: int, *, seed: int | None = None,
              backend: str = "serial", num_workers: int | None = None,
              num_buffers: int = 1) -> VecEnv:
    """``num_envs`` envs of ``factory`` on ``backend``."""
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if not isinstance(num_buffers, int) or isinstance(num_buffers, bool) or num_buffers < 1:
        raise ValueError(f"num_buffers must be a positive integer, got {num_buffers!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
    if backend == "processes":
        from ..vector.processes import ProcessVecEnv

        if num_workers is None:
            num_workers = default_num_workers(num_envs, num_buffers)
        factory.describe()  # builds the probe env here, so its errors surface in the caller
        env = ProcessVecEnv(factory, num_envs, seed=seed, num_workers=num_workers,
                            num_buffers=num_buffers)
        env.structured_observation_space = factory.row_observation_space
        env.structured_action_space = factory.action_space
        return env
    num_threads = 0
    if backend == "threads":
        num_threads = num_workers or min(usable_cores(), num_envs)
    return factory.build(num_envs, seed=seed, num_buffers=num_buffers, num_threads=num_threads)
