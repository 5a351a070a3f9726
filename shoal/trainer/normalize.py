"""Running statistics for reward scaling: rewards divided by the running root mean square of the
discounted return, so the critic's targets have a scale near 1 whatever the env's reward units
(``train.norm_reward``).

Per agent row ``s`` the trainer keeps the discounted return of the rewards seen so far,
``R_s <- γ·R_s + r_s`` (reset to 0 after the step that ends an episode), feeds every live
row's ``R_s`` to running moments (Chan et al.'s parallel update, in float64) and stores
``r / sqrt(mean(R)² + var(R) + ε)``. The root mean square, not the standard deviation that
return scaling often uses: when every return is the same (the first steps of a constant
per-step penalty: all returns are -1) the standard deviation is 0 and the first rewards would
be multiplied by 10⁴, while the root mean square is the returns' size, whatever their spread.
Only the scale changes, never the sign or the offset: a per-step penalty stays a penalty. The statistics are part of the trainer's checkpoint, so a resumed run
scales exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

__all__ = ["RunningMeanStd", "ReturnScaler", "merge_moments"]


def merge_moments(count: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                  n: torch.Tensor | float,
                  batch_mean: torch.Tensor, batch_var: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(count, mean, var)`` of the union of two sets given as (count, mean, population
    variance) each: Chan et al.'s parallel update (elementwise for tensors of any shape)."""
    total = count + n
    delta = batch_mean - mean
    m2 = var * count + batch_var * n + delta.square() * count * n / total
    return total, mean + delta * n / total, m2 / total


class RunningMeanStd:
    """Mean and variance of every value seen so far (float64, merged batch by batch)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        """Merges a batch of values (any shape) into the statistics."""
        x = values.detach().reshape(-1).to(torch.float64)
        n = x.numel()
        if n == 0:
            return
        self.count, self.mean, self.var = merge_moments(
            self.count, self.mean, self.var, float(n), x.mean(), x.var(unbiased=False))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        device = self.mean.device
        self.mean = state["mean"].to(device, torch.float64)
        self.var = state["var"].to(device, torch.float64)
        self.count = state["count"].to(device, torch.float64)


class ReturnScaler:
    """Scales rewards in place by the running root mean square of the discounted return (see the
    module docstring)."""

    def __init__(self, num_rows: int, gamma: float, device: torch.device | str = "cpu",
                 epsilon: float = 1e-8) -> None:
        self.gamma, self.epsilon = float(gamma), float(epsilon)
        self.returns = torch.zeros(num_rows, dtype=torch.float64, device=device)
        self.stats = RunningMeanStd(device)

    def scale_(self, rewards: torch.Tensor, dones: torch.Tensor, rows: slice,
               live: torch.Tensor | None = None) -> torch.Tensor:
        """``rewards`` (the raw rewards of ``rows``, one step) divided in place by the scale;
        ``dones`` marks rows whose episode ended at this step, ``live`` the rows to count."""
        ret = self.returns[rows]
        ret.mul_(self.gamma).add_(rewards.to(torch.float64))
        self.stats.update(ret if live is None else ret[live.to(ret.device).bool()])
        rewards.div_(self.scale)
        ret.mul_(1.0 - dones.to(torch.float64))
        return rewards

    def scale_segment_(self, rewards: torch.Tensor, dones: torch.Tensor, live: torch.Tensor,
                       groups: Sequence[slice]) -> torch.Tensor:
        """``rewards`` (``[num_rows, T]``, raw, all rows) scaled in place exactly as ``T`` steps
        of :meth:`scale_` would, each step calling it on every slice of ``groups`` in turn
        (the order the torch rollout receives env groups in): the same float64 statistics and
        float32 quotients bit for bit, with far fewer tensor operations per step (the
        conversions hoisted out of the loop, the moments merged in Python floats, which are
        the same IEEE doubles, and one division for the whole segment at the end)."""
        steps = rewards.shape[1]
        raw = rewards.to(torch.float64)
        keep = 1.0 - dones.to(torch.float64)
        alive = live.to(rewards.device).bool()
        count, mean, var = (float(self.stats.count), float(self.stats.mean),
                            float(self.stats.var))
        plan = [(rows, self.returns[rows], bool(alive[rows].all()), []) for rows in groups]
        for t in range(steps):
            for rows, ret, all_live, divisors in plan:
                ret.mul_(self.gamma).add_(raw[rows, t])
                x = ret if all_live else ret[alive[rows, t]]
                n = x.numel()
                if n:      # RunningMeanStd.update's merge_moments, in Python floats
                    batch_mean, batch_var = x.mean().item(), x.var(unbiased=False).item()
                    total = count + n
                    delta = batch_mean - mean
                    m2 = var * count + batch_var * n + delta * delta * count * n / total
                    count, mean, var = total, mean + delta * n / total, m2 / total
                divisors.append(math.sqrt(mean * mean + var + self.epsilon))   # self.scale
                ret.mul_(keep[rows, t])
        stats = self.stats
        stats.count, stats.mean, stats.var = (
            torch.tensor(v, dtype=torch.float64, device=stats.mean.device)
            for v in (count, mean, var))
        # scale_ divides a float32 tensor by a Python float, which torch rounds to float32
        for rows, _, _, divisors in plan:
            rewards[rows].div_(torch.tensor(divisors, dtype=torch.float32, device=rewards.device))
        return rewards

    @property
    def scale(self) -> float:
        """``sqrt(mean² + var + ε)`` of the discounted returns seen so far."""
        return float(torch.sqrt(self.stats.mean.square() + self.stats.var + self.epsilon))

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.cpu(), "stats": self.stats.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["returns"].shape != self.returns.shape:
            raise ValueError(f"the saved reward scaler has {state['returns'].shape[0]} rows but "
                             f"this run has {self.returns.shape[0]}")
        self.returns = state["returns"].to(self.returns.device, torch.float64)
        self.stats.load_state_dict(state["stats"])
