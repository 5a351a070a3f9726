"""breakout: Atari-style brick breaking with one paddle and one ball (rules at the top of breakout.h)."""

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

SCALARS = 8  # paddle x, ball x, ball y, vx, vy, lives, paddle width, speed-ups


def observation_space(p: Mapping[str, Any]) -> spaces.Box:
    """float32 in [-1, 1]: 8 scalars (see breakout.h) then one value per brick (1 present)."""
    return spaces.Box(-1.0, 1.0, (SCALARS + p["brick_rows"] * p["brick_cols"],), np.float32)


def action_space(p: Mapping[str, Any]) -> spaces.Space:
    """Discrete(3) (0 stay, 1 left, 2 right), or with ``continuous`` a paddle velocity in [-1, 1]."""
    if p["continuous"]:
        return spaces.Box(-1.0, 1.0, (1,), np.float32)
    return spaces.Discrete(3)


SPEC = EnvSpec(
    name="breakout",
    doc="Atari-style Breakout: 6x18 bricks, 5 lives, speed-ups; reward 1 per brick.",
    module="shoal.envs.breakout._c",
    params={
        "brick_rows": Param(6, "rows of bricks", low=1, high=12),
        "brick_cols": Param(18, "columns of bricks (the field is 8 px per column wide)", low=2, high=36),
        "lives": Param(5, "balls before the game is over", low=1, high=100),
        "frameskip": Param(4, "frames simulated per step with the same action", low=1, high=64),
        "continuous": Param(False, "Box(-1, 1, (1,)) paddle velocity instead of Discrete(3)"),
        "max_steps": Param(10_000, "steps before the episode is truncated", low=1, high=100_000_000),
    },
    observation_space=observation_space,
    action_space=action_space,
    action_dtype=np.float32,
)
