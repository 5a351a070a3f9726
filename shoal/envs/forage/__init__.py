"""forage: many agents share one grid and race to collect food (the multi-agent env)."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SPEC = EnvSpec(
    name="forage",
    doc=(
        "Multi-agent: num_agents agents on one grid collect respawning food (+1 each), seeing an "
        "egocentric view x view window (0 empty, 1 wall, 2 food, 3 agent)."
    ),
    module="shoal.envs.forage._c",
    params={
        "num_agents": Param(8, "agents sharing each grid (one buffer row each)", low=1, high=4096),
        "size": Param(24, "side of the square grid, in cells", low=2, high=4096),
        "num_food": Param(16, "food items on the grid at all times", low=0, high=1_000_000),
        "view": Param(7, "side of each agent's observation window; must be odd", low=1, high=63),
        "max_steps": Param(256, "steps per episode (then every agent is truncated)", low=1,
                           high=1_000_000),
    },
    observation_space=lambda p: spaces.Box(0, 3, (p["view"], p["view"]), np.uint8),
    action_space=lambda p: spaces.Discrete(5),
    agents_per_env=lambda p: p["num_agents"],
)
