"""PettingZoo parallel envs as a shoal vector env.

Every env gets ``len(env.possible_agents)`` rows, one per possible agent in that order, whether or
not the agent is currently in the game. After each step and reset:

- an agent that is in ``env.agents`` and was given an observation has its observation in its row
  and ``masks[row] = 1``;
- any other row (an agent not yet spawned, or one that died) has a zeroed observation and
  ``masks[row] = 0``: its action is ignored (not even range-checked) and a trainer leaves it out of
  the loss;
- on the step an agent's episode ends (its ``terminated`` or ``truncated`` is set, or it left
  ``env.agents`` without either, which counts as terminated), its reward and flag are in its row
  and its last observation in ``final_observations``;
- when no agent is left (``env.agents`` is empty, or every remaining agent ended this step) the env
  resets at once and the new first observations are written, as in the single-agent contract.

Agents may appear and disappear mid-episode. All possible agents must share one observation
space and one action space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ..vector.base import Buffers
from .base import PythonVecEnv, env_error

__all__ = ["PettingZooVecEnv", "agent_spaces", "as_parallel_env"]


def as_parallel_env(env: Any, source: str) -> Any:
    """``env`` as a PettingZoo ParallelEnv (AEC envs are converted); TypeError with the fix."""
    if hasattr(env, "agent_selection") and hasattr(env, "last"):
        try:
            from pettingzoo.utils.conversions import aec_to_parallel
        except ImportError as exc:  # pragma: no cover
            raise ImportError("converting an AEC env needs pettingzoo: pip install pettingzoo") from exc
        env = aec_to_parallel(env)
    missing = [a for a in ("reset", "step", "possible_agents", "observation_space", "action_space")
               if not hasattr(env, a)]
    if missing:
        raise TypeError(
            f"{source} returned {type(env).__name__}, which lacks {', '.join(missing)}: it must "
            f"return a PettingZoo ParallelEnv (subclass pettingzoo.ParallelEnv, set "
            f"possible_agents and define observation_space(agent) / action_space(agent))"
        )
    return env


def agent_spaces(env: Any, name: str) -> tuple[list[Any], spaces.Space, spaces.Space]:
    """(possible_agents, the shared observation space, the shared action space) of a parallel env."""
    agents = list(env.possible_agents)
    if not agents:
        raise ValueError(f"{name}: env.possible_agents is empty: a PettingZoo env must list every "
                         f"agent that can ever appear in possible_agents")
    if len(set(agents)) != len(agents):
        raise ValueError(f"{name}: env.possible_agents has duplicates: {agents}")
    obs_spaces = [env.observation_space(a) for a in agents]
    act_spaces = [env.action_space(a) for a in agents]
    for kind, found in (("observation", obs_spaces), ("action", act_spaces)):
        for agent, space in zip(agents, found):
            if not isinstance(space, spaces.Space):
                raise TypeError(f"{name}: {kind}_space({agent!r}) is {space!r}, not a "
                                f"gymnasium.spaces.Space")
            if space != found[0]:
                raise ValueError(
                    f"{name}: agent {agent!r} has {kind} space {space} but agent {agents[0]!r} has "
                    f"{found[0]}: shoal gives every agent one buffer row of one layout, so all "
                    f"agents must share their {kind} space. Fix: wrap the env to pad "
                    f"{kind}s to a common space (e.g. a Box of the largest size, zero-padded)"
                )
    return agents, obs_spaces[0], act_spaces[0]


class PettingZooVecEnv(PythonVecEnv):
    """A vector over PettingZoo parallel envs, ``len(possible_agents)`` rows per env.

    Args are those of :class:`~shoal.emulation.gymnasium.GymnasiumVecEnv`; ``envs`` are parallel
    envs with the same possible agents and spaces.
    """

    def __init__(self, envs: list[Any], *, name: str = "pz", seed: int | None = None,
                 num_buffers: int = 1, num_threads: int = 0, buffers: Buffers | None = None,
                 env_offset: int = 0) -> None:
        if not envs:
            raise ValueError("PettingZooVecEnv needs at least one env")
        envs = [as_parallel_env(e, f"{name} (env {k})") for k, e in enumerate(envs)]
        agents, obs_space, act_space = agent_spaces(envs[0], name)
        for k, env in enumerate(envs[1:], 1):
            if list(env.possible_agents) != agents:
                raise ValueError(f"{name}: env {k} has possible_agents {list(env.possible_agents)} "
                                 f"but env 0 has {agents}: every env must list the same agents")
        self.possible_agents = agents
        self._agent_index = {a: j for j, a in enumerate(agents)}
        self._init_python(name=name, envs=envs, observation_space=obs_space,
                          action_space=act_space, agents_per_env=len(agents),
                          num_buffers=num_buffers, seed=seed, buffers=buffers,
                          env_offset=env_offset, num_threads=num_threads)
        self.masks[:] = False
        # The agents of each env that have an observation to act on (in row order).
        self._live: list[list[Any]] = [[] for _ in envs]
        self._closed = False

    def _live_rows(self, rows: slice) -> np.ndarray:
        return self.masks[rows]

    def _write_observations(self, index: int, obs: dict, alive: Any) -> None:
        """Rows of env ``index`` after a reset or step: observed live agents get obs and mask 1."""
        base = index * self.agents_per_env
        live = []
        for j, agent in enumerate(self.possible_agents):
            row = base + j
            if agent in alive and agent in obs:
                self._obs_writers[row].write(obs[agent])
                self.masks[row] = True
                live.append(agent)
            else:
                self._obs_writers[row].clear()
                self.masks[row] = False
        self._live[index] = live

    def _reset_env(self, index: int, seed: int) -> None:
        env = self.envs[index]
        try:
            obs, _ = env.reset(seed=seed)
        except Exception as exc:
            raise env_error(self.name, index + self.env_offset, f"reset(seed={seed})", exc) from exc
        self._check_agents(index, env.agents)
        self._write_observations(index, obs, set(env.agents))

    def _check_agents(self, index: int, agents: Any) -> None:
        unknown = [a for a in agents if a not in self._agent_index]
        if unknown:
            raise ValueError(
                f"{self.name}: env {index + self.env_offset} has agents {unknown} that are not in "
                f"possible_agents {self.possible_agents}: list every agent that can ever appear "
                f"in possible_agents (shoal gives each one a fixed buffer row)"
            )

    def _step_envs(self, lo: int, hi: int) -> None:
        a = self.agents_per_env
        decoded = self.act_layout.decode_rows(self.actions[lo * a:hi * a])
        index_of = self._agent_index
        for i in range(lo, hi):
            env = self.envs[i]
            base = i * a
            live = self._live[i]
            actions = {agent: decoded[base - lo * a + index_of[agent]] for agent in live}
            try:
                obs, rewards, terminated, truncated, infos = env.step(actions)
                self._check_agents(i, env.agents)
                alive_after = set(env.agents)
                live_before = set(live)
                ended = []
                for j, agent in enumerate(self.possible_agents):
                    row = base + j
                    reward = float(rewards.get(agent, 0.0))
                    term = bool(terminated.get(agent, False))
                    trunc = bool(truncated.get(agent, False))
                    if agent in live_before and agent not in alive_after and not (term or trunc):
                        term = True  # it left the game without a flag: its episode is over
                    self.rewards[row] = reward
                    self.terminals[row] = term
                    self.truncations[row] = trunc
                    if agent in live_before:
                        self._ep_return[row] += reward
                        self._ep_length[row] += 1
                    if term or trunc:
                        ended.append(agent)
                        if agent in obs:
                            self._final_writers[row].write(obs[agent])
                        else:
                            self._final_writers[row].clear()
                        self._finish_episode(row, infos.get(agent) if isinstance(infos, dict) else None)
                alive = alive_after.difference(ended)
                if not alive:
                    obs, _ = env.reset()
                    self._check_agents(i, env.agents)
                    alive = set(env.agents)
                self._write_observations(i, obs, alive)
            except Exception as exc:
                raise env_error(self.name, i + self.env_offset, "step()", exc) from exc

    def _extra_state(self) -> Any:
        return [list(live) for live in self._live]

    def _restore_extra_state(self, extra: Any) -> None:
        self._live = [list(live) for live in extra]

    def _text_frame(self, index: int, extra: str = "") -> str:
        return super()._text_frame(index, f" (agents {self.possible_agents}){extra}")
