"""coord: a two-agent signalling game (does multi-agent training with shared weights work?)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="coord",
    doc="Speaker sees a cue, listener sees the speaker's last move; both win on the cue. Sanity check.",
    module="shoal.envs.coord._c",
    params={
        "choices": Param(4, "actions, and possible cues", low=2, high=32),
        "rounds": Param(8, "scored rounds after the signal round", low=1, high=1000),
    },
    observation_space=lambda p: spaces.Box(0.0, 1.0, (2 * p["choices"] + 3,), np.float32),
    action_space=lambda p: spaces.Discrete(p["choices"]),
    agents_per_env=lambda p: 2,
)
