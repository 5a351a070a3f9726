"""Advantages: GAE(γ, λ) with V-trace-style truncated importance weights.

For every segment (a row of the ``[S, T]`` rollout storage), backwards over ``t = T-1 .. 0``,
with ``ρ_t = min(ratio_t, rho_clip)`` and ``c_t = min(ratio_t, c_clip)``::

    next_nonterminal = 1 - dones[t]
    delta_t = ρ_t · (rewards[t] + γ · values[t+1] · next_nonterminal - values[t])
    A_t     = delta_t + γ · λ · c_t · next_nonterminal · A_{t+1}        (A_T = 0)

``values`` is ``[S, T+1]``: ``values[:, T]`` is the value of the observation after the segment.
``ratio`` is π_current / π_behaviour per step (``None`` means 1 everywhere); with ratio ≡ 1 and
both clips ≥ 1 this is plain GAE. Returns for the value loss are ``A + values[:, :T]``.

Truncation convention: ``dones[t] = 1`` whenever the episode ended at step t, terminated or
truncated. The rollout has already added ``γ·V(final_observation)`` to ``rewards[t]`` for a
truncated step, so here a done step never bootstraps from ``values[t+1]`` (which belongs to the
next episode) and blocks the propagation of later advantages.

Three implementations compute the same thing:

* the C kernel (``shoal.trainer._advantage``) for contiguous float32 CPU data; it releases the
  GIL and splits large inputs over two threads;
* a torch path, vectorised over segments with a loop over T (any device and float dtype);
* :func:`advantages_reference`, plain numpy loops, for tests.

:func:`compute_advantages` picks the C kernel when it can and the torch path otherwise.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

try:
    from . import _advantage
except ImportError:  # not built: the torch path still works
    _advantage = None

__all__ = ["compute_advantages", "advantages_reference", "advantages_torch", "c_kernel_available"]


def c_kernel_available() -> bool:
    """True when the C kernel (shoal.trainer._advantage) is built and importable."""
    return _advantage is not None


def _check_shapes(values_shape: tuple[int, ...], rewards_shape: tuple[int, ...],
                  dones_shape: tuple[int, ...], ratio_shape: tuple[int, ...] | None) -> None:
    if len(values_shape) != 2:
        raise ValueError(f"values must be [S, T+1], got shape {tuple(values_shape)}")
    S, T = values_shape[0], values_shape[1] - 1
    if T < 0:
        raise ValueError("values must be [S, T+1] with at least one column")
    for name, shape in (("rewards", rewards_shape), ("dones", dones_shape), ("ratio", ratio_shape)):
        if shape is not None and tuple(shape) != (S, T):
            raise ValueError(
                f"{name} has shape {tuple(shape)} but values is {tuple(values_shape)}, so it must "
                f"be ({S}, {T}) (values carries one extra bootstrap column)"
            )


def _check_coefficients(gamma: float, lam: float, rho_clip: float, c_clip: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma} must be in [0, 1]")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam} must be in [0, 1]")
    if not rho_clip >= 0.0 or not c_clip >= 0.0:
        raise ValueError(f"rho_clip={rho_clip} and c_clip={c_clip} must be >= 0 (inf = no clip)")


def compute_advantages(values: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
                       ratio: torch.Tensor | None = None, gamma: float = 0.99, lam: float = 0.95,
                       rho_clip: float = 1.0, c_clip: float = 1.0, *,
                       out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Advantages ``[S, T]`` (see the module docstring for the recurrence).

    Args:
        values: ``[S, T+1]`` value estimates; the last column bootstraps the segment's end.
        rewards: ``[S, T]`` rewards (truncation bootstraps already folded in).
        dones: ``[S, T]`` 1 where the episode ended at that step (bool or float).
        ratio: ``[S, T]`` π_current/π_behaviour, or None for 1 everywhere.
        gamma, lam: discount and GAE λ, each in [0, 1].
        rho_clip, c_clip: V-trace clips ρ̄ (on the TD error) and c̄ (on the trace), ≥ 0;
            ``float("inf")`` disables a clip.
        out: optional ``[S, T]`` tensor to write into (same device and dtype as values).
        backend: ``"auto"`` (C for contiguous float32 CPU tensors, else torch), ``"c"`` or
            ``"torch"``.

    Returns:
        The advantages, on values' device in values' dtype (``out`` if given). Not
        differentiable: inputs are treated as constants.
    """
    if backend not in ("auto", "c", "torch"):
        raise ValueError(f"backend={backend!r}: use 'auto', 'c' or 'torch'")
    _check_shapes(tuple(values.shape), tuple(rewards.shape), tuple(dones.shape),
                  None if ratio is None else tuple(ratio.shape))
    _check_coefficients(gamma, lam, rho_clip, c_clip)
    S, T = values.shape[0], values.shape[1] - 1
    if out is None:
        out = torch.empty((S, T), dtype=values.dtype, device=values.device)
    elif tuple(out.shape) != (S, T):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected ({S}, {T})")

    use_c = backend == "c" or (
        backend == "auto" and _advantage is not None and values.device.type == "cpu"
        and values.dtype == torch.float32 and out.dtype == torch.float32
        and out.device.type == "cpu" and out.is_contiguous()
    )
    if use_c:
        if _advantage is None:
            raise ImportError(
                "backend='c' but shoal.trainer._advantage is not built: run "
                "`SHOAL_ONLY=trainer python setup.py build_ext --inplace` in the shoal checkout"
            )
        _compute_c(values, rewards, dones, ratio, out, gamma, lam, rho_clip, c_clip)
        return out
    return advantages_torch(values, rewards, dones, ratio, gamma, lam, rho_clip, c_clip, out=out)


def _as_c_array(x: torch.Tensor, name: str) -> np.ndarray:
    """A contiguous float32 numpy view (a converted copy only when needed) of a CPU tensor."""
    if x.device.type != "cpu":
        raise ValueError(f"backend='c' needs CPU tensors, but {name} is on {x.device}")
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.contiguous().numpy()


def _compute_c(values: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
               ratio: torch.Tensor | None, out: torch.Tensor, gamma: float, lam: float,
               rho_clip: float, c_clip: float) -> None:
    if out.device.type != "cpu" or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError("backend='c' writes into a contiguous float32 CPU tensor: pass such an "
                         "`out` or leave backend='auto'")
    _advantage.compute(
        _as_c_array(values, "values"), _as_c_array(rewards, "rewards"),
        _as_c_array(dones, "dones"), None if ratio is None else _as_c_array(ratio, "ratio"),
        out.detach().numpy(), float(gamma), float(lam), float(rho_clip), float(c_clip),
    )


@torch.no_grad()
def advantages_torch(values: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
                     ratio: torch.Tensor | None = None, gamma: float = 0.99, lam: float = 0.95,
                     rho_clip: float = 1.0, c_clip: float = 1.0, *,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """The torch path: every per-step term vectorised over [S, T], then a loop over T with
    one fused multiply-add over all segments per step.

    Works on any device; computes in values' dtype (float32/float64/...). Arguments as in
    :func:`compute_advantages`.
    """
    _check_shapes(tuple(values.shape), tuple(rewards.shape), tuple(dones.shape),
                  None if ratio is None else tuple(ratio.shape))
    dtype = values.dtype if values.dtype.is_floating_point else torch.float32
    device = values.device
    values = values.detach().to(dtype)
    S, T = values.shape[0], values.shape[1] - 1
    if out is not None and tuple(out.shape) != (S, T):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected ({S}, {T})")
    rewards = rewards.detach().to(device=device, dtype=dtype)
    dones = dones.detach().to(device=device, dtype=dtype)
    if ratio is not None:
        ratio = ratio.detach().to(device=device, dtype=dtype)
    # Every per-step term over [S, T] with in-place ops into reused contiguous buffers: strided
    # reads, and fresh multi-megabyte tensors (page faults on first touch), cost more than the
    # arithmetic. Same operation order as the C kernel and the reference (up to exact
    # multiplications by 0/1), so results agree closely.
    next_nonterminal, delta, decay, adv_tm, decay_tm = _workspace(S, T, dtype, device)
    torch.sub(1.0, dones, out=next_nonterminal)
    torch.mul(values[:, 1:], next_nonterminal, out=delta)
    delta.mul_(gamma).add_(rewards).sub_(values[:, :-1])
    if ratio is None:
        if min(1.0, rho_clip) != 1.0:
            delta.mul_(min(1.0, rho_clip))
        decay.copy_(next_nonterminal).mul_(min(1.0, c_clip))
    else:
        delta.mul_(torch.clamp(ratio, max=rho_clip, out=decay))
        torch.clamp(ratio, max=c_clip, out=decay).mul_(next_nonterminal)
    decay.mul_(gamma * lam)
    # The recurrence runs time-major so each step touches contiguous memory (coalesced on GPU).
    # adv_tm starts as delta and each step overwrites delta_t with A_t = delta_t + decay_t A_{t+1}.
    adv_tm.copy_(delta.t())
    decay_tm.copy_(decay.t())
    for t in range(T - 2, -1, -1):
        torch.addcmul(adv_tm[t], decay_tm[t], adv_tm[t + 1], out=adv_tm[t])
    if out is None:
        return adv_tm.t().contiguous()
    out.copy_(adv_tm.t())
    return out


_local = threading.local()
_WORKSPACE_ENTRIES = 4


def _workspace(S: int, T: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Scratch tensors for the torch path (3 x [S, T], 2 x [T, S]), kept per thread and reused
    across calls with the same shape (the last few shapes are kept)."""
    cache = getattr(_local, "workspace", None)
    if cache is None:
        cache = _local.workspace = {}
    key = (S, T, dtype, device)
    buffers = cache.pop(key, None)
    if buffers is None:
        buffers = [torch.empty((S, T), dtype=dtype, device=device) for _ in range(3)]
        buffers += [torch.empty((T, S), dtype=dtype, device=device) for _ in range(2)]
        while len(cache) >= _WORKSPACE_ENTRIES:
            cache.pop(next(iter(cache)))
    cache[key] = buffers  # most recently used last
    return buffers


def advantages_reference(values: Any, rewards: Any, dones: Any, ratio: Any = None,
                         gamma: float = 0.99, lam: float = 0.95, rho_clip: float = 1.0,
                         c_clip: float = 1.0) -> np.ndarray:
    """The specification the fast paths are tested against: the recurrence written out in
    numpy, one step at a time (each step over all segments at once).

    Accepts arrays or CPU tensors; computes in float32 when every float input is float32,
    else in float64.
    """
    arrays = [np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
              for x in (values, rewards, dones)]
    if ratio is not None:
        arrays.append(np.asarray(ratio.detach().cpu() if isinstance(ratio, torch.Tensor) else ratio))
    _check_shapes(arrays[0].shape, arrays[1].shape, arrays[2].shape,
                  arrays[3].shape if ratio is not None else None)
    float32 = all(a.dtype == np.float32 for a in arrays if a.dtype != np.bool_)
    dtype = np.float32 if float32 else np.float64
    v, r, d = (a.astype(dtype) for a in arrays[:3])
    q = arrays[3].astype(dtype) if ratio is not None else np.ones_like(r)
    gamma, lam = dtype(gamma), dtype(lam)
    rho_clip, c_clip = dtype(rho_clip), dtype(c_clip)
    S, T = r.shape
    adv = np.zeros((S, T), dtype=dtype)
    a = np.zeros(S, dtype=dtype)  # A_{t+1} of every segment; A_T = 0
    for t in range(T - 1, -1, -1):
        next_nonterminal = dtype(1.0) - d[:, t]
        rho = np.minimum(q[:, t], rho_clip)
        c = np.minimum(q[:, t], c_clip)
        delta = rho * (r[:, t] + gamma * v[:, t + 1] * next_nonterminal - v[:, t])
        a = delta + gamma * lam * c * next_nonterminal * a
        adv[:, t] = a
    return adv
