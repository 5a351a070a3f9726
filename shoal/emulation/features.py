"""Float features from structured observations, for policies (needs torch).

A vector env of a Dict/Tuple-observation env hands the policy flat buffer rows
(:mod:`shoal.emulation.spaces`). :class:`StructuredObservationPreprocessor` turns a batch of rows
back into the leaves (:func:`~shoal.emulation.spaces.unflatten`, views where possible) and each
leaf into floats, concatenated into one feature vector per row:

- ``Discrete(n)``: one-hot of width ``n``;
- ``MultiDiscrete``: one-hot per element when every ``nvec`` entry is at most ``max_levels``,
  else each element scaled to about [-1, 1];
- ``MultiBinary``: 0/1 as floats;
- ``Box``: each element scaled by ``1 / max(|low|, |high|)`` where that is finite and positive.

It has the interface of the trainer's ``ObservationPreprocessor``: ``obs_shape`` (the row shape a
policy receives), ``levels`` (0: the output is already flat), ``out_shape``/``out_size`` and
``forward(rows) -> [N, out_size]``. The trainer's built-in policies use it for mixed-dtype
(byte-row) observations (``shoal.trainer.policies.make_policy`` / ``make_preprocessor``).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from .spaces import Leaf, observation_layout, unflatten

__all__ = ["StructuredObservationPreprocessor", "is_structured"]


def is_structured(space: spaces.Space) -> bool:
    """True for Dict and Tuple spaces (the ones stored as flattened rows)."""
    return isinstance(space, (spaces.Dict, spaces.Tuple))


def _flat_values(value, space):
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            yield from _flat_values(value[key], sub)
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from _flat_values(value[i], sub)
    else:
        yield value


class StructuredObservationPreprocessor(nn.Module):
    """Flat buffer rows of ``space`` -> ``[N, out_size]`` float features (see the module doc)."""

    def __init__(self, space: spaces.Space, max_levels: int = 32) -> None:
        super().__init__()
        self.space = space
        self.layout = observation_layout(space)
        self.obs_shape: tuple[int, ...] = self.layout.row_shape
        self.levels = 0
        self._kinds: list[tuple[str, int]] = []   # (how, width) per leaf, in leaf order
        width = 0
        for k, leaf in enumerate(self.layout.leaves):
            how, size, offset, scale = self._plan(leaf, max_levels)
            self._kinds.append((how, size))
            self.register_buffer(f"offset{k}", torch.as_tensor(np.array(offset), dtype=torch.long),
                                 persistent=False)
            self.register_buffer(f"scale{k}", torch.as_tensor(np.array(scale), dtype=torch.float32),
                                 persistent=False)
            width += size
        self._width = width

    @staticmethod
    def _plan(leaf: Leaf, max_levels: int) -> tuple[str, int, np.ndarray, np.ndarray]:
        space = leaf.space
        if isinstance(space, spaces.Discrete):
            return "onehot", int(space.n), np.asarray([int(space.start)]), np.ones(1)
        if isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).ravel()
            start = np.broadcast_to(np.asarray(space.start), space.nvec.shape).ravel()
            if int(nvec.max()) <= max_levels:
                return "multi_onehot", int(nvec.sum()), start, nvec.astype(np.float32)
            bound = np.maximum(np.abs(start), np.abs(start + nvec - 1)).astype(np.float64)
            return "scale", leaf.size, np.zeros(1), 1.0 / np.maximum(bound, 1.0)
        if isinstance(space, spaces.MultiBinary):
            return "scale", leaf.size, np.zeros(1), np.ones(leaf.size)
        low = np.broadcast_to(np.asarray(space.low, np.float64), leaf.shape).ravel()
        high = np.broadcast_to(np.asarray(space.high, np.float64), leaf.shape).ravel()
        bound = np.maximum(np.abs(low), np.abs(high))
        ok = np.isfinite(bound) & (bound > 0)
        return "scale", leaf.size, np.zeros(1), np.where(ok, 1.0 / np.where(ok, bound, 1.0), 1.0)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self._width,)

    @property
    def out_size(self) -> int:
        return self._width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = obs.shape[0]
        values = list(_flat_values(unflatten(obs, self.space), self.space))
        parts = []
        for k, (value, (how, size)) in enumerate(zip(values, self._kinds)):
            scale = getattr(self, f"scale{k}")
            if how == "onehot":
                index = value.reshape(n).long() - getattr(self, f"offset{k}")[0]
                parts.append(nn.functional.one_hot(index.clamp(0, size - 1), size).to(scale.dtype))
            elif how == "multi_onehot":
                index = value.reshape(n, -1).long() - getattr(self, f"offset{k}")
                nvec = scale.long()
                parts += [nn.functional.one_hot(index[:, j].clamp(0, int(nvec[j]) - 1),
                                                int(nvec[j])).to(scale.dtype)
                          for j in range(index.shape[1])]
            else:
                parts.append(value.reshape(n, -1).to(scale.dtype) * scale)
        return torch.cat(parts, dim=1)
