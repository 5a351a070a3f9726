"""Gymnasium envs as a shoal vector env.

Each Python env is a single ``gymnasium.Env`` (Gymnasium 1.x API: ``reset(seed=...)`` returns
``(obs, info)``, ``step`` returns ``(obs, reward, terminated, truncated, info)``). shoal owns the
reset of every env (an env wrapped in Gymnasium's ``Autoreset`` wrapper works too: shoal's reset
clears the wrapper's pending autoreset), and the envs follow shoal's same-step contract
(docs/envs.md) —

- ``terminals[i]`` / ``truncations[i]`` are the env's own ``terminated`` / ``truncated``, kept
  apart, so a trainer bootstraps truncated episodes from ``final_observations[i]``;
- on the step an episode ends, its last observation goes to ``final_observations[i]``, the env is
  reset (without a seed: its RNG continues), and the first observation of the next episode goes to
  ``observations[i]``;
- ``reset(seed=s)`` resets env ``i`` with ``seed=s + i``.

A Gymnasium *vector* env built elsewhere (``gymnasium.make_vec``, ``SyncVectorEnv``,
``AsyncVectorEnv``) is adapted as it is by :class:`GymnasiumVectorAdapter`, in any of Gymnasium's
autoreset modes, into the same contract:

- ``SAME_STEP``: the vector env already resets on the step an episode ends; the last observation
  comes from ``info["final_obs"]``;
- ``NEXT_STEP`` (Gymnasium's default) and ``DISABLED``: the step's observation is the last one;
  the adapter then resets the envs that ended at once with ``reset(options={"reset_mask": ...})``
  (Gymnasium >= 1.1), so no step is spent on a reset and no action is ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ..vector.base import Buffers
from .base import EnvError, PythonVecEnv, env_error

__all__ = ["GymnasiumVecEnv", "GymnasiumVectorAdapter", "autoreset_mode", "check_gymnasium_env"]


def check_gymnasium_env(env: Any, source: str) -> None:
    """Raises TypeError with the fix when ``env`` is not a single Gymnasium-style env."""
    try:
        from gymnasium.vector import VectorEnv
    except ImportError:  # pragma: no cover
        VectorEnv = ()
    if isinstance(env, VectorEnv):
        raise TypeError(
            f"{source} returned a Gymnasium vector env ({type(env).__name__}); shoal vectorises "
            f"envs itself. Fix: pass a creator of one env, e.g. lambda: gymnasium.make(id), or "
            f"pass the built vector env itself: shoal.from_gymnasium(vector_env)"
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
        direct = self._direct_rows
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


def autoreset_mode(vector_env: Any) -> str:
    """The autoreset mode of a Gymnasium vector env: ``"NextStep"``, ``"SameStep"`` or
    ``"Disabled"`` (``metadata["autoreset_mode"]``; Gymnasium's default, NextStep, if unset)."""
    mode = getattr(vector_env, "metadata", {}).get("autoreset_mode", "NextStep")
    mode = getattr(mode, "value", mode)
    if mode not in ("NextStep", "SameStep", "Disabled"):
        raise ValueError(f"{type(vector_env).__name__} has metadata['autoreset_mode']={mode!r}: "
                         f"expected one of gymnasium.vector.AutoresetMode's values")
    return mode


class GymnasiumVectorAdapter(PythonVecEnv):
    """A Gymnasium vector env (``gymnasium.vector.VectorEnv``) behind shoal's interface.

    The vector env steps all its envs in one call (its own way: in a loop, or in its worker
    processes for ``AsyncVectorEnv``), so the adapter has one buffer group and no threads of its
    own. Every autoreset mode is handled (see the module docstring). Snapshots are not supported
    (a resumed run starts fresh episodes).

    Args:
        vector_env: the vector env; the adapter closes it on ``close()``.
        name: name shown in messages and logs.
        seed: the seed ``reset()`` uses when called without one (env ``i`` gets ``seed + i``).
    """

    def __init__(self, vector_env: Any, *, name: str = "gym-vector", seed: int | None = None) -> None:
        from gymnasium.vector import VectorEnv

        if not isinstance(vector_env, VectorEnv):
            raise TypeError(f"GymnasiumVectorAdapter needs a gymnasium.vector.VectorEnv, got "
                            f"{type(vector_env).__name__}")
        self.vector_env = vector_env
        self.autoreset_mode = autoreset_mode(vector_env)
        num_envs = int(vector_env.num_envs)
        obs_space = vector_env.single_observation_space
        act_space = vector_env.single_action_space
        for role, space in (("observation", obs_space), ("action", act_space)):
            if not isinstance(space, spaces.Space):
                raise TypeError(f"{name}: the vector env's single_{role}_space is {space!r}, not a "
                                f"gymnasium.spaces.Space")
        # One placeholder per env: PythonVecEnv sizes its rows from len(envs).
        self._init_python(name=name, envs=[None] * num_envs, observation_space=obs_space,
                          action_space=act_space, agents_per_env=1, num_buffers=1, seed=seed,
                          buffers=None, env_offset=0, num_threads=0)
        from gymnasium.vector.utils import create_empty_array

        self._batched_actions = create_empty_array(act_space, num_envs)
        self._closed = False

    # ---- writing batched results into rows ----

    def _write_rows(self, writers: list[Any], target: np.ndarray, batch: Any,
                    rows: np.ndarray | None = None) -> None:
        """Rows ``rows`` (all when None) of a batched observation into ``target`` buffer rows."""
        if self._direct_rows:
            if rows is None:
                target[...] = batch
            else:
                target[rows] = np.asarray(batch)[rows]
            return
        from gymnasium.vector.utils import iterate

        wanted = None if rows is None else set(int(r) for r in rows)
        for i, item in enumerate(iterate(self.vector_env.observation_space, batch)):
            if wanted is None or i in wanted:
                writers[i].write(item)

    @staticmethod
    def _score_info(infos: Any, i: int) -> dict | None:
        if not isinstance(infos, dict) or "score" not in infos:
            return None
        mask = infos.get("_score")
        if mask is not None and not mask[i]:
            return None
        return {"score": infos["score"][i]}

    # ---- PythonVecEnv hooks ----

    def _reset(self, seed: int) -> None:
        self._clear_for_reset()
        try:
            obs, _ = self.vector_env.reset(seed=int(seed))   # env i gets seed + i
        except Exception as exc:
            raise env_error(self.name, 0, f"reset(seed={seed}) of the vector env", exc) from exc
        self._write_rows(self._obs_writers, self.observations, obs)

    def _step_envs(self, lo: int, hi: int) -> None:
        decoded = self.act_layout.decode_rows(self.actions)
        if self.act_layout.kind == "structured":
            from gymnasium.vector.utils import concatenate

            actions = concatenate(self.vector_env.single_action_space, decoded,
                                  self._batched_actions)
        else:
            actions = np.asarray(decoded)
        vec = self.vector_env
        try:
            obs, rewards, terminated, truncated, infos = vec.step(actions)
        except Exception as exc:
            raise env_error(self.name, 0, "step() of the vector env", exc) from exc
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool)
        self.rewards[:] = rewards
        self.terminals[:] = terminated
        self.truncations[:] = truncated
        for i, r in enumerate(np.asarray(rewards, np.float64).tolist()):
            self._ep_return[i] += r
            self._ep_length[i] += 1
        ended = np.flatnonzero(terminated | truncated)
        if self.autoreset_mode == "SameStep":
            # obs already holds the next episodes' first observations
            final = infos.get("final_obs") if isinstance(infos, dict) else None
            if final is None and len(ended):
                raise EnvError(
                    f"{self.name}: the vector env says its autoreset mode is SameStep but gave no "
                    f"info['final_obs'] on the step an episode ended. Fix: return the last "
                    f"observation in info['final_obs'] (as Gymnasium's vector envs do), or set "
                    f"metadata['autoreset_mode'] to NextStep or Disabled")
            for i in ended:
                self._final_writers[i].write(final[i])
                self._finish_episode(int(i), self._score_info(infos.get("final_info", {}), i))
            self._write_rows(self._obs_writers, self.observations, obs)
            return
        # NextStep / Disabled: obs holds the last observations of the envs that ended
        self._write_rows(self._final_writers, self.final_observations, obs, ended)
        for i in ended:
            self._finish_episode(int(i), self._score_info(infos, i))
        if len(ended):
            mask = np.zeros(self.num_envs, bool)
            mask[ended] = True
            try:
                obs, _ = vec.reset(options={"reset_mask": mask})
            except Exception as exc:
                raise EnvError(
                    f"{self.name}: resetting the envs that ended with reset(options="
                    f"{{'reset_mask': mask}}) raised {type(exc).__name__}: {exc}. The vector env "
                    f"runs in autoreset mode {self.autoreset_mode}, which shoal adapts with that "
                    f"call (Gymnasium >= 1.1 vector envs support it). Fix: upgrade gymnasium, or "
                    f"make the vector env with autoreset_mode=gymnasium.vector.AutoresetMode."
                    f"SAME_STEP") from exc
        self._write_rows(self._obs_writers, self.observations, obs)

    def _render_env(self, index: int, mode: str) -> Any:
        render_mode = getattr(self.vector_env, "render_mode", None)
        if render_mode == mode:
            frames = self.vector_env.render()
            return frames[index] if frames is not None else None
        if mode == "ansi":
            return self._text_frame(index)
        raise ValueError(
            f"{self.name}: the vector env was made with render_mode={render_mode!r}, so it cannot "
            f"render {mode!r} frames. Fix: make it with render_mode='rgb_array', or use "
            f"mode='ansi' for a text view of the observations")

    def _save_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name}: a Gymnasium vector env cannot be snapshotted; "
                                  f"a resumed run starts fresh episodes")

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self.vector_env.close()

    def _close_env(self, index: int) -> None:
        pass  # the vector env owns its envs

