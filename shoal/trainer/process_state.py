"""The trainer's own copy of process-wide state, swapped in while it works and out after.

Seeding the trainer must not reseed the caller: ``torch.manual_seed``, ``np.random.seed`` and
``torch.set_num_threads`` change the whole process (a notebook that trained once would stay
single-threaded, and its own random draws would be replayed). A :class:`ProcessState` holds the
trainer's values of torch's default RNG, numpy's global RNG and torch's CPU thread count;
:meth:`ProcessState.active` installs them for the duration of a ``with`` block and puts the
caller's back afterwards, keeping the trainer's streams where they got to, so that a run split
into several ``with`` blocks draws exactly what one block would.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["ProcessState"]


class ProcessState:
    """Torch's default RNG, numpy's global RNG and torch's thread count, as the trainer wants
    them. ``threads`` 0 keeps whatever thread count the caller has."""

    def __init__(self, seed: int, threads: int = 0) -> None:
        self.torch_rng = torch.Generator().manual_seed(int(seed)).get_state()
        self.numpy_rng: tuple[Any, ...] = np.random.RandomState(int(seed) % (2**32)).get_state()
        self.threads = int(threads)
        self._depth = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Installs the trainer's state; restores the caller's on exit (also on errors and
        KeyboardInterrupt). Re-entrant: an inner block is a no-op."""
        if self._depth:
            yield
            return
        outer_torch, outer_numpy = torch.get_rng_state(), np.random.get_state()
        outer_threads = torch.get_num_threads()
        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.numpy_rng)
        if self.threads > 0 and self.threads != outer_threads:
            torch.set_num_threads(self.threads)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self.torch_rng, self.numpy_rng = torch.get_rng_state(), np.random.get_state()
            torch.set_rng_state(outer_torch)
            np.random.set_state(outer_numpy)
            if torch.get_num_threads() != outer_threads:
                torch.set_num_threads(outer_threads)

    def torch_rng_state(self) -> torch.Tensor:
        """The trainer's torch RNG state (the live one inside :meth:`active`)."""
        return torch.get_rng_state() if self._depth else self.torch_rng.clone()

    def numpy_rng_state(self) -> tuple[Any, ...]:
        """The trainer's numpy RNG state (the live one inside :meth:`active`)."""
        return np.random.get_state() if self._depth else self.numpy_rng

    def set_rng_states(self, torch_state: torch.Tensor, numpy_state: tuple[Any, ...]) -> None:
        """Sets the trainer's RNG states (from a checkpoint)."""
        if self._depth:
            torch.set_rng_state(torch_state)
            np.random.set_state(numpy_state)
        else:
            self.torch_rng, self.numpy_rng = torch_state.clone(), numpy_state
