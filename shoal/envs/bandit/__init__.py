"""bandit: a contextual bandit with a delayed reward (does the trainer assign credit over time?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="bandit",
    doc="Pick the arm the context shows; the reward comes `delay` steps later. Sanity check.",
    module="shoal.envs.bandit._c",
    params={
        "arms": Param(4, "number of arms (actions)", low=2, high=64),
        "delay": Param(4, "blank steps between the choice and its reward", low=0, high=1000),
        "best_arm": Param(-1, "-1: best arm drawn each episode and shown; k: always arm k, hidden",
                          low=-1, high=63),
        "best_prob": Param(1.0, "chance that the best arm pays 1", low=0.0, high=1.0),
        "other_prob": Param(0.0, "chance that any other arm pays 1", low=0.0, high=1.0),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (p["arms"] + 1,), np.float32),
    action_space=lambda p: spaces.Discrete(p["arms"]),
)
