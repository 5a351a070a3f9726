"""recall: remember a symbol over blank steps (does the trainer's recurrent policy remember?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="recall",
    doc="Name the symbol shown `delay` blank steps ago: needs memory (LSTM). Sanity check.",
    module="shoal.envs.recall._c",
    params={
        "symbols": Param(4, "symbols to remember (actions)", low=2, high=64),
        "delay": Param(4, "blank steps between the cue and the query", low=0, high=1000),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (p["symbols"] + 1,), np.float32),
    action_space=lambda p: spaces.Discrete(p["symbols"]),
)
