"""template: walk right along a corridor to the goal (the env to copy when adding one)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="template",
    doc="Walk a corridor to its right end: the smallest env, and the one to copy.",
    module="shoal.envs.template._c",
    params={
        "length": Param(8, "cells in the corridor", low=2, high=1024),
        "max_steps": Param(64, "steps before the episode is truncated", low=1, high=1_000_000),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (p["length"],), np.float32),
    action_space=lambda p: spaces.Discrete(2),
)
