"""How many CPU cores this process may use: the count every default worker or thread number
starts from (the vector backends, the emulation's backends, the fused rollout's threads)."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (a
    process pinned by ``taskset`` or a container's cpuset runs on fewer cores than the machine
    has, and more workers than those only contend), else the machine's count."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1
