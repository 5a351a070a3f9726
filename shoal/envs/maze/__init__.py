"""maze: a new procedural maze every episode, seen through a window around the agent.

Observation: ``view`` x ``view`` uint8 cells centred on the agent (0 open, 1 wall -- also
everything outside the maze --, 2 goal). Actions: 0 stay, 1 up, 2 down, 3 left, 4 right.
Reward 1 for reaching the goal (terminal), else 0; truncated after ``max_steps`` steps.
The full rules are at the top of ``maze.h``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from ..spec import EnvSpec, Param


def _observation_space(p: Mapping[str, Any]) -> spaces.Box:
    view = p["view"]
    if view % 2 == 0:
        raise ValueError(f"maze: view={view} must be odd so the agent sits in the centre cell; "
                         f"use view={view + 1}")
    return spaces.Box(0, 2, (view, view), np.uint8)


SPEC = EnvSpec(
    name="maze",
    doc="Procedural grid maze, new each episode; reward 1 only for reaching the goal.",
    module="shoal.envs.maze._c",
    params={
        "size": Param(15, "cells per side of the maze, walls included (odd or even)", low=5, high=127),
        "view": Param(11, "odd width of the square observation window centred on the agent",
                      low=1, high=63),
        "max_steps": Param(0, "steps before the episode is truncated; 0 means 4*size*size",
                           low=0, high=10_000_000),
    },
    observation_space=_observation_space,
    action_space=lambda p: spaces.Discrete(5),
)
