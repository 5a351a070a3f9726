"""g2048: the sliding-tile game 2048 on a 4x4 board.

Observation: 16 uint8, log2 of each tile (0 for empty), row-major. Actions: 0 up, 1 down,
2 left, 3 right. Reward: ``reward_scale`` times the sum of log2 of the tiles merges create;
an invalid move (one that changes nothing) gives ``-invalid_penalty``; the env's action mask
(``env.action_masks``) marks the moves that change the board, so a trainer with
``train.action_masks`` never takes an invalid one. The episode ends when no
move is possible; it is truncated after ``max_steps`` steps. Full rules at the top of ``g2048.h``.
"""

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param

MAX_EXPONENT = 17  # 131072, the largest tile a 4x4 board can hold

SPEC = EnvSpec(
    name="g2048",
    doc="2048 on a 4x4 board: slide and merge tiles; reward grows with log2 of merged tiles.",
    module="shoal.envs.g2048._c",
    params={
        "max_steps": Param(10_000, "steps before the episode is truncated (invalid moves count)",
                           low=1, high=100_000_000),
        "invalid_penalty": Param(0.0, "reward is minus this for a move that changes nothing",
                                 low=0.0, high=100.0),
        "reward_scale": Param(1 / 16, "reward per merge = reward_scale * log2(created tile)",
                              low=0.0, high=100.0),
    },
    observation_space=lambda p: spaces.Box(0, MAX_EXPONENT, (16,), np.uint8),
    action_space=lambda p: spaces.Discrete(4),
    action_mask=True,
)
