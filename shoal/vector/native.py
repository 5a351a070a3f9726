"""The ``serial`` and ``threads`` backends for shoal's C envs.

``serial`` steps a whole group in one C call on the calling thread (GIL released). ``threads``
hands each group to a pool of C worker threads split into shards and returns at once, so the
caller's policy runs on one group while the other steps.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from ..envs.spec import EnvSpec
from .base import (Buffers, SnapshotParamsError, VecEnv, action_nvec, allocate_buffers,
                   buffer_layout, check_memory)


def spec_mask_width(spec: EnvSpec, act_space: Any) -> int:
    """Action-mask entries per agent of a C env: one per logit (sum(nvec)) when its spec
    declares ``action_mask``, else 0."""
    if not spec.action_mask:
        return 0
    nvec = action_nvec(act_space)
    if nvec is None:
        raise ValueError(f"{spec.name}: action_mask=True needs a discrete action space, "
                         f"got {act_space}")
    return int(sum(nvec))


class NativeVecEnv(VecEnv):
    """A vector of one C env type over buffers it owns (or is given, for process workers)."""

    def __init__(self, spec: EnvSpec, params: Mapping[str, Any], num_envs: int, *,
                 seed: int | None = None, num_threads: int = 0, num_buffers: int = 1,
                 buffers: Buffers | None = None, env_offset: int = 0) -> None:
        obs_space = spec.observation_space(params)
        act_space = spec.action_space(params)
        agents = int(spec.agents_per_env(params))
        self._c = spec.load()
        self._h = None
        max_groups = int(self._c.MAX_SEND_GROUPS)
        if num_threads and num_buffers > max_groups:
            raise ValueError(f"num_buffers={num_buffers} is more than the threads backend steps at "
                             f"once ({max_groups}): use num_buffers <= {max_groups} (2 is typical)")
        mask_width = spec_mask_width(spec, act_space)
        if int(self._c.ACTION_MASK) != bool(spec.action_mask):
            raise RuntimeError(f"env spec and C code disagree on action masks: the spec of "
                               f"{spec.name} says action_mask={spec.action_mask} but its binding "
                               f"{'defines' if int(self._c.ACTION_MASK) else 'does not define'} "
                               f"ACTION_MASK")
        if buffers is None:
            layout = buffer_layout(num_envs * agents, obs_space, act_space, spec.action_dtype,
                                   mask_width)
            # The C envs' own memory (structs and the arrays they allocate) counts too: one env's
            # snapshot holds exactly that, measured on a throwaway env before the real ones.
            check_memory(layout, name=spec.name, num_envs=num_envs)
            per_env = self._env_bytes(spec, params) if num_envs > 1 else 0
            buffers = allocate_buffers(layout, name=spec.name, num_envs=num_envs,
                                       extra_bytes=per_env * num_envs)
        self._setup(name=spec.name, obs_space=obs_space, act_space=act_space, num_envs=num_envs,
                    agents_per_env=agents, num_buffers=num_buffers, seed=seed, buffers=buffers)
        self.params = dict(params)
        self.num_threads = num_threads
        self.env_offset = env_offset
        obs_size = int(np.prod(obs_space.shape))
        act_size = max(1, int(np.prod(self.actions.shape[1:])))
        self._h = self._c.vec_init(
            buffers.observations, buffers.actions, buffers.rewards,
            buffers.terminals.view(np.uint8), buffers.truncations.view(np.uint8),
            buffers.final_observations, num_envs, env_offset, num_threads, agents, obs_size,
            act_size, action_nvec(act_space), dict(params),
            buffers.action_masks if mask_width else None)
        self._closed = False

    @staticmethod
    def _env_bytes(spec: EnvSpec, params: Mapping[str, Any]) -> int:
        """Memory one C env of ``spec`` with ``params`` holds besides its buffer rows."""
        probe = NativeVecEnv(spec, params, 1)
        try:
            return len(probe._c.vec_save(probe._h))
        finally:
            probe.close()

    def state(self, index: int = 0) -> dict[str, Any]:
        """Internal state of env ``index`` as a dict (what the env exposes, for tests/debugging)."""
        self._check_open()
        self._settle(index)
        return self._c.vec_state(self._h, index)

    def _settle(self, index: int) -> None:
        """Waits for the group of env ``index`` if it is stepping: its worker threads are writing
        that env, so reading it now would show a half-done step."""
        for group, (lo, hi) in enumerate(self.env_groups):
            if lo <= index < hi and self._stepping[group]:
                self._recv(group)
                self._stepping[group] = False

    def _reset(self, seed: int) -> None:
        self._c.vec_reset(self._h, seed, self.env_offset)

    def _step_all(self) -> None:
        # One call over every env: with threads the caller steps a shard itself (vec_step).
        self._c.vec_step(self._h, 0, self.num_envs)

    def _send(self, group: int) -> None:
        lo, hi = self.env_groups[group]
        if self.num_threads:
            try:
                self._c.vec_send(self._h, group, lo, hi)
            except Exception:
                self._stepping[group] = False
                raise
        else:
            try:
                self._c.vec_step(self._h, lo, hi)
            finally:
                self._stepping[group] = False

    def _recv(self, group: int) -> None:
        if self.num_threads:
            self._c.vec_recv(self._h, group)

    def _log(self, group: int) -> dict[str, float]:
        lo, hi = self.env_groups[group]
        return self._c.vec_log(self._h, lo, hi)

    def _log_env(self, index: int) -> dict[str, float]:
        return self._c.vec_log(self._h, index, index + 1)

    def _render(self, index: int, mode: str) -> Any:
        self._settle(index)
        if mode == "ansi":
            return self._c.vec_render_text(self._h, index)
        data, h, w = self._c.vec_render_rgb(self._h, index)
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3).copy()

    def _save_state(self) -> dict[str, np.ndarray]:
        params = json.dumps({"env": self.name, **self.params}, sort_keys=True).encode()
        return {"c_envs": np.frombuffer(self._c.vec_save(self._h), dtype=np.uint8).copy(),
                "c_params": np.frombuffer(params, dtype=np.uint8).copy()}

    def _load_state(self, state: dict[str, Any]) -> None:
        if "c_envs" not in state or "c_params" not in state:
            raise ValueError("not a snapshot of C envs (no 'c_envs'/'c_params' entries)")
        saved = json.loads(np.asarray(state["c_params"], dtype=np.uint8).tobytes())
        mine = {"env": self.name, **self.params}
        if saved != mine:
            diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine)
                    if saved.get(k) != mine.get(k)}
            raise SnapshotParamsError(diff)
        try:
            self._c.vec_load(self._h, np.ascontiguousarray(state["c_envs"], dtype=np.uint8))
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    def _close(self) -> None:
        if self._h is not None:
            self._drain()
            self._c.vec_close(self._h)
            self._h = None
