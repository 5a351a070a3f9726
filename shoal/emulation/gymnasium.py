"""Gymnasium envs as a shoal vector env.

Each Python env is a single ``gymnasium.Env`` (Gymnasium 1.x API: ``reset(seed=...)`` returns
``(obs, info)``, ``step`` returns ``(obs, reward, terminated, truncated, info)``). shoal owns the
reset of every env, so Gymnasium's vector autoreset modes do not apply: the envs follow shoal's
same-step contract (docs/envs.md) —

- ``terminals[i]`` / ``truncations[i]`` are the env's own ``terminated`` / ``truncated``, kept
  apart, so a trainer bootstraps truncated episodes from ``final_observations[i]``;
- on the step an episode ends, its last observation goes to ``final_observations[i]``, the env is
  reset (without a seed: its RNG continues), and the first observation of the next episode goes to
  ``observations[i]``;
- ``reset(seed=s)`` resets env ``i`` with ``seed=s + i``.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from ..vector.base import Buffers
from .base import PythonVecEnv, env_error

__all__ = ["GymnasiumVecEnv", "check_gymnasium_env"]


def check_gymnasium_env(env: Any, source: str) -> None:
    """Raises TypeError with the fix when ``env`` is not a single Gymnasium-style env."""
    try:
        from gymnasium.vector import VectorEnv
    except ImportError:  # pragma: no cover
        VectorEnv = ()
    if isinstance(env, VectorEnv):
        raise TypeError(
            f"{source} returned a Gymnasium vector env ({type(env).__name__}); shoal vectorises "
            f"envs itself. Fix: pass a creator of one env, e.g. lambda: gymnasium.make(id)"
        )
    missing = [a for a in ("reset", "step", "observation_space", "action_space")
               if not hasattr(env, a)]
    if missing:
        raise TypeError(
            f"{source} returned {type(env).__name__}, which lacks {', '.join(missing)}: it must "
            f"return a gymnasium.Env (subclass gymnasium.Env and set observation_space and "
            f"action_space)"
        )
    for attr in ("observation_space", "action_space"):
        if not isinstance(getattr(env, attr), spaces.Space):
            raise TypeError(
                f"{source}: env.{attr} is {getattr(env, attr)!r}, not a gymnasium.spaces.Space. "
                f"Fix: use gymnasium.spaces (e.g. spaces.Box(0, 1, (4,), np.float32))"
            )


class GymnasiumVecEnv(PythonVecEnv):
    """A vector over Gymnasium envs (one agent each) stepped in a loop.

    Args:
        envs: the envs (``gymnasium.Env``), all with the same spaces.
        name: name shown in messages and logs.
        seed: the seed ``reset()`` uses when called without one.
        num_buffers: groups for double buffering.
        num_threads: 0 steps on the calling thread; k > 0 uses a pool of k threads.
        buffers: rows to write into (given by a process worker); allocated when None.
        env_offset: index of ``envs[0]`` in the whole vector (seeds are ``seed + offset + i``).
    """

    def __init__(self, envs: list[Any], *, name: str = "gym", seed: int | None = None,
                 num_buffers: int = 1, num_threads: int = 0, buffers: Buffers | None = None,
                 env_offset: int = 0, observation_space: spaces.Space | None = None,
                 action_space: spaces.Space | None = None) -> None:
        if not envs:
            raise ValueError("GymnasiumVecEnv needs at least one env")
        for k, env in enumerate(envs):
            check_gymnasium_env(env, f"{name} (env {k})")
        obs_space = observation_space if observation_space is not None else envs[0].observation_space
        act_space = action_space if action_space is not None else envs[0].action_space
        for k, env in enumerate(envs):
            if env.observation_space != obs_space or env.action_space != act_space:
                raise ValueError(
                    f"{name}: env {k} has spaces {env.observation_space} / {env.action_space} but "
                    f"env 0 has {obs_space} / {act_space}: every env of a vector must share its "
                    f"spaces (one buffer row layout). Fix: make the creator build identical envs"
                )
        self._init_python(name=name, envs=list(envs), observation_space=obs_space,
                          action_space=act_space, agents_per_env=1, num_buffers=num_buffers,
                          seed=seed, buffers=buffers, env_offset=env_offset,
                          num_threads=num_threads)
        self._closed = False

    def _reset_env(self, index: int, seed: int) -> None:
        try:
            obs, _ = self.envs[index].reset(seed=seed)
        except Exception as exc:
            raise env_error(self.name, index + self.env_offset, f"reset(seed={seed})", exc) from exc
        self._obs_writers[index].write(obs)

    def _step_envs(self, lo: int, hi: int) -> None:
        actions = self.act_layout.decode_rows(self.actions[lo:hi])
        envs = self.envs
        ep_return, ep_length = self._ep_return, self._ep_length
        rewards, terminals, truncations = self.rewards, self.terminals, self.truncations
        # A plain Box (or Discrete) observation is written straight into the buffer row.
        direct = self.obs_layout.identity or self._single_leaf
        observations, finals = self.observations, self.final_observations
        obs_writers, final_writers = self._obs_writers, self._final_writers
        for i in range(lo, hi):
            env = envs[i]
            try:
                obs, reward, terminated, truncated, info = env.step(actions[i - lo])
                rewards[i] = reward
                terminals[i] = terminated
                truncations[i] = truncated
                ep_return[i] += reward
                ep_length[i] += 1
                if terminated or truncated:
                    if direct:
                        finals[i] = obs
                    else:
                        final_writers[i].write(obs)
                    self._finish_episode(i, info)
                    obs, _ = env.reset()
                if direct:
                    observations[i] = obs
                else:
                    obs_writers[i].write(obs)
            except Exception as exc:
                raise env_error(self.name, i + self.env_offset, "step()", exc) from exc

    def _render_env(self, index: int, mode: str) -> Any:
        env = self.envs[index]
        render_mode = getattr(env, "render_mode", None)
        if render_mode == mode:
            return env.render()
        if mode == "ansi":
            return self._text_frame(index)
        raise ValueError(
            f"{self.name}: env {index} was made with render_mode={render_mode!r}, so it cannot "
            f"render {mode!r} frames. Fix: make it with render_mode='rgb_array' (shoal.make("
            f"'{self.name}', ..., render_mode='rgb_array')), or use mode='ansi' for a text view "
            f"of the observations"
        )
