"""A goal-reaching grid with a per-step penalty: the kind of third-party env that default
settings must learn without tuning.

The agent and a goal are placed at random on a ``size`` x ``size`` grid; the agent moves
(up, down, left, right, stay) and every step costs ``-1`` until it reaches the goal, which ends
the episode; episodes are cut at ``max_steps``. Rewards are ``scale * (-1) + shift`` per step
(``scale`` and ``shift`` test invariance to the reward's units and offset). A random walk takes
longer than ``max_steps`` to find the goal most of the time, so returns start near
``-max_steps * scale``. ``info["score"]`` at the episode's end is 1 when the goal was reached,
else 0, whatever the reward's scale.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

MOVES = np.array([[0, 1], [0, -1], [1, 0], [-1, 0], [0, 0]])


class GoalGrid(gym.Env):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, size: int = 12, max_steps: int = 100, scale: float = 1.0,
                 shift: float = 0.0, goal_reward: float = 0.0) -> None:
        self.size, self.max_steps = int(size), int(max_steps)
        self.scale, self.shift = float(scale), float(shift)
        self.goal_reward = float(goal_reward)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.agent = np.zeros(2, np.int64)
        self.goal = np.zeros(2, np.int64)
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.agent, self.goal]).astype(np.float32) / (self.size - 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.agent = self.np_random.integers(0, self.size, 2)
        self.goal = self.agent
        while np.array_equal(self.goal, self.agent):
            self.goal = self.np_random.integers(0, self.size, 2)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: int):
        self.agent = np.clip(self.agent + MOVES[int(action)], 0, self.size - 1)
        self.steps += 1
        reached = bool(np.array_equal(self.agent, self.goal))
        reward = (self.goal_reward if reached else -self.scale) + self.shift
        truncated = not reached and self.steps >= self.max_steps
        info = {"score": float(reached)} if reached or truncated else {}
        return self._obs(), reward, reached, truncated, info
