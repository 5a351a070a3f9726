"""Python envs for the reliability tests, in a module of their own so that process workers
import them without importing torch or the test modules."""

from __future__ import annotations

import socket

import gymnasium
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


class LengthScoreEnv(gymnasium.Env):
    """Each episode is short (2 steps, score 0) or long (20 steps, score 1), drawn with equal
    odds at reset whatever the actions: the mean score per episode is 0.5, and an evaluation that
    favours episodes finishing early reads it as near 0."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.length = 20 if self.np_random.random() < 0.5 else 2
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = float(done and self.length == 20)
        return np.array([self.t / 20], np.float32), reward, done, False, {}


gymnasium.register("LengthScore-v0", entry_point=LengthScoreEnv)


class FaultyEnv(gymnasium.Env):
    """A CartPole-sized env that misbehaves on its ``at``-th step: ``fault`` is ``"raise"``
    (an exception), ``"hang"`` (sleeps for an hour) or ``"exit"`` (its process dies at once)."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, fault: str = "raise", at: int = 5):
        self.fault, self.at, self.steps = fault, at, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        import multiprocessing
        import os
        import time

        self.steps += 1
        if self.steps == self.at and multiprocessing.parent_process() is not None:
            if self.fault == "raise":
                raise RuntimeError(f"simulator fault at step {self.steps}")
            if self.fault == "hang":
                time.sleep(3600)
            if self.fault == "exit":
                os._exit(3)
        return np.zeros(4, np.float32), 1.0, self.steps % 10 == 0, False, {}
