"""A one-step decision whose observations are badly scaled: the kind of env ``train.norm_obs``
is for.

Each episode is one step. The observation is ``scale * u + offset`` with ``u`` uniform in
[-1, 1]^2 (and an unbounded Box space, so the policy's bound scaling leaves it as it is); the
right action is 0 when ``u[0] > u[1]``, else 1. Reward and ``info["score"]`` are 1 for the right
action, 0 otherwise, so a random policy scores 0.5. With ``scale = 1, offset = 0`` a policy
learns it in a few thousand steps; at ``scale = 1000, offset = 5000`` the raw inputs push the
first layer far from its initial range and learning stalls unless the observations are
normalised.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class OffsetCue(gym.Env):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, scale: float = 1000.0, offset: float = 5000.0) -> None:
        self.scale, self.offset = float(scale), float(offset)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.u = np.zeros(2)

    def _obs(self) -> np.ndarray:
        return (self.scale * self.u + self.offset).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.u = self.np_random.uniform(-1.0, 1.0, 2)
        return self._obs(), {}

    def step(self, action: int):
        right = int(action) == (0 if self.u[0] > self.u[1] else 1)
        reward = float(right)
        self.u = self.np_random.uniform(-1.0, 1.0, 2)
        return self._obs(), reward, True, False, {"score": reward}
