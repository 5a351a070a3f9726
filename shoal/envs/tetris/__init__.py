"""tetris: the falling-block game on a 10 x 20 board (rules at the top of tetris.h)."""

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

BOARD_CELLS = 200
PIECES = 7
ACTIONS = ("noop", "left", "right", "rotate_cw", "rotate_ccw", "soft_drop", "hard_drop", "hold")


def observation_space(p: Mapping[str, Any]) -> spaces.Box:
    """uint8: 200 board cells (0 empty, 1 stack, 2 falling piece), one-hots of the current piece,
    the ``num_next`` upcoming pieces and the held piece, then rotation, hold allowed and the steps
    since the piece last fell."""
    one_hots = PIECES * (p["num_next"] + 2)
    high = np.concatenate([
        np.full(BOARD_CELLS, 2), np.ones(one_hots),
        [3, 1, min(p["gravity_ticks"] - 1, 255)],
    ]).astype(np.uint8)
    return spaces.Box(np.zeros_like(high), high, dtype=np.uint8)


SPEC = EnvSpec(
    name="tetris",
    doc="Tetris on a 10x20 board: 7-bag, wall kicks, hold, gravity; reward = classic points / 1000.",
    module="shoal.envs.tetris._c",
    params={
        "gravity_ticks": Param(4, "steps between one-row falls of the piece", low=1, high=10_000),
        "num_next": Param(2, "upcoming pieces shown in the observation", low=0, high=5),
        "max_steps": Param(10_000, "steps before the episode is truncated", low=1, high=100_000_000),
    },
    observation_space=observation_space,
    action_space=lambda p: spaces.Discrete(len(ACTIONS)),
    action_mask=True,
)
