"""Python envs for the reliability tests, in a module of their own so that process workers
import them without importing torch or the test modules."""

from __future__ import annotations

import socket

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class LinkedDuel(ParallelEnv):
    """Two agents; the env keeps a socket pair open for its whole life (a stand-in for a
    simulator connection), so it cannot be pickled. Reward 1 when an agent picks action 1."""

    metadata = {"name": "linked_duel_v0"}

    def __init__(self):
        self.possible_agents = ["a", "b"]
        self.agents = []
        self.link, self._peer = socket.socketpair()
        self.t = 0

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (3,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        return {a: np.array([self.t / 10, i, 1.0], np.float32) for i, a in enumerate(self.agents)}

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        rewards = {a: float(actions[a]) for a in self.agents}
        done = self.t >= 6
        terms = {a: done for a in self.agents}
        truncs = {a: False for a in self.agents}
        obs = self._obs()
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, {a: {} for a in rewards}

    def close(self):
        self.link.close()
        self._peer.close()
