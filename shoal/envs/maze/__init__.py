"""maze: a new procedural maze every episode, seen through a window around the agent.

Observation: ``view`` x ``view`` uint8 cells centred on the agent (0 open, 1 wall -- also
everything outside the maze --, 2 goal). With ``prev_action=True`` a row of ``view`` cells
follows (``view + 1`` rows in all): cell ``k`` is 1 if the previous action was ``k``, all 0 on
an episode's first observation; it gives a policy without memory its heading.
Actions: 0 stay, 1 up, 2 down, 3 left, 4 right.
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
    if p["prev_action"] and view < 5:
        raise ValueError(f"maze: prev_action=True needs view >= 5 (the previous action is a row of "
                         f"view cells, one per action), got view={view}; use view=5 or more")
    return spaces.Box(0, 2, (view + int(p["prev_action"]), view), np.uint8)


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
        "prev_action": Param(False, "add a row to the observation holding the previous action "
                                    "one-hot (needs view >= 5): the heading, for wall-following"),
    },
    observation_space=_observation_space,
    action_space=lambda p: spaces.Discrete(5),
)
