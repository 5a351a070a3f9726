"""Host -> device copies of the rollout's per-step env data.

On a CUDA device a copy from ordinary (pageable) host memory makes the host wait for it. Here
each env buffer gets a pinned twin once: a step's rows are copied into it on the host (a plain
memcpy) and from there to the device with ``non_blocking=True``, so the host goes straight on
to launch the policy and to step the other env group while the copy runs. The pinned twin's
rows are rewritten only at that group's next step, after the host has waited for the group's
actions (a device -> host copy queued behind this one on the same stream), so a copy in flight
is never overwritten. On the CPU it is one ``copy_``.
"""

from __future__ import annotations

import torch

__all__ = ["HostUpload"]


class HostUpload:
    """``upload(dst, src, rows)`` copies ``src[rows]`` (a host tensor viewing an env buffer)
    into ``dst`` (rollout storage on the training device)."""

    def __init__(self, device: torch.device) -> None:
        self.pinned = torch.device(device).type == "cuda"
        self._twins: dict[int, torch.Tensor] = {}

    def __call__(self, dst: torch.Tensor, src: torch.Tensor, rows: slice) -> None:
        if not self.pinned:
            dst.copy_(src[rows])
            return
        twin = self._twins.get(id(src))
        if twin is None:
            twin = torch.empty(src.shape, dtype=src.dtype).pin_memory()
            self._twins[id(src)] = twin
        twin[rows].copy_(src[rows])
        dst.copy_(twin[rows], non_blocking=True)
