"""drone: a quadrotor in 3-D rigid-body physics flying to a stream of random targets."""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

OBS_SIZE = 21  # DRONE_OBS in drone.h

SPEC = EnvSpec(
    name="drone",
    doc=(
        "Fly a quadrotor (4 continuous rotor commands) to random targets in a box arena; "
        "reward is progress toward the target plus a bonus per target reached."
    ),
    module="shoal.envs.drone._c",
    params={
        "max_steps": Param(1000, "steps (of 0.02 s) before the episode is truncated", low=1,
                           high=1_000_000),
        "arena": Param(10.0, "half-width of the arena in metres (the box is 2*arena on each side, "
                             "floor at z=0)", low=1.0, high=1000.0),
        "target_radius": Param(1.0, "distance in metres at which a target counts as reached",
                               low=0.01, high=100.0),
        "target_bonus": Param(1.0, "reward for reaching a target", low=0.0, high=1000.0),
        "crash_penalty": Param(1.0, "reward subtracted when the drone leaves the arena", low=0.0,
                               high=1000.0),
    },
    observation_space=lambda p: spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32),
    action_space=lambda p: spaces.Box(-1.0, 1.0, (4,), np.float32),
    action_dtype=np.float32,
)
