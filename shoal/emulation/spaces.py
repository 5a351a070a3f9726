"""Structured Gymnasium spaces in flat buffer rows, and back.

shoal's buffers hold one fixed-size row per agent. A Python env's observation may be a Dict, a
Tuple, or any nesting of them; this module lays its leaves out in one row and rebuilds them:

- a plain ``Box`` observation is stored as it is (its shape and dtype);
- a ``Discrete`` observation becomes a row of one integer;
- a structured observation whose leaves all share one dtype becomes a 1-D row of that dtype:
  the leaves, each flattened in C order, one after another in the space's order (a ``Dict``'s
  keys in the order ``space.spaces`` lists them, which Gymnasium sorts);
- leaves of different dtypes are stored as raw bytes (a ``uint8`` row). Leaves are placed by
  decreasing item size and the row is padded to a multiple of the largest one, so every leaf
  sits at an offset aligned for its dtype: :func:`unflatten` returns views, not copies, on
  numpy and on torch.

:func:`unflatten` turns a batch of rows back into the nested dicts/tuples of arrays (numpy or
torch, matching the input) with each leaf's dtype and shape: ``unflatten(flatten(x, s), s)`` is
``x`` exactly.

Actions go the other way: the trainer writes one flat row per agent and each env receives the
structured action (:class:`ActionLayout`). A flat action space is one of

- ``Discrete(n)`` for a ``Discrete`` action (a ``start`` offset is added back for the env);
- ``MultiDiscrete(nvec)`` for ``MultiDiscrete`` and ``MultiBinary`` actions, and for ``Dict`` /
  ``Tuple`` actions whose leaves are all discrete (one dimension per discrete choice, in leaf
  order);
- ``Box`` (float32) for a ``Box`` action, and for ``Dict``/``Tuple`` actions with any continuous
  leaf. Discrete leaves of such a hybrid action are dimensions with bounds ``[0, n-1]``; the env
  receives them rounded to the nearest integer and clipped into range. Continuous values are
  clipped to the Box's bounds, like shoal's C envs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from gymnasium import spaces

__all__ = ["ActionLayout", "Leaf", "ObservationLayout", "flatten", "flatten_action",
           "observation_layout", "action_layout", "unflatten", "unflatten_action"]

Path = tuple[Any, ...]


class UnsupportedSpaceError(TypeError):
    """A space shoal cannot lay out in a fixed-size buffer row."""


@dataclass(frozen=True)
class Leaf:
    """One array-valued piece of a structured space."""

    path: Path              # keys/indices from the root value down to this leaf
    space: spaces.Space
    shape: tuple[int, ...]  # shape of the leaf's value
    dtype: np.dtype         # dtype of the leaf's value
    low: np.ndarray         # bounds of each element, shape ``shape`` (for the flat Box)
    high: np.ndarray
    offset: int = 0         # where the leaf starts in the row: elements, or bytes for byte rows
    size: int = 0           # elements in the leaf

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def _describe_path(path: Path) -> str:
    return "".join(f"[{p!r}]" for p in path) or "the observation"


def _leaves(space: spaces.Space, path: Path = (), what: str = "observation") -> list[Leaf]:
    """The leaves of ``space`` in order, unplaced (offset 0)."""
    if isinstance(space, spaces.Dict):
        out: list[Leaf] = []
        for key, sub in space.spaces.items():
            out += _leaves(sub, path + (key,), what)
        return out
    if isinstance(space, spaces.Tuple):
        out = []
        for i, sub in enumerate(space.spaces):
            out += _leaves(sub, path + (i,), what)
        return out
    if isinstance(space, spaces.Box):
        shape = tuple(int(d) for d in space.shape)
        return [Leaf(path, space, shape, np.dtype(space.dtype), np.asarray(space.low),
                     np.asarray(space.high), size=int(np.prod(shape, dtype=np.int64)))]
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return [Leaf(path, space, (), np.dtype(space.dtype), np.asarray(start),
                     np.asarray(start + int(space.n) - 1), size=1)]
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        start = np.asarray(space.start)
        return [Leaf(path, space, tuple(nvec.shape), np.dtype(space.dtype), start,
                     start + nvec - 1, size=int(nvec.size))]
    if isinstance(space, spaces.MultiBinary):
        shape = tuple(int(d) for d in np.atleast_1d(space.shape))
        return [Leaf(path, space, shape, np.dtype(space.dtype), np.zeros(shape, np.int64),
                     np.ones(shape, np.int64), size=int(np.prod(shape, dtype=np.int64)))]
    kind = type(space).__name__
    raise UnsupportedSpaceError(
        f"the {what} space at {_describe_path(path)} is {kind} ({space}), which has no fixed size: "
        f"shoal stores each {what} in a fixed-size buffer row, so it supports Box, Discrete, "
        f"MultiDiscrete, MultiBinary, and Dict/Tuple nestings of them. Fix: wrap the env so this "
        f"part is one of those (e.g. pad a Sequence to a maximum length as a Box, encode Text "
        f"as a Box of character codes)"
    )


def _get(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


class ObservationLayout:
    """Where each leaf of an observation space lives in a buffer row.

    Attributes:
        space: the structured space.
        leaves: its leaves, placed (``offset``, ``size``).
        flat_space: the Box that describes a buffer row (what a vector env reports as its
            ``single_observation_space``).
        as_bytes: True when the leaves' dtypes differ and the row holds raw bytes.
        identity: True when a row is the observation itself (a plain Box).
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        leaves = _leaves(space)
        if not leaves:
            raise UnsupportedSpaceError(
                f"the observation space {space} has no leaves (an empty Dict or Tuple): give the "
                f"env at least one Box, Discrete, MultiDiscrete or MultiBinary observation"
            )
        self.identity = isinstance(space, spaces.Box)
        dtypes = {leaf.dtype for leaf in leaves}
        self.as_bytes = len(dtypes) > 1
        placed = []
        if self.as_bytes:
            # Widest dtypes first, so each leaf's byte offset is a multiple of its item size.
            order = sorted(range(len(leaves)), key=lambda i: -leaves[i].dtype.itemsize)
            offsets = {}
            offset = 0
            for i in order:
                offsets[i] = offset
                offset += leaves[i].nbytes
            align = max(d.itemsize for d in dtypes)
            self.row_size = offset + (-offset % align)
            self.dtype = np.dtype(np.uint8)
            placed = [_replace(leaf, offset=offsets[i]) for i, leaf in enumerate(leaves)]
            self.flat_space = spaces.Box(0, 255, (self.row_size,), np.uint8)
        else:
            self.dtype = leaves[0].dtype
            offset = 0
            for leaf in leaves:
                placed.append(_replace(leaf, offset=offset))
                offset += leaf.size
            self.row_size = offset
            if self.identity:
                self.flat_space = space
            else:
                low = np.concatenate([np.broadcast_to(lf.low, lf.shape).ravel() for lf in placed])
                high = np.concatenate([np.broadcast_to(lf.high, lf.shape).ravel() for lf in placed])
                self.flat_space = spaces.Box(low.astype(self.dtype), high.astype(self.dtype),
                                             (self.row_size,), self.dtype)
        self.leaves: list[Leaf] = placed

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.flat_space.shape)

    def leaf_views(self, row: np.ndarray) -> list[np.ndarray]:
        """Writable views of each leaf inside one buffer row (shape ``row_shape``)."""
        if self.identity:
            return [row]
        views = []
        for leaf in self.leaves:
            if self.as_bytes:
                piece = row[leaf.offset:leaf.offset + leaf.nbytes].view(leaf.dtype)
            else:
                piece = row[leaf.offset:leaf.offset + leaf.size]
            views.append(piece.reshape(leaf.shape))
        return views

    def writer(self, row: np.ndarray) -> "RowWriter":
        """A fast writer of observations into ``row`` (a view into a buffer)."""
        return RowWriter(self, row)

    def flatten(self, value: Any, out: np.ndarray | None = None) -> np.ndarray:
        """One observation as a buffer row (a new array unless ``out`` is given)."""
        if out is None:
            out = np.zeros(self.row_shape, self.dtype)
        RowWriter(self, out).write(value)
        return out

    def unflatten(self, flat: Any) -> Any:
        """Rows (numpy or torch, shape ``(*batch, *row_shape)``) as the structured value."""
        batch = tuple(flat.shape[:len(flat.shape) - len(self.row_shape)])
        if tuple(flat.shape[len(batch):]) != self.row_shape:
            raise ValueError(
                f"unflatten: rows have shape {tuple(flat.shape)} but {self.space} is stored in rows "
                f"of shape {self.row_shape} (with any batch dimensions in front)"
            )
        is_torch = not isinstance(flat, np.ndarray) and _is_torch(flat)
        if not is_torch:
            flat = np.asarray(flat)
            if flat.dtype != self.dtype:
                raise TypeError(f"unflatten: rows have dtype {flat.dtype} but {self.space} is "
                                f"stored as {self.dtype}")
        elif _torch_dtype(self.dtype) != flat.dtype:
            raise TypeError(f"unflatten: rows have dtype {flat.dtype} but {self.space} is stored "
                            f"as {self.dtype}")
        if self.identity:
            return flat
        values = []
        for leaf in self.leaves:
            if self.as_bytes:
                piece = flat[..., leaf.offset:leaf.offset + leaf.nbytes]
                piece = _view_dtype(piece, leaf.dtype, is_torch)
            else:
                piece = flat[..., leaf.offset:leaf.offset + leaf.size]
            values.append(piece.reshape(*batch, *leaf.shape))
        return _assemble(self.space, iter(values))


class RowWriter:
    """Writes structured observations into one buffer row through precomputed leaf views."""

    __slots__ = ("row", "_paths", "_views", "_single")

    def __init__(self, layout: ObservationLayout, row: np.ndarray) -> None:
        self.row = row
        self._views = layout.leaf_views(row)
        self._paths = [leaf.path for leaf in layout.leaves]
        self._single = len(self._views) == 1 and not self._paths[0]

    def write(self, value: Any) -> None:
        if self._single:
            self._views[0][...] = value
            return
        for path, view in zip(self._paths, self._views):
            view[...] = _get(value, path)

    def clear(self) -> None:
        self.row[...] = 0


def _replace(leaf: Leaf, **kw: Any) -> Leaf:
    from dataclasses import replace

    return replace(leaf, **kw)


def _assemble(space: spaces.Space, values: Any) -> Any:
    if isinstance(space, spaces.Dict):
        return {key: _assemble(sub, values) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_assemble(sub, values) for sub in space.spaces)
    return next(values)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return torch.from_numpy(np.zeros(0, dtype)).dtype


def _view_dtype(piece: Any, dtype: np.dtype, is_torch: bool) -> Any:
    if not is_torch:
        if not piece.flags.c_contiguous and piece.strides[-1] != 1:
            piece = np.ascontiguousarray(piece)
        return piece.view(dtype)
    tdtype = _torch_dtype(dtype)
    try:
        return piece.view(tdtype)
    except RuntimeError:
        # Unaligned or strided input (e.g. a gathered minibatch of a sliced tensor): copy once.
        return piece.contiguous().view(tdtype)


_LAYOUTS: dict[int, tuple[spaces.Space, Any]] = {}


def observation_layout(space: spaces.Space) -> ObservationLayout:
    """The (cached) layout of observation space ``space``."""
    hit = _LAYOUTS.get(id(space))
    if hit is not None and hit[0] is space and isinstance(hit[1], ObservationLayout):
        return hit[1]
    layout = ObservationLayout(space)
    if len(_LAYOUTS) > 256:
        _LAYOUTS.clear()
    _LAYOUTS[id(space)] = (space, layout)
    return layout


def flatten(value: Any, space: spaces.Space) -> np.ndarray:
    """One observation of ``space`` as its buffer row."""
    return observation_layout(space).flatten(value)


def unflatten(flat_batch: Any, space: spaces.Space) -> Any:
    """Buffer rows back into ``space``'s structure: nested dicts/tuples of arrays.

    ``flat_batch`` is a numpy array or torch tensor of rows (``(*batch, *row)``, e.g. the
    ``observations`` a vector env returns, or a minibatch of them); each leaf comes back as an
    array/tensor of shape ``(*batch, *leaf_shape)`` with the leaf's dtype, as views where the
    input allows. ``unflatten(flatten(x, space)[None], space)`` equals ``x`` with a batch of 1.
    """
    return observation_layout(space).unflatten(flat_batch)


# ---- actions ----

class ActionLayout:
    """How a flat action row maps to the structured action an env receives.

    Attributes:
        space: the env's action space.
        flat_space: ``Discrete``, ``MultiDiscrete`` or ``Box`` (see the module docstring).
        dtype: the action buffer's dtype (int32 for discrete, float32 for continuous).
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        try:
            leaves = _leaves(space, what="action")
        except UnsupportedSpaceError as exc:
            raise UnsupportedSpaceError(str(exc).replace("observation", "action")) from None
        if not leaves:
            raise UnsupportedSpaceError(f"the action space {space} has no leaves (an empty Dict or "
                                        f"Tuple): give the env at least one action")
        self.leaves = leaves
        self.kind = ("discrete" if isinstance(space, spaces.Discrete) else
                     "multi" if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)) else
                     "box" if isinstance(space, spaces.Box) else "structured")
        discrete = [not isinstance(leaf.space, spaces.Box) for leaf in leaves]
        self.all_discrete = all(discrete)
        if self.kind == "discrete":
            self.start = int(space.start)
            self.flat_space: spaces.Space = spaces.Discrete(int(space.n))
        elif self.kind == "multi":
            nvec = (np.asarray(space.nvec) if isinstance(space, spaces.MultiDiscrete)
                    else np.full(leaves[0].shape, 2))
            self.flat_space = spaces.MultiDiscrete(nvec.astype(np.int64))
            self.start = np.asarray(getattr(space, "start", 0))
        elif self.kind == "box":
            self.flat_space = spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32),
                                         space.shape, np.float32)
        else:
            lows, highs = [], []
            offset = 0
            placed = []
            for leaf in leaves:
                placed.append(_replace(leaf, offset=offset))
                offset += leaf.size
                lows.append(np.broadcast_to(leaf.low, leaf.shape).ravel())
                highs.append(np.broadcast_to(leaf.high, leaf.shape).ravel())
            self.leaves = placed
            low, high = np.concatenate(lows), np.concatenate(highs)
            if self.all_discrete:
                self.flat_space = spaces.MultiDiscrete((high - low + 1).astype(np.int64))
            else:
                # Discrete dimensions are stored 0-based in a hybrid Box too.
                lo = np.concatenate([np.zeros(lf.size) if d else np.broadcast_to(lf.low, lf.shape).ravel()
                                     for lf, d in zip(placed, discrete)])
                hi = np.concatenate([(np.broadcast_to(lf.high, lf.shape) - np.broadcast_to(lf.low, lf.shape)).ravel()
                                     if d else np.broadcast_to(lf.high, lf.shape).ravel()
                                     for lf, d in zip(placed, discrete)])
                self.flat_space = spaces.Box(lo.astype(np.float32), hi.astype(np.float32),
                                             (offset,), np.float32)
            self._discrete = discrete
        self.dtype = np.dtype(np.float32 if isinstance(self.flat_space, spaces.Box) else np.int32)
        if isinstance(self.flat_space, spaces.Box):
            self._low = np.asarray(self.flat_space.low, np.float32)
            self._high = np.asarray(self.flat_space.high, np.float32)
        else:
            self._n = (np.asarray(self.flat_space.nvec) if isinstance(self.flat_space, spaces.MultiDiscrete)
                       else np.asarray(int(self.flat_space.n)))

    # -- checks --

    def check(self, actions: np.ndarray, live: np.ndarray | None = None) -> None:
        """Raises ValueError (naming the row) for an action outside the space or not finite.

        ``actions`` holds rows of the action buffer; rows where ``live`` is False are ignored.
        Box actions are only checked for NaN/inf: values outside the bounds are clipped.
        """
        a = actions.reshape(len(actions), -1)
        if self.dtype.kind == "f":
            bad = ~np.isfinite(a)
        else:
            bad = (a < 0) | (a >= self._n.reshape(-1))
        if live is not None:
            bad &= live.reshape(-1, 1)
        if not bad.any():
            return
        row, dim = (int(i) for i in np.argwhere(bad)[0])
        if self.dtype.kind == "f":
            raise ValueError(f"action for agent {row} (dimension {dim}) is not finite (NaN or inf): "
                             f"check the policy's outputs")
        n = int(self._n.reshape(-1)[dim])
        raise ValueError(f"action {a[row, dim]} for agent {row} (dimension {dim}) is outside the "
                         f"action space: it must be an integer in [0, {n})")

    # -- decoding --

    def decode_rows(self, actions: np.ndarray) -> list[Any]:
        """The structured action for each row of ``actions`` (after :meth:`check`)."""
        if self.kind == "discrete":
            # numpy scalars of the space's dtype, like space.sample() returns
            out = actions.astype(self.space.dtype)
            return list(out + self.start if self.start else out)
        if self.kind == "multi":
            out = actions.astype(self.space.dtype) + self.start.astype(self.space.dtype) \
                if np.any(self.start) else actions.astype(self.space.dtype)
            return list(out.reshape(len(actions), *self.leaves[0].shape))
        if self.kind == "box":
            clipped = np.clip(actions, self._low, self._high).astype(self.space.dtype, copy=False)
            return list(clipped)
        return [self.decode(row) for row in actions]

    def decode(self, row: np.ndarray) -> Any:
        """The structured action of one flat row."""
        row = np.asarray(row)
        if self.kind != "structured":
            return self.decode_rows(row[None])[0]
        values = []
        for leaf, disc in zip(self.leaves, self._discrete):
            piece = row[leaf.offset:leaf.offset + leaf.size]
            if disc:
                if self.dtype.kind == "f":
                    span = (np.broadcast_to(leaf.high, leaf.shape) - np.broadcast_to(leaf.low, leaf.shape)).ravel()
                    piece = np.clip(np.rint(piece), 0, span)
                v = (piece.astype(np.int64) + np.broadcast_to(leaf.low, leaf.shape).ravel()).astype(leaf.dtype)
                v = v.reshape(leaf.shape)
                values.append(leaf.dtype.type(v) if isinstance(leaf.space, spaces.Discrete) else v)
            else:
                v = np.clip(piece, np.asarray(leaf.low, np.float32).ravel(),
                            np.asarray(leaf.high, np.float32).ravel())
                values.append(v.astype(leaf.dtype).reshape(leaf.shape))
        return _assemble(self.space, iter(values))

    def encode(self, action: Any) -> np.ndarray:
        """The flat row of one structured action (the inverse of :meth:`decode`)."""
        if self.kind == "discrete":
            return np.asarray(int(action) - self.start, self.dtype)
        if self.kind == "multi":
            return (np.asarray(action, np.int64) - self.start).astype(self.dtype).reshape(
                self.flat_space.shape)
        if self.kind == "box":
            return np.asarray(action, self.dtype).reshape(self.flat_space.shape)
        row = np.zeros(self.flat_space.shape, self.dtype)
        for leaf, disc in zip(self.leaves, self._discrete):
            v = np.asarray(_get(action, leaf.path)).reshape(-1)
            if disc:
                v = v.astype(np.int64) - np.broadcast_to(leaf.low, leaf.shape).ravel()
            row[leaf.offset:leaf.offset + leaf.size] = v
        return row


def action_layout(space: spaces.Space) -> ActionLayout:
    """The (cached) action layout of ``space``."""
    hit = _LAYOUTS.get(id(space))
    if hit is not None and hit[0] is space and isinstance(hit[1], ActionLayout):
        return hit[1]
    layout = ActionLayout(space)
    _LAYOUTS[id(space)] = (space, layout)
    return layout


def flatten_action(action: Any, space: spaces.Space) -> np.ndarray:
    """A structured action of ``space`` as the flat row a policy writes."""
    return action_layout(space).encode(action)


def unflatten_action(row: Any, space: spaces.Space) -> Any:
    """The structured action an env of ``space`` receives for flat action ``row``."""
    return action_layout(space).decode(np.asarray(row))


def leaves_of(value: Any, space: spaces.Space) -> Sequence[tuple[Path, Any]]:
    """(path, value) of each leaf of a structured value, in layout order (for tests/checks)."""
    return [(leaf.path, _get(value, leaf.path)) for leaf in _leaves(space)]
