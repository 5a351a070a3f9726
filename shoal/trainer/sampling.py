"""Prioritised segment sampling for minibatches.

Each rollout segment s (a row of the ``[S, T]`` storage) gets a priority

    priority_s = (Σ_t |A_s,t| · mask_s,t)^α

and is drawn with probability ``P(s) = priority_s / Σ priority``. A minibatch draws
``minibatch_size / T`` distinct segments (no repeats within a minibatch; minibatches are
independent draws). Each drawn segment gets the importance weight

    w_s = (S · P(s))^(-β) / max over the minibatch of (S · P)^(-β)

so the largest weight in a minibatch is 1. β anneals linearly from β0 to 1 over training
(:func:`anneal_beta`); at β = 0 every weight is 1.

Which segments can be drawn:

* A segment whose mask is all zero (a padded or dead agent for the whole segment) has priority 0
  and is never drawn while enough live segments exist, whatever α (so α = 0 is uniform over
  *live* segments).
* With α > 0, live segments whose advantages are all 0 also have priority 0.
* If fewer segments have positive priority than a minibatch needs, the minibatch takes all of
  them and fills the rest uniformly from the zero-priority live segments, then from the dead
  ones. Filled-in segments get the weight of the least likely positive-priority segment (their
  advantages are zero, or they are masked out, so their weight only scales terms that vanish).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["segment_passes", "segment_priorities", "sampling_probabilities", "importance_weights", "anneal_beta",
           "sample_segments", "SegmentSample"]


class SegmentSample(NamedTuple):
    """One minibatch of segments: ``indices`` [n] (int64), ``weights`` [n] (importance weights,
    max 1) and ``probabilities`` [S] (the P every segment had)."""

    indices: torch.Tensor
    weights: torch.Tensor
    probabilities: torch.Tensor


def segment_priorities(advantages: torch.Tensor, masks: torch.Tensor | None = None,
                       alpha: float = 0.8) -> torch.Tensor:
    """``(Σ_t |A_s,t| · mask_s,t)^α`` per segment, ``[S]`` float; 0 for all-masked segments.

    ``advantages`` and ``masks`` are ``[S, T]`` (masks bool or float; None = all live).
    Non-finite sums count as 0.
    """
    if advantages.dim() != 2:
        raise ValueError(f"advantages must be [S, T], got shape {tuple(advantages.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha={alpha} must be >= 0")
    magnitude = advantages.detach().abs()
    if masks is None:
        live = torch.ones(advantages.shape[0], dtype=torch.bool, device=advantages.device)
    else:
        if masks.shape != advantages.shape:
            raise ValueError(f"masks has shape {tuple(masks.shape)} but advantages is "
                             f"{tuple(advantages.shape)}: they must match")
        m = masks.to(device=advantages.device, dtype=magnitude.dtype)
        magnitude = magnitude * m
        live = (m > 0).any(dim=1)
    total = torch.nan_to_num(magnitude.sum(dim=1), nan=0.0, posinf=0.0, neginf=0.0)
    priority = total.pow(alpha) if alpha != 0 else torch.ones_like(total)
    return torch.where(live, priority, torch.zeros_like(priority))


def sampling_probabilities(priorities: torch.Tensor) -> torch.Tensor:
    """``P(s) = priority_s / Σ priority``; all zeros when every priority is 0 (then
    :func:`sample_segments` draws uniformly from the live segments)."""
    total = priorities.sum()
    if not bool(total > 0):
        return torch.zeros_like(priorities)
    return priorities / total


def _weights(p_drawn: torch.Tensor, num_segments: int, beta: float) -> torch.Tensor:
    if beta == 0:
        return torch.ones_like(p_drawn)
    raw = (num_segments * p_drawn).pow(-beta)
    return raw / raw.max()


def importance_weights(probabilities: torch.Tensor, beta: float,
                       num_segments: int | None = None) -> torch.Tensor:
    """``w = (S · P)^(-β)`` normalised by its max, for P of the drawn segments.

    ``probabilities``: P of each drawn segment (positive). ``num_segments``: S, the number of
    segments P is a distribution over (default: ``len(probabilities)``; it cancels in the
    normalisation anyway, so it only matters to callers that look at raw values).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if probabilities.numel() == 0:
        return probabilities.clone()
    S = probabilities.numel() if num_segments is None else num_segments
    return _weights(probabilities, S, beta)


def anneal_beta(beta0: float, progress: float) -> float:
    """β for ``progress`` in [0, 1] through training: linear from ``beta0`` to 1."""
    if not 0.0 <= beta0 <= 1.0:
        raise ValueError(f"beta0={beta0} must be in [0, 1]")
    progress = min(max(float(progress), 0.0), 1.0)
    return beta0 + (1.0 - beta0) * progress


def sample_segments(advantages: torch.Tensor, masks: torch.Tensor | None, num_segments: int,
                    alpha: float = 0.8, beta: float = 1.0,
                    generator: torch.Generator | None = None,
                    priorities: torch.Tensor | None = None) -> SegmentSample:
    """Draws ``num_segments`` distinct segments with ``P ∝ priority`` (see the module docstring).

    ``advantages``/``masks``: ``[S, T]``. Pass ``priorities`` (from
    :func:`segment_priorities`) to reuse them across minibatches instead of recomputing from
    ``advantages``. ``generator`` makes draws reproducible (it must live on the advantages'
    device). Returns a :class:`SegmentSample`; indices are on the advantages' device.
    """
    S = advantages.shape[0]
    if not 0 < num_segments <= S:
        raise ValueError(f"num_segments={num_segments} must be in [1, S={S}]: a minibatch of "
                         f"minibatch_size/T segments cannot exceed the segments in the batch")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if priorities is None:
        priorities = segment_priorities(advantages, masks, alpha)
    probs = sampling_probabilities(priorities)
    positive = probs > 0
    n_positive = int(positive.sum())
    if n_positive >= num_segments:
        indices = torch.multinomial(probs, num_segments, replacement=False, generator=generator)
        weights = _weights(probs[indices], S, beta)
        return SegmentSample(indices, weights, probs)

    # Too few positive-priority segments: take them all, fill from live, then dead segments.
    if masks is None:
        live = torch.ones(S, dtype=torch.bool, device=advantages.device)
    else:
        live = (masks.to(advantages.device) != 0).any(dim=1)
    taken = positive.nonzero().squeeze(1)
    need = num_segments - n_positive
    fill_parts = []
    for pool in ((~positive) & live, (~positive) & (~live)):
        if need == 0:
            break
        candidates = pool.nonzero().squeeze(1)
        if candidates.numel() == 0:
            continue
        order = torch.randperm(candidates.numel(), generator=generator,
                               device=candidates.device)[:need]
        fill_parts.append(candidates[order])
        need -= order.numel()
    fill = torch.cat(fill_parts) if fill_parts else taken.new_empty(0)
    indices = torch.cat([taken, fill])
    p_drawn = probs[indices]
    floor = probs[taken].min() if n_positive else probs.new_tensor(1.0 / S)
    p_drawn = torch.where(p_drawn > 0, p_drawn, floor)
    return SegmentSample(indices, _weights(p_drawn, S, beta), probs)


def segment_passes(num_segments_total: int, segments_per_minibatch: int, passes: int,
                   generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Minibatches as true passes over the batch: for each of ``passes`` passes, a random
    permutation of the ``S = num_segments_total`` segments cut into ``ceil(S / n)`` minibatches
    of ``n = segments_per_minibatch`` segments (sizes differ by at most one when ``n`` does not
    divide ``S``). Every segment is in exactly one minibatch of each pass, so every importance
    weight is 1."""
    S, n = int(num_segments_total), int(segments_per_minibatch)
    if not 0 < n <= S:
        raise ValueError(f"segments_per_minibatch={n} must be in [1, S={S}]")
    if passes < 1:
        raise ValueError(f"passes={passes} must be >= 1")
    chunks = -(-S // n)
    out: list[torch.Tensor] = []
    for _ in range(passes):
        order = torch.randperm(S, generator=generator, device=device)
        out.extend(torch.tensor_split(order, chunks))
    return out
