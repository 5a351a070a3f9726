"""chase, the Python side of an env that lives outside shoal: its spec and a ``make`` function.

shoal's registry (``shoal.make("name")``, ``shoal train NAME``) only knows the envs inside
``shoal/envs/``, so an out-of-tree env builds its vector env itself: ``NativeVecEnv`` takes the
spec object directly. The result is a normal shoal vector env (``step``, ``recv``/``send``,
``log``, ``render``, snapshots) that ``shoal.train(env, ...)`` accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.envs.spec import EnvSpec, Param
from shoal.vector.native import NativeVecEnv

OBS_SIZE = 4  # CHASE_OBS in chase.h

SPEC = EnvSpec(
    name="chase",
    doc="Catch a target on a grid; it jumps to a new cell each time it is caught.",
    module="chase._c",  # built by ../setup.py next to this file
    params={
        "size": Param(8, "cells per side of the grid", low=2, high=64),
        "max_steps": Param(64, "steps before the episode is truncated", low=1, high=1_000_000),
    },
    observation_space=lambda p: spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32),
    action_space=lambda p: spaces.Discrete(5),
)


def make(num_envs: int = 1, seed: int | None = None, num_threads: int = 0, num_buffers: int = 1,
         **params: Any) -> NativeVecEnv:
    """``num_envs`` chase envs as a shoal vector env (serial, or ``num_threads`` C threads).

    ``params`` are checked against ``SPEC`` (``size``, ``max_steps``) before any C code runs.
    """
    return NativeVecEnv(SPEC, SPEC.resolve(params), num_envs, seed=seed, num_threads=num_threads,
                        num_buffers=num_buffers)
