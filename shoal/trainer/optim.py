"""Adam in one fused kernel per step where torch has one for the parameters' device.

torch's default Adam on CPU tensors runs a loop of about ten elementwise ops per parameter
tensor (its multi-tensor ``foreach`` path is for accelerators). For the small policies of the
shipped configs that loop is dispatch overhead, ~0.5 ms of an MLP-128 update step on one thread
(8 parameter tensors); ``fused=True`` does the same arithmetic in one kernel over all of them
(``tests/test_trainer.py`` checks the two give the same weights).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["fused_adam"]


def fused_adam(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam(params, fused=True, **kwargs)``, or the default Adam where this torch
    has no fused kernel for these parameters (their device or dtype)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, **kwargs)
