"""The vector-env interface every backend shares, and the buffers it owns.

A vector env holds ``num_agents`` rows in persistent numpy buffers (observations, actions,
rewards, terminals, truncations, final_observations, masks, action_masks). ``step`` and ``recv`` return views
of them, never copies: read or copy what you need before the next step.

Double buffering: with ``num_buffers=2`` the envs form two groups. ``recv()`` hands back the next
group that is ready, ``send(actions)`` starts that group stepping, and while it steps the caller
runs its policy on the other group::

    env.reset(seed=0)
    while True:
        obs, rewards, terminals, truncations, infos, rows = env.recv()
        env.send(policy(obs))          # rows: the slice of agent rows this group covers

``step(actions)`` is the synchronous form over all groups at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gymnasium import spaces


class PickledStateError(ValueError):
    """An env snapshot holds pickled Python objects and ``load_state`` was not allowed to
    unpickle them (unpickling runs whatever code the bytes name)."""


class SnapshotParamsError(ValueError):
    """An env snapshot was taken with other env parameters than this env's (raised before
    anything changes): the snapshot cannot continue this env's episodes. ``diff`` maps each
    parameter that differs to (saved, here); ``what`` says so in words, without the fix."""

    def __init__(self, diff: dict) -> None:
        self.diff = diff
        self.what = f"env snapshot was taken with other env parameters (saved, here): {diff}"
        super().__init__(f"{self.what}; make the env with the saved parameters")


@dataclass
class Buffers:
    """The arrays a vector env and its envs share: one row per agent."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    final_observations: np.ndarray
    masks: np.ndarray
    #: bool [agents, width]: True for each valid action (one entry per logit); width 0 for envs
    #: that provide no action masks (shoal.trainer.action_masks)
    action_masks: np.ndarray

    FIELDS = ("observations", "actions", "rewards", "terminals", "truncations",
              "final_observations", "masks", "action_masks")

    def rows(self, lo: int, hi: int) -> "Buffers":
        """Views of rows [lo, hi) of every buffer."""
        return Buffers(*(getattr(self, f)[lo:hi] for f in self.FIELDS))


def buffer_layout(num_agents: int, obs_space: spaces.Space, act_space: spaces.Space,
                  act_dtype: Any, action_mask_width: int = 0
                  ) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape, dtype) of each buffer, in Buffers.FIELDS order; ``action_mask_width``:
    action-mask entries per agent (0: the env has none)."""
    obs_shape = (num_agents, *obs_space.shape)
    act_shape = (num_agents, *action_shape(act_space))
    return [
        ("observations", obs_shape, np.dtype(obs_space.dtype)),
        ("actions", act_shape, np.dtype(act_dtype)),
        ("rewards", (num_agents,), np.dtype(np.float32)),
        ("terminals", (num_agents,), np.dtype(np.bool_)),
        ("truncations", (num_agents,), np.dtype(np.bool_)),
        ("final_observations", obs_shape, np.dtype(obs_space.dtype)),
        ("masks", (num_agents,), np.dtype(np.bool_)),
        ("action_masks", (num_agents, int(action_mask_width)), np.dtype(np.bool_)),
    ]


#: rows a vector env may hold: the C envs index rows with a 32-bit int
MAX_AGENT_ROWS = 2**31 - 1


def layout_bytes(layout: list[tuple[str, tuple[int, ...], np.dtype]]) -> int:
    """Bytes the buffers of ``layout`` take."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
               for _, shape, dtype in layout)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smaller of the system's available memory and
    what its cgroup (container) limit leaves; None where neither can be read."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if cap != "max":
            limits.append(max(0, int(cap) - used))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_memory(layout: list[tuple[str, tuple[int, ...], np.dtype]], *, name: str,
                 num_envs: int, extra_bytes: int = 0) -> None:
    """Refuses, before anything is allocated, a vector env too large for this machine.

    ``extra_bytes`` is memory beyond the buffers (the C env structs and their arrays). Allocating
    first and failing later is worse than refusing here: zero-filled numpy arrays are mapped
    lazily, so a too-large vector env would be killed by the OOM killer mid-run instead.
    """
    rows = layout[0][1][0] if layout and layout[0][1] else 0
    if rows > MAX_AGENT_ROWS:
        raise ValueError(f"{name}: num_envs={num_envs} gives {rows} agent rows, more than the "
                         f"{MAX_AGENT_ROWS} a vector env can index: use fewer envs")
    need = layout_bytes(layout) + int(extra_bytes)
    limit = available_memory()
    if limit is not None and need > limit:
        per_env = need / max(1, num_envs)
        raise ValueError(
            f"{name}: num_envs={num_envs} needs about {need / 2**30:.2f} GiB "
            f"({per_env:,.0f} bytes per env for buffers and env state) but only "
            f"{limit / 2**30:.2f} GiB of memory is available: use at most about "
            f"{max(1, int(limit // max(per_env, 1)))} envs")


def allocate_buffers(layout: list[tuple[str, tuple[int, ...], np.dtype]],
                     alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] = np.zeros,
                     *, name: str = "env", num_envs: int | None = None,
                     extra_bytes: int = 0) -> Buffers:
    """The buffers of ``layout``, after :func:`check_memory` has found room for them."""
    rows = layout[0][1][0] if layout and layout[0][1] else 0
    check_memory(layout, name=name, num_envs=rows if num_envs is None else num_envs,
                 extra_bytes=extra_bytes)
    arrays = {name: alloc(shape, dtype) for name, shape, dtype in layout}
    arrays["masks"][:] = True
    arrays["action_masks"][:] = True
    return Buffers(**arrays)


def action_shape(space: spaces.Space) -> tuple[int, ...]:
    """Per-agent shape of the action buffer for a space: () for Discrete, (k,) for MultiDiscrete."""
    if isinstance(space, spaces.Discrete):
        return ()
    if isinstance(space, (spaces.MultiDiscrete, spaces.Box, spaces.MultiBinary)):
        return tuple(space.shape)
    raise TypeError(f"unsupported action space {space}: use Discrete, MultiDiscrete or Box")


def action_nvec(space: spaces.Space) -> tuple[int, ...] | None:
    """One n per action dimension for discrete spaces, None for continuous ones."""
    if isinstance(space, spaces.Discrete):
        return (int(space.n),)
    if isinstance(space, spaces.MultiDiscrete):
        return tuple(int(n) for n in np.asarray(space.nvec).ravel())
    if isinstance(space, spaces.MultiBinary):
        return (2,) * int(np.prod(space.shape))
    return None


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges that cover range(n) in ``parts`` contiguous pieces of near-equal size."""
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


class VecEnv:
    """Base class: buffers, action checks and the send/recv state machine.

    Backends implement ``_reset(seed)``, ``_send(group)``, ``_recv(group)``, ``_log(group)``
    (returns episode means with their count ``n``), ``_render(index, mode)`` and ``_close()``.
    """

    single_observation_space: spaces.Space
    single_action_space: spaces.Space
    #: whether step()/send() range-check actions in Python before any env steps (set by backends
    #: whose envs would otherwise reject a batch after part of it has stepped)
    check_actions_before_send: bool = False

    def _setup(self, *, name: str, obs_space: spaces.Space, act_space: spaces.Space,
               num_envs: int, agents_per_env: int, num_buffers: int, seed: int | None,
               buffers: Buffers) -> None:
        if num_buffers < 1 or num_envs % num_buffers:
            raise ValueError(
                f"num_envs={num_envs} must be a multiple of num_buffers={num_buffers}: "
                f"each buffer (group of envs that step together) gets num_envs/num_buffers envs"
            )
        self.name = name
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.num_envs = num_envs
        self.agents_per_env = agents_per_env
        self.num_agents = num_envs * agents_per_env
        self.num_buffers = num_buffers
        self.buffers = buffers
        for f in Buffers.FIELDS:
            setattr(self, f, getattr(buffers, f))
        self.seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
        self._resets = 0
        self.env_groups = split_evenly(num_envs, num_buffers)
        self.agent_groups = [slice(lo * agents_per_env, hi * agents_per_env) for lo, hi in self.env_groups]
        self._act_shape = action_shape(act_space)
        nvec = action_nvec(act_space)
        self._act_discrete = nvec is not None
        self._act_nvec = None if nvec is None else np.array(nvec, dtype=np.int64)
        self._nvec_as: dict[np.dtype, np.ndarray] = {}   # _act_nvec cast per actions dtype
        # Persistent results, one per group: recv() returns the same tuple of views every time.
        self._results = []
        for rows in self.agent_groups:
            infos = {"final_observation": self.final_observations[rows], "mask": self.masks[rows]}
            self._results.append((self.observations[rows], self.rewards[rows], self.terminals[rows],
                                  self.truncations[rows], infos, rows))
        self._full_infos = {"final_observation": self.final_observations, "mask": self.masks}
        self._stepping = [False] * num_buffers
        self._next = 0          # next group recv() hands out
        self._held = None       # group handed out by recv() and awaiting send()
        self._ready = False
        self._closed = False

    # ---- public API ----

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Resets every env; ``seed=None`` continues from the seed given to make()."""
        self._check_open()
        self._drain()
        if seed is None:
            seed = self.seed + self._resets
        self._resets += 1
        self._reset(int(seed) % (2**64))
        self._next, self._held, self._ready = 0, None, True
        return self.observations, self._full_infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Steps every env with ``actions`` (one row per agent); returns views of the buffers."""
        self._check_ready()
        if self._held is not None or any(self._stepping):
            raise RuntimeError("step() mixed with send()/recv(): finish the recv()/send() cycle first")
        self._put_actions(actions, slice(0, self.num_agents))
        self._step_all()
        return self.observations, self.rewards, self.terminals, self.truncations, self._full_infos

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict, slice]:
        """Waits for the next group: (obs, rewards, terminals, truncations, infos, agent_rows)."""
        self._check_ready()
        if self._held is not None:
            raise RuntimeError("recv() called twice: send() actions for the group it returned first")
        g = self._next
        if self._stepping[g]:
            self._recv(g)
            self._stepping[g] = False
        self._held = g
        self._next = (g + 1) % self.num_buffers
        return self._results[g]

    def send(self, actions: Any) -> None:
        """Starts the group last returned by recv() stepping with ``actions`` (its rows only)."""
        self._check_ready()
        g = self._held
        if g is None:
            raise RuntimeError("send() without recv(): call recv() to get the group to act on")
        self._put_actions(actions, self.agent_groups[g])
        self._held = None
        self._stepping[g] = True
        self._send(g)

    def log(self) -> dict[str, float]:
        """Means of the episode stats finished since the last call (``n`` = episodes); {} if none."""
        self._check_open()
        total: dict[str, float] = {}
        n_total = 0.0
        for g in range(self.num_buffers):
            if self._stepping[g]:
                continue  # its envs are being written; their episodes are counted next call
            stats = self._log(g)
            n = stats.pop("n", 0.0)
            if n <= 0:
                continue
            for k, v in stats.items():
                total[k] = total.get(k, 0.0) + v * n
            n_total += n
        if n_total == 0:
            return {}
        out = {k: v / n_total for k, v in total.items()}
        out["n"] = n_total
        return out

    def log_env(self, index: int) -> dict[str, float]:
        """As :meth:`log`, for env ``index`` alone: the means of its episodes finished since they
        were last reported (by this or by :meth:`log`), with their count ``n``; ``{}`` if none.
        Used where each env's episodes count separately (``shoal eval``). Not while the env's
        group is stepping."""
        self._check_open()
        if not 0 <= int(index) < self.num_envs:
            raise IndexError(f"env index {index} out of range [0, {self.num_envs})")
        group = next(g for g, (lo, hi) in enumerate(self.env_groups) if lo <= index < hi)
        if self._stepping[group]:
            raise RuntimeError(f"log_env({index}) while its group is stepping: recv() it first")
        return self._log_env(int(index))

    def save_state(self) -> dict[str, np.ndarray]:
        """A snapshot of every env and buffer, for exact resume (arrays only: checkpoint-safe).

        Groups still stepping are waited for first (their results stay in the buffers for the
        next recv(), here and after load_state()); a group handed out by recv() and not yet
        sent cannot be snapshotted, since its actions are not known.
        """
        self._check_ready()
        if self._held is not None:
            raise RuntimeError("save_state() between recv() and send(): send() the actions of "
                               "the group recv() returned first")
        self._drain()
        state = {f"buffer.{f}": getattr(self, f).copy() for f in Buffers.FIELDS}
        state.update(self._save_state())
        state["resets"] = np.array(self._resets, dtype=np.int64)
        state["seed"] = np.array(self.seed, dtype=np.uint64)
        state["next_group"] = np.array(self._next, dtype=np.int64)
        return state

    def load_state(self, state: dict[str, Any], *, allow_pickle: bool = False) -> None:
        """Restores :meth:`save_state` output into envs made with the same name, count and params.

        C envs' snapshots are plain arrays. Python (Gymnasium/PettingZoo) envs' snapshots hold the
        envs pickled: unpickling runs whatever code the bytes name, so they are loaded only with
        ``allow_pickle=True`` (for snapshots this process made, or files you trust); otherwise
        :class:`PickledStateError` is raised before anything changes.
        """
        self._check_open()
        self._allow_pickle = bool(allow_pickle)
        self._drain()
        if "buffer.action_masks" not in state and self.action_masks.shape[1] == 0:
            # snapshots from before action masks existed: an env without them has nothing there
            state = {**state, "buffer.action_masks": self.action_masks}
        missing = [f for f in Buffers.FIELDS if f"buffer.{f}" not in state]
        if missing:
            raise ValueError(f"not an env snapshot: missing {', '.join(missing)}")
        for f in Buffers.FIELDS:
            src, dst = np.asarray(state[f"buffer.{f}"]), getattr(self, f)
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(f"env snapshot's {f} is {src.dtype}{list(src.shape)} but this env "
                                 f"has {dst.dtype}{list(dst.shape)}: make the env with the same "
                                 f"num_envs and parameters as the run that saved it")
        try:
            self._load_state(state)
        finally:
            self._allow_pickle = False
        for f in Buffers.FIELDS:
            getattr(self, f)[...] = np.asarray(state[f"buffer.{f}"])
        self._resets = int(state["resets"])
        self.seed = int(state["seed"])
        self._next = int(state.get("next_group", 0)) % self.num_buffers
        self._held, self._ready = None, True

    def render(self, mode: str = "rgb_array", index: int = 0) -> Any:
        """Env ``index`` as an RGB frame (``mode="rgb_array"``, HxWx3 uint8) or text (``"ansi"``)."""
        self._check_open()
        if mode not in ("rgb_array", "ansi"):
            raise ValueError(f"render mode must be 'rgb_array' or 'ansi', got {mode!r}")
        if not 0 <= index < self.num_envs:
            raise IndexError(f"env index {index} is outside [0, {self.num_envs})")
        return self._render(index, mode)

    def close(self) -> None:
        """Stops workers and frees the envs; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def __enter__(self) -> "VecEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, num_envs={self.num_envs}, "
                f"num_agents={self.num_agents}, obs={self.single_observation_space}, "
                f"act={self.single_action_space})")

    # ---- helpers ----

    def _check_open(self) -> None:
        if getattr(self, "_closed", True):
            raise RuntimeError("this env is closed; make a new one with shoal.make()")

    def _check_ready(self) -> None:
        self._check_open()
        if not self._ready:
            raise RuntimeError("call reset() before step()/recv()/send()")

    def _drain(self) -> None:
        for g in range(self.num_buffers):
            if self._stepping[g]:
                self._recv(g)
                self._stepping[g] = False
        self._held = None

    def _put_actions(self, actions: Any, rows: slice) -> None:
        dest = self.actions[rows]
        if isinstance(actions, np.ndarray) and actions.ctypes.data == dest.ctypes.data \
                and actions.shape == dest.shape and actions.dtype == dest.dtype:
            # the caller wrote into env.actions directly: the values still need the same check
            if self.check_actions_before_send:
                self._check_action_values(dest, rows.start)
            return
        a = np.asarray(actions)
        n = rows.stop - rows.start
        want = (n, *self._act_shape)
        if a.shape != want:
            if a.size == int(np.prod(want)) and (self._act_shape == (1,) or a.shape == (n,)):
                a = a.reshape(want)
            else:
                raise ValueError(
                    f"actions have shape {a.shape} but this env needs {want}: one row per agent "
                    f"({n} agents) of the action space {self.single_action_space}"
                )
        if self._act_discrete:
            if a.dtype.kind not in "iub":
                raise TypeError(
                    f"actions have dtype {a.dtype} but {self.single_action_space} needs integers: "
                    f"pass actions.astype(np.int32) (fractional or NaN values are not actions)"
                )
            if a.dtype != dest.dtype and dest.dtype.kind in "iu" \
                    and not np.can_cast(a.dtype, dest.dtype, "safe"):
                # int64 / uint32 / uint64 into int32: the copy below would wrap 2**32 to 0, so
                # the range check must see the values before they are narrowed. (Into a float
                # buffer the conversion is monotonic: out-of-range stays out of range for the
                # binding's check.)
                self._check_action_values(a, rows.start)
        elif a.dtype.kind not in "fiu":
            raise TypeError(
                f"actions have dtype {a.dtype} but {self.single_action_space} needs floats: "
                f"pass actions.astype(np.float32)"
            )
        np.copyto(dest, a, casting="unsafe")
        if self.check_actions_before_send:
            self._check_action_values(dest, rows.start)

    def _check_action_values(self, acts: np.ndarray, first_row: int) -> None:
        """Range/finiteness check in Python, for backends whose envs check too late to refuse
        the whole batch (a process worker has stepped its shard before another rejects)."""
        flat = acts.reshape(len(acts), -1)
        if self._act_nvec is not None:
            # Viewed as unsigned, a negative action is huge, so one comparison against n finds
            # both ends of [0, n) (one pass, one temporary: this runs on every send). n is taken
            # in that unsigned dtype: comparing uint64 with int64 would go through float64.
            unsigned = flat.view(flat.dtype.str.replace("i", "u")) if flat.dtype.kind == "i" else flat
            limits = self._nvec_as.get(unsigned.dtype)
            if limits is None:
                limits = self._nvec_as[unsigned.dtype] = self._act_nvec.astype(unsigned.dtype)
            if flat.dtype.kind == "f":   # a float buffer of discrete actions (breakout)
                bad = ~((flat >= 0) & (flat < limits) & (np.floor(flat) == flat))   # NaN too
            else:
                bad = unsigned >= limits
            if bad.any():
                row, dim = np.argwhere(bad)[0]
                raise ValueError(
                    f"action {flat[row, dim]} for agent {first_row + row} (dimension {dim}) is outside "
                    f"the action space: it must be an integer in [0, {self._act_nvec[dim]})")
        else:
            bad = ~np.isfinite(flat)
            if bad.any():
                row, dim = np.argwhere(bad)[0]
                raise ValueError(f"action for agent {first_row + row} (dimension {dim}) is not "
                                 f"finite (NaN or inf): check the policy's outputs")

    # ---- backend hooks ----

    def _step_all(self) -> None:
        """Steps every env and waits; backends with a faster synchronous path override it."""
        for g in range(self.num_buffers):
            self._stepping[g] = True
            self._send(g)
        for g in range(self.num_buffers):
            self._recv(g)
            self._stepping[g] = False

    def _reset(self, seed: int) -> None:
        raise NotImplementedError

    def _send(self, group: int) -> None:
        raise NotImplementedError

    def _recv(self, group: int) -> None:
        raise NotImplementedError

    def _log(self, group: int) -> dict[str, float]:
        raise NotImplementedError

    def _render(self, index: int, mode: str) -> Any:
        raise NotImplementedError

    def _log_env(self, index: int) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} cannot report one env's episodes")

    def _save_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} cannot snapshot its envs")

    def _load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot snapshot its envs")

    def _close(self) -> None:
        raise NotImplementedError
