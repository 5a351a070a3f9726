"""The PPO loss from a categorical policy's logits on, in C (``train.loss_head``).

:func:`~shoal.trainer.ppo.ppo_loss` turns the policy's logits and values into the loss in ~100
small torch ops, and autograd's backward through them is as many again. For a small policy
that is a fifth of the learner's update (BENCHMARKS.md, "The learner's Python: the loss head
in C"). Here the same terms come from two C passes over the minibatch's rows
(``shoal/trainer/ppo_head.c``), and the gradient with respect to the logits and values is
computed in the second pass, in closed form:

* the policy term ``max(-a·r, -a·clip(r))`` (``a`` the weighted, normalised advantage, ``r =
  exp(logp - logp_old)``) has slope ``g_r`` in ``r`` (ties split as torch's ``maximum``; the
  clip passes the slope inside its window, bounds included, as ``clamp`` does), and
  ``d r / d z_k = r·(onehot_k - p_k)`` for the softmax group of the chosen action;
* the entropy ``H = -Σ p_j log p_j`` of a group has ``d H / d z_k = -p_k (log p_k + H)``;
* the value term ``0.5·max((v - R)², (v_clipped - R)²)`` has slope ``2(v - R)`` or
  ``2(v_clipped - R)`` inside the clip window.

Every mean is over the unmasked rows, divided by the job's step count, as in ``ppo_loss``; the
advantages and their moments are still computed by ``ppo_loss`` between the two passes (a
data-parallel job meets there), so each rank's loss remains its share of the job's.

It applies to Discrete and MultiDiscrete spaces whose dimensions all have the same number of
choices, on CPU float32 logits, and not with ``train.overlap_weight_norm``; anything else
(Box, uneven MultiDiscrete, a GPU) takes the torch ops, which remain the reference
(``tests/test_loss_head.py`` checks the two agree, loss, statistics and gradients).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

try:
    from . import _ppo_head
except ImportError:  # not built: ppo_loss keeps the torch ops
    _ppo_head = None

__all__ = ["Ratios", "c_head_available", "use_c_head", "ratios", "loss_and_stats"]


def c_head_available() -> bool:
    """True when the C loss head (``shoal.trainer._ppo_head``) is built."""
    return _ppo_head is not None


def use_c_head(distribution: Any, params: torch.Tensor, t: Any) -> bool:
    """Whether ``ppo_loss`` computes this minibatch's loss in C (see the module docstring)."""
    return (_ppo_head is not None and getattr(t, "loss_head", "auto") == "auto"
            and distribution.kind in ("discrete", "multidiscrete") and distribution._uniform
            and params.device.type == "cpu" and params.dtype == torch.float32
            and not getattr(t, "overlap_weight_norm", False))


def _groups(distribution: Any) -> tuple[int, int]:
    """(groups, offset): softmax groups per row, and the value of the first action."""
    offset = getattr(distribution, "_offset", 0) if distribution.kind == "discrete" else 0
    return len(distribution.nvec), int(offset)


def _array(x: torch.Tensor, dtype: torch.dtype) -> Any:
    """A contiguous numpy view of ``x`` in ``dtype`` (a copy only when needed). (Each torch call
    here is paid on every minibatch, while the rollout thread competes for the interpreter.)"""
    if x.requires_grad:
        x = x.detach()
    if x.dtype != dtype:
        x = x.to(dtype)
    if not x.is_contiguous():
        x = x.contiguous()
    return x.numpy()


class Ratios(NamedTuple):
    """:func:`ratios`' results, shaped like the stored log-probs (``[B, T]``); ``lse`` is each
    softmax group's log-sum-exp (``[B, T, groups]``, for :func:`loss_and_stats`)."""
    logratio: torch.Tensor
    ratio: torch.Tensor
    entropy: torch.Tensor
    lse: torch.Tensor


def ratios(distribution: Any, params: torch.Tensor, actions: torch.Tensor,
           old_logp: torch.Tensor) -> Ratios:
    """The stored actions' ``logratio`` (their log-probability under ``params``, logits ``[B,
    T, sum(nvec)]``, minus ``old_logp``), ``ratio = exp(logratio)`` and the entropy, without
    gradients."""
    groups, offset = _groups(distribution)
    shape = old_logp.shape
    out = Ratios(*(torch.empty(shape, dtype=torch.float32) for _ in range(3)),
                 torch.empty((*shape, groups), dtype=torch.float32))
    _ppo_head.ratios(_array(params, torch.float32), _array(actions, torch.int64),
                     _array(old_logp, torch.float32), groups, offset, *(x.numpy() for x in out))
    return out


class _WithGradients(torch.autograd.Function):
    """A loss whose gradients with respect to ``logits`` and ``values`` were computed with it:
    backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, values: torch.Tensor, loss: float,
                grad_logits: torch.Tensor, grad_values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad_logits, grad_values)
        return torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        grad_logits, grad_values = ctx.saved_tensors
        return grad_logits * grad, grad_values * grad, None, None, None


def loss_and_stats(distribution: Any, params: torch.Tensor, new_values: torch.Tensor,
                   head: Ratios, mb: Any,
                   advantages: torch.Tensor, returns: torch.Tensor, job: Any,
                   weights: torch.Tensor, t: Any, weight_cap: float, collector_clip: float
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, stats)`` as :func:`~shoal.trainer.ppo.ppo_loss` defines them, for the logits
    ``params`` ``[B, T, sum(nvec)]`` and values ``new_values`` ``[B, T]`` (both with
    gradients), :func:`ratios`' ``head``, the minibatch's advantages and returns ``[B, T]``, the
    job's moments and the segments' importance weights ``[B]`` (their scale applied)."""
    groups, offset = _groups(distribution)
    T = advantages.shape[1]
    grad_logits = torch.empty(params.shape, dtype=torch.float32)
    grad_values = torch.empty(new_values.shape, dtype=torch.float32)
    if t.norm_adv:   # (a - mean) / scale with the scale rounded as ppo_loss's torch ops round it
        mean, scale = float(job.mean), float(job.var.sqrt() + 1e-8)
    else:
        mean, scale = 0.0, 1.0
    collector = None if mb.collector_ratio is None else _array(mb.collector_ratio, torch.float32)
    policy, value, ent, kl, clipfrac, ratio_mean = _ppo_head.loss(
        _array(params, torch.float32), _array(mb.actions, torch.int64), groups, offset,
        head.ratio.numpy(), head.logratio.numpy(), head.entropy.numpy(), head.lse.numpy(),
        _array(new_values, torch.float32), _array(mb.values, torch.float32), T,
        _array(returns, torch.float32), _array(advantages, torch.float32),
        _array(mb.masks, torch.float32), _array(weights, torch.float32), collector, mean, scale,
        float(job.count), float(t.clip_coef), float(weight_cap), float(collector_clip),
        float(t.vf_clip_coef), float(t.vf_coef), float(t.ent_coef), grad_logits.numpy(),
        grad_values.numpy())
    total = policy + t.vf_coef * value - t.ent_coef * ent
    loss = _WithGradients.apply(params, new_values, total, grad_logits, grad_values)
    names = ("policy", "value", "entropy", "approx_kl", "clipfrac", "ratio")
    values = torch.tensor((policy, value, ent, kl, clipfrac, ratio_mean), dtype=torch.float32)
    return loss, dict(zip(names, values.unbind()))
