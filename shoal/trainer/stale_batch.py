"""Training on a batch that an older policy collected (``train.overlap``).

With the fused rollout and overlap (:mod:`shoal.trainer.fused_rollout`) the batch trained on in
update k was collected during update k-1, by the weights from before it: the collector is one
update behind the learner. Plain PPO on such a batch does not learn breakout: its clip is
anchored at the collector's log-probs and its value clip at the collector's values. At the start
of update k the learner's policy already sits where update k-1 moved it, up to the clip edge in
the states where the actions matter, so those samples start outside the clip window. The clip
removes exactly the samples that agree with the last update (positive advantage on an action it
made likelier, negative on one it made rarer) and keeps the ones that disagree, so each update
mostly undoes the previous one and the policy oscillates instead of improving. Without a
correction breakout stays at random play for 20M steps; a synchronous run whose acting policy is
made one update stale gives the overlapped run's metrics bit for bit, and an overlapped run with
the staleness removed gives the synchronous run's (BENCHMARKS.md, "Overlap: training on a stale
batch").

The correction (a "decoupled" PPO objective) anchors the update at the learner instead:

1. :func:`anchor_at_learner`, at the start of the update: one forward pass of the learner's
   weights over the batch (no autograd) replaces the stored log-probs and values by the
   learner's, so the PPO ratio, the V-trace ratio in the advantages, the value baseline, the
   value clip's centre and the bootstrap value are the learner's, as in the synchronous update.
   The learner-to-collector ratio ``π_learner / π_collector`` of every step is kept as
   ``storage.collector_ratio``.
2. :func:`collector_terms`, in :func:`~shoal.trainer.ppo.ppo_loss`: each step's policy term is
   weighted by that ratio truncated at :data:`WEIGHT_CAP` (importance sampling from the
   collector's actions to the learner's policy; the truncation bounds the variance of rare
   actions), and the clip window, ±``clip_coef`` around the learner's policy, is also kept within
   ±:data:`COLLECTOR_CLIP` × ``clip_coef`` of the collector's (so a step whose action the learner
   already moved far from the collector cannot move further on this stale sample; without it
   the LSTM sanity env ``recall`` falls back from 1.0 late in some runs).

When the collector is the learner (the synchronous paths) ``collector_ratio`` is None and the
loss is the plain PPO loss, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from .action_masks import mask_logits

__all__ = ["WEIGHT_CAP", "COLLECTOR_CLIP", "anchor_at_learner", "collector_terms"]

#: truncation of the importance weight ``π_learner / π_collector`` of a step's policy term
WEIGHT_CAP = 2.0
#: the clip window also stays within ±COLLECTOR_CLIP x clip_coef of the collector's policy
COLLECTOR_CLIP = 2.0


def anchor_at_learner(policy: torch.nn.Module, distribution: Any, storage: Any) -> None:
    """Replaces ``storage``'s log-probs and values (all ``T+1`` slots) by the learner's
    (``policy``'s current weights, replayed over whole segments from the stored start state, as
    training replays them) and sets ``storage.collector_ratio`` ``[S, T]`` to
    ``π_learner / π_collector`` of the stored actions."""
    b, T = storage, storage.T
    with torch.no_grad():
        params, values, _ = policy(b.obs, b.state0, b.starts)
        params = mask_logits(params.float(), b.action_masks, distribution.nvec)
        logprobs, _ = distribution.log_prob_and_entropy(params, b.actions)
    b.collector_ratio = (logprobs[:, :T] - b.logprobs[:, :T]).exp()
    b.logprobs.copy_(logprobs)
    b.values.copy_(values.float().reshape(b.values.shape))


def collector_terms(collector_ratio: torch.Tensor, clip_coef: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, low, high)`` for steps whose learner-to-collector ratio is
    ``collector_ratio``: the truncated importance weight of the policy term, and the clip window
    of the ratio to the learner (±``clip_coef``, narrowed to keep the ratio to the collector
    within ±``COLLECTOR_CLIP`` x ``clip_coef``)."""
    weight = collector_ratio.clamp(max=WEIGHT_CAP)
    low = torch.clamp((1.0 - COLLECTOR_CLIP * clip_coef) / collector_ratio, min=1.0 - clip_coef)
    high = torch.clamp((1.0 + COLLECTOR_CLIP * clip_coef) / collector_ratio, max=1.0 + clip_coef)
    return weight, low, high
