"""stochastic: a constant observation where only a mixed policy scores well (does entropy survive?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="stochastic",
    doc="Play action 0 a fraction p of the time with no clock to count on: needs a random policy.",
    module="shoal.envs.stochastic._c",
    params={
        "steps": Param(16, "steps per episode", low=1, high=10_000),
        "p": Param(0.7, "target fraction of action 0", low=0.0, high=1.0),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (1,), np.float32),
    action_space=lambda p: spaces.Discrete(2),
)
