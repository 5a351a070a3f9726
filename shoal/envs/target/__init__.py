"""target: accelerate a point to a random target (can the trainer do continuous actions?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="target",
    doc="Steer a point mass to a random target with 2-D accelerations in [-1, 1]. Sanity check.",
    module="shoal.envs.target._c",
    params={
        "max_steps": Param(64, "steps before the episode is truncated", low=1, high=100_000),
        "radius": Param(0.1, "reach distance around the target", low=0.01, high=1.0),
    },
    observation_space=lambda p: spaces.Box(
        np.array([-1.9, -1.9, -1.0, -1.0], np.float32), np.array([1.9, 1.9, 1.0, 1.0], np.float32),
        dtype=np.float32),
    action_space=lambda p: spaces.Box(-1.0, 1.0, (2,), np.float32),
    action_dtype=np.float32,
)
