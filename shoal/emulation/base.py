"""The vector env shared by Gymnasium and PettingZoo emulation: Python envs over shoal's buffers.

:class:`PythonVecEnv` holds a list of Python envs and steps them in a loop, writing observations,
rewards, flags and masks into the same buffers the C envs use, with the same contract: on the step
an episode ends, the last observation goes to ``final_observations`` and the env resets at once,
so ``observations`` always holds what to act on.

Backends:

- ``serial`` (``num_threads=0``): ``send`` steps the group on the calling thread.
- ``threads`` (``num_threads=k``): ``send`` hands the group to ``k`` threads (each a contiguous
  shard of its envs) and returns at once; ``recv`` waits. Pure-Python envs hold the GIL, so the
  gain is overlap rather than parallel stepping: with ``num_buffers=2`` the policy's forward pass
  (which releases the GIL in torch) runs while the other group steps, and envs whose step releases
  the GIL (physics engines in C) do step in parallel. For pure-Python envs on several cores use
  ``processes``.
- ``processes``: :class:`~shoal.vector.processes.ProcessVecEnv` runs one serial
  :class:`PythonVecEnv` per worker over its rows of shared memory (see :mod:`.factory`).
"""

from __future__ import annotations

import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium import spaces

from ..vector.base import (Buffers, PickledStateError, VecEnv, allocate_buffers, buffer_layout,
                           split_evenly)
from .masks import MaskedRowWriter, split_action_mask
from .spaces import ActionLayout, ObservationLayout, action_layout, observation_layout

__all__ = ["EnvError", "PythonVecEnv"]


class EnvError(RuntimeError):
    """A Python env raised inside reset() or step(); the original exception is the cause."""


def env_error(name: str, index: int, method: str, exc: BaseException) -> EnvError:
    """An EnvError naming the env, its index and the call, with a hint for common API mistakes."""
    text = f"{type(exc).__name__}: {exc}"
    hint = ""
    if isinstance(exc, (ValueError, TypeError)) and "unpack" in str(exc):
        if method == "step()":
            hint = (" step() must return 5 values (observation, reward, terminated, truncated, "
                    "info), the Gymnasium 1.x API")
        elif method.startswith("reset("):
            hint = " reset() must return 2 values (observation, info), the Gymnasium 1.x API"
    return EnvError(f"{name}: env {index} raised in {method}: {text}.{hint} "
                    f"(`shoal check` explains what is wrong with an env and how to fix it)")


def close_all(envs: list[Any]) -> None:
    """Closes every env of ``envs``, ignoring their errors (cleanup after a failed build)."""
    for env in envs:
        try:
            env.close()
        except Exception:
            pass


class PythonVecEnv(VecEnv):
    """Base of the Gymnasium and PettingZoo vector envs: buffers, actions, threads, stats.

    Subclasses implement ``_reset_env(i, seed)``, ``_step_envs(lo, hi)`` (steps envs
    ``[lo, hi)``, writing their rows), ``_render_env(i, mode)`` and ``_close_env(i)``.
    """

    def _init_python(self, *, name: str, envs: list[Any], observation_space: spaces.Space,
                     action_space: spaces.Space, agents_per_env: int, num_buffers: int,
                     seed: int | None, buffers: Buffers | None, env_offset: int,
                     num_threads: int) -> None:
        self.envs = envs
        num_envs = len(envs)
        # a Dict observation's "action_mask" goes to the action-mask buffer, not the rows
        observation_space, mask_width = split_action_mask(observation_space, action_space, name)
        self.obs_layout: ObservationLayout = observation_layout(observation_space)
        self.act_layout: ActionLayout = action_layout(action_space)
        #: the env's own (structured) spaces; single_*_space are the flat buffer-row spaces
        self.structured_observation_space = observation_space
        self.structured_action_space = action_space
        num_agents = num_envs * agents_per_env
        if buffers is None:
            buffers = allocate_buffers(buffer_layout(num_agents, self.obs_layout.flat_space,
                                                     self.act_layout.flat_space,
                                                     self.act_layout.dtype, mask_width))
        self._setup(name=name, obs_space=self.obs_layout.flat_space,
                    act_space=self.act_layout.flat_space, num_envs=num_envs,
                    agents_per_env=agents_per_env, num_buffers=num_buffers, seed=seed,
                    buffers=buffers)
        self.env_offset = int(env_offset)
        self.num_threads = int(num_threads)
        leaves = self.obs_layout.leaves
        self._single_leaf = len(leaves) == 1 and not leaves[0].path and not self.obs_layout.as_bytes
        self._obs_writers = [self.obs_layout.writer(self.observations[r]) for r in range(num_agents)]
        self._final_writers = [self.obs_layout.writer(self.final_observations[r])
                               for r in range(num_agents)]
        if mask_width:
            only = not isinstance(observation_space, spaces.Dict)
            self._obs_writers = [MaskedRowWriter(w, self.action_masks[r], only)
                                 for r, w in enumerate(self._obs_writers)]
            self._final_writers = [MaskedRowWriter(w, None, only) for w in self._final_writers]
        #: whether a row is the observation itself (written without a writer)
        self._direct_rows = not mask_width and (self.obs_layout.identity or self._single_leaf)
        # Running episode return/length per agent row, and the sums of finished episodes.
        self._ep_return = [0.0] * num_agents
        self._ep_length = [0] * num_agents
        self._done_return = np.zeros(num_agents)
        self._done_length = np.zeros(num_agents)
        self._done_score = np.zeros(num_agents)
        self._done_n = np.zeros(num_agents)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[list[Future]] = [[] for _ in range(num_buffers)]
        self._shards: list[list[tuple[int, int]]] = []
        for lo, hi in self.env_groups:
            parts = max(1, min(self.num_threads, hi - lo))
            self._shards.append([(lo + a, lo + b) for a, b in split_evenly(hi - lo, parts)])
        if self.num_threads:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix=f"shoal-{name}")

    # ---- per-row bookkeeping used by subclasses ----

    def _finish_episode(self, row: int, info: Any) -> None:
        """Adds the episode that just ended on ``row`` to the stats and restarts its counters."""
        ret = self._ep_return[row]
        score = ret
        if isinstance(info, dict):
            value = info.get("score")
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                score = float(value)
        self._done_return[row] += ret
        self._done_length[row] += self._ep_length[row]
        self._done_score[row] += score
        self._done_n[row] += 1
        self._ep_return[row] = 0.0
        self._ep_length[row] = 0

    # ---- backend hooks ----

    def _clear_for_reset(self) -> None:
        """Zeroes the step results and the running episode stats of every row."""
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self.final_observations[...] = 0
        for row in range(self.num_agents):
            self._ep_return[row] = 0.0
            self._ep_length[row] = 0

    def _reset(self, seed: int) -> None:
        self._clear_for_reset()
        for i in range(self.num_envs):
            # Env i of the whole vector gets seed + i, whichever worker or thread holds it.
            self._reset_env(i, seed + self.env_offset + i)

    def _send(self, group: int) -> None:
        lo, hi = self.env_groups[group]
        rows = slice(lo * self.agents_per_env, hi * self.agents_per_env)
        try:
            # Rejected actions raise here, before any env of the group moves.
            self.act_layout.check(self.actions[rows], self._live_rows(rows))
        except ValueError:
            self._stepping[group] = False
            raise
        if self._pool is None:
            try:
                self._step_envs(lo, hi)
            finally:
                self._stepping[group] = False
            return
        self._futures[group] = [self._pool.submit(self._step_envs, a, b)
                                for a, b in self._shards[group]]

    def _recv(self, group: int) -> None:
        futures, self._futures[group] = self._futures[group], []
        error = None
        for fut in futures:
            exc = fut.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            self._stepping[group] = False
            raise error

    def _live_rows(self, rows: slice) -> np.ndarray | None:
        """Rows whose actions are used (None: all); PettingZoo ignores absent agents' actions."""
        return None

    def _log(self, group: int) -> dict[str, float]:
        lo, hi = self.env_groups[group]
        return self._log_rows(slice(lo * self.agents_per_env, hi * self.agents_per_env))

    def _log_env(self, index: int) -> dict[str, float]:
        return self._log_rows(slice(index * self.agents_per_env,
                                    (index + 1) * self.agents_per_env))

    def _log_rows(self, rows: slice) -> dict[str, float]:
        n = float(self._done_n[rows].sum())
        if n == 0:
            return {}
        out = {"episode_return": float(self._done_return[rows].sum()) / n,
               "episode_length": float(self._done_length[rows].sum()) / n,
               "score": float(self._done_score[rows].sum()) / n, "n": n}
        for arr in (self._done_return, self._done_length, self._done_score, self._done_n):
            arr[rows] = 0
        return out

    def _save_state(self) -> dict[str, np.ndarray]:
        """The envs pickled by value (cloudpickle) and the episode counters, as arrays.

        Envs that hold unpicklable resources (windows, sockets, simulator handles) raise
        NotImplementedError: such runs resume with fresh episodes instead of exactly.
        """
        import cloudpickle

        try:
            blob = cloudpickle.dumps({"envs": self.envs, "extra": self._extra_state()})
        except Exception as exc:
            raise NotImplementedError(
                f"{self.name}: its Python envs cannot be pickled for a snapshot "
                f"({type(exc).__name__}: {exc})") from exc
        return {"python.envs": np.frombuffer(blob, np.uint8).copy(),
                "python.spec": np.frombuffer(self._snapshot_spec().encode(), np.uint8).copy(),
                "python.episode": np.array([self._ep_return, self._ep_length], np.float64),
                "python.finished": np.stack([self._done_return, self._done_length,
                                             self._done_score, self._done_n])}

    def _load_state(self, state: dict[str, Any]) -> None:
        import pickle

        missing = [k for k in ("python.envs", "python.episode", "python.finished") if k not in state]
        if missing:
            raise ValueError(f"{self.name}: the snapshot has no {', '.join(missing)}: it was not "
                             f"saved from a Python-env vector")
        saved = np.asarray(state.get("python.spec", np.zeros(0, np.uint8)), np.uint8).tobytes().decode()
        if saved and saved != self._snapshot_spec():
            raise ValueError(f"the env snapshot was taken from other envs ({saved}) than these "
                             f"({self._snapshot_spec()}): make the vector with the same env")
        if not getattr(self, "_allow_pickle", False):
            raise PickledStateError(
                f"{self.name}: the env snapshot holds the Python envs pickled, and unpickling runs "
                f"whatever code the bytes name: it is loaded only with load_state(state, "
                f"allow_pickle=True) (`shoal train --resume RUN --trust-pickled-env-state`), for "
                f"snapshots you made or trust")
        data = pickle.loads(np.asarray(state["python.envs"], np.uint8).tobytes())
        envs = data["envs"]
        if len(envs) != self.num_envs:
            raise ValueError(f"{self.name}: the snapshot holds {len(envs)} envs but this vector has "
                             f"{self.num_envs}: make it with the same num_envs")
        old, self.envs = self.envs, list(envs)
        for env in old:
            try:
                env.close()
            except Exception:
                pass
        self._restore_extra_state(data["extra"])
        episode = np.asarray(state["python.episode"])
        self._ep_return = [float(x) for x in episode[0]]
        self._ep_length = [int(x) for x in episode[1]]
        finished = np.asarray(state["python.finished"])
        self._done_return[:], self._done_length[:], self._done_score[:], self._done_n[:] = finished

    def _snapshot_spec(self) -> str:
        return (f"{self.name} obs={self.structured_observation_space} "
                f"act={self.structured_action_space} agents={self.agents_per_env}")

    def _extra_state(self) -> Any:
        """Subclass state beyond the envs and counters (picklable)."""
        return None

    def _restore_extra_state(self, extra: Any) -> None:
        pass

    def _render(self, index: int, mode: str) -> Any:
        group = next(g for g, (lo, hi) in enumerate(self.env_groups) if lo <= index < hi)
        if self._stepping[group]:
            self._recv(group)  # show the finished step, not one in progress
            self._stepping[group] = False
        return self._render_env(index, mode)

    def _close(self) -> None:
        try:
            if self._pool is not None:
                for g in range(self.num_buffers):
                    for fut in self._futures[g]:
                        fut.exception()
                    self._futures[g] = []
                self._pool.shutdown(wait=True)
                self._pool = None
        finally:
            for i in range(len(self.envs)):
                try:
                    self._close_env(i)
                except Exception:
                    traceback.print_exc()

    # ---- what subclasses implement ----

    def _reset_env(self, index: int, seed: int) -> None:
        raise NotImplementedError

    def _step_envs(self, lo: int, hi: int) -> None:
        raise NotImplementedError

    def _render_env(self, index: int, mode: str) -> Any:
        """Env ``index``'s own frame when it was made with that render mode; else, for "ansi",
        a text view of its rows."""
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

    def _close_env(self, index: int) -> None:
        self.envs[index].close()

    def _text_frame(self, index: int, extra: str = "") -> str:
        """A text picture for envs without an ``ansi`` render mode: what the policy sees."""
        a = self.agents_per_env
        rows = range(index * a, (index + 1) * a)
        lines = [f"{self.name} env {index + self.env_offset}{extra}"]
        with np.printoptions(precision=4, suppress=True, threshold=64, linewidth=100):
            for r in rows:
                mark = "" if self.masks[r] else " (absent)"
                lines.append(f"agent row {r}{mark}: obs {self.observations[r]}  "
                             f"episode return {self._ep_return[r]:.4g}, length {self._ep_length[r]}")
        return "\n".join(lines)
