"""Vectorisation: one interface (:class:`VecEnv`) over three backends.

- ``serial``: each group of envs steps in one C call on the calling thread, GIL released.
- ``threads``: groups are split across C worker threads; ``send`` returns at once (double
  buffering with ``num_buffers=2``).
- ``processes``: worker processes step shards into shared memory; for envs that hold the GIL.
"""

from __future__ import annotations

from typing import Any

from .base import Buffers, VecEnv
from .cores import usable_cores

BACKENDS = ("serial", "threads", "processes")

__all__ = ["BACKENDS", "Buffers", "VecEnv", "make"]


def make(name: str, num_envs: int = 1, *, seed: int | None = None, backend: str = "serial",
         num_workers: int | None = None, num_buffers: int = 1, **env_params: Any) -> VecEnv:
    """A vector of ``num_envs`` copies of env ``name``.

    Args:
        name: a registered C env (``shoal envs`` lists them), or a Python env: ``gym:ID`` (any
            id ``gymnasium.make`` accepts, also ``gym:module:ID``) or ``pz:MODULE.ENV`` (a
            PettingZoo parallel env by import path), built by :mod:`shoal.emulation`.
        num_envs: copies to step together; multi-agent envs give ``num_envs * agents`` rows.
        seed: seeds every env (env i uses stream i); None draws one at random.
        backend: ``"serial"``, ``"threads"`` or ``"processes"``.
        num_workers: threads or processes to use (default: one per CPU core).
        num_buffers: groups of envs for double buffering (``recv``/``send``); 1 or 2 typically.
        **env_params: the env's own parameters (``shoal envs`` shows them with their ranges);
            for ``gym:``/``pz:`` envs, keyword arguments of ``gymnasium.make`` / the creator.
    """
    if isinstance(name, str) and name.startswith(("gym:", "pz:")):
        from ..emulation import make as make_python_env

        return make_python_env(name, num_envs, seed=seed, backend=backend,
                               num_workers=num_workers, num_buffers=num_buffers, **env_params)
    from ..envs import get_spec

    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if not isinstance(num_buffers, int) or num_buffers < 1:
        raise ValueError(f"num_buffers must be a positive integer, got {num_buffers!r}")
    if num_workers is None:
        cores = max(1, min(usable_cores(), num_envs))
        if backend == "serial":
            num_workers = 1
        elif backend == "threads":
            num_workers = cores
        else:  # each process owns whole envs of one buffer group
            num_workers = max((w for w in range(num_buffers, cores + 1, num_buffers)
                               if num_envs % w == 0), default=num_buffers)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
    spec = get_spec(name)
    params = spec.resolve(env_params)
    if backend == "processes":
        from .processes import ProcessVecEnv, native_shard_factory

        return ProcessVecEnv(native_shard_factory(spec.name, params), num_envs, seed=seed,
                             num_workers=num_workers, num_buffers=num_buffers)
    from .native import NativeVecEnv

    return NativeVecEnv(spec, params, num_envs, seed=seed,
                        num_threads=num_workers if backend == "threads" else 0,
                        num_buffers=num_buffers)
