"""password: enter a fixed binary password, one wrong key ends it (is exploration good enough?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="password",
    doc="Type a hidden binary password; random keys succeed with chance 2^-length. Sanity check.",
    module="shoal.envs.password._c",
    params={
        "length": Param(5, "keys in the password", low=1, high=30),
        "code": Param(22, "the password: key i is bit i of code (least significant first)",
                      low=0, high=2**30 - 1),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (p["length"],), np.float32),
    action_space=lambda p: spaces.Discrete(2),
)
