"""Invalid-action masks: an env's per-step mask applied to the policy's logits.

An env that knows which discrete actions are valid in a state writes an *action mask* with every
observation: one bool per logit of its action space (``sum(nvec)`` per agent, the logits of each
action dimension in order), True for a valid action. C envs declare it in their spec
(``action_mask=True``, e.g. g2048: moves that change nothing are invalid); Gymnasium and
PettingZoo envs give it as the ``"action_mask"`` entry of a Dict observation (PettingZoo's classic
envs' convention), which the emulation layer moves into the mask buffer. A vector env exposes it
as ``env.action_masks`` (bool ``[num_agents, width]``; width 0 when the env has no masks).

How a mask acts (:func:`mask_logits`): the logits of invalid actions are replaced by
:data:`MASKED_LOGIT` (-1e9, finite, so softmax, log-probs and entropy stay free of NaN: an invalid
action's probability is exactly 0 in float32 and ``0 * log p`` is 0), before sampling, greedy
choice, log-probs and entropy. The trainer stores each step's mask in the rollout storage and
masks the logits again in the loss, so the distribution the learner scores (ratio, entropy) is the
one the actor sampled from. A row whose mask marks *every* action of a dimension invalid is
treated as all valid for that dimension (a broken mask never leaves the policy without a choice).
The C policy (``shoal_net_mask_logits`` in shoal_net.h) does the same, so the fused rollout and
exported programs take the same actions as the torch rollout.

``train.action_masks``: ``auto`` (default) uses masks when the env provides them, ``off`` ignores
them, ``on`` requires them (an error for an env without).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["MASKED_LOGIT", "mask_logits", "effective_mask", "env_action_masks"]

#: the logit an invalid action gets: far below any logit a policy produces, finite in float32
MASKED_LOGIT = -1e9


def effective_mask(masks: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """``masks`` (bool ``[..., sum(nvec)]``) with every action dimension that has no valid
    action made all valid."""
    masks = masks.to(torch.bool)
    if len(nvec) == 1:
        return masks | ~masks.any(-1, keepdim=True)
    if len(set(nvec)) == 1:
        k, n = len(nvec), nvec[0]
        grouped = masks.reshape(*masks.shape[:-1], k, n)
        return (grouped | ~grouped.any(-1, keepdim=True)).reshape(masks.shape)
    return torch.cat([m | ~m.any(-1, keepdim=True) for m in masks.split(list(nvec), -1)], -1)


def mask_logits(params: torch.Tensor, masks: torch.Tensor | None, nvec: Sequence[int]) -> torch.Tensor:
    """``params`` (logits ``[..., sum(nvec)]``) with invalid actions' logits set to
    :data:`MASKED_LOGIT`; ``params`` unchanged when ``masks`` is None or has width 0.
    Gradients do not flow into masked logits."""
    if masks is None or masks.shape[-1] == 0:
        return params
    if masks.shape[-1] != params.shape[-1]:
        raise ValueError(f"action masks have {masks.shape[-1]} entries per row but the action "
                         f"space has {params.shape[-1]} logits: a mask needs one entry per logit "
                         f"(sum(nvec))")
    keep = effective_mask(masks.to(params.device), nvec)
    return params.masked_fill(~keep, MASKED_LOGIT)


def env_action_masks(env: Any, setting: str, distribution: Any) -> np.ndarray | None:
    """The env's action-mask buffer when ``train.action_masks`` (``setting``) uses it, else None.

    Raises ValueError for ``setting="on"`` on an env without masks, and for a mask whose width
    is not the action space's number of logits."""
    masks = getattr(env, "action_masks", None)
    has = isinstance(masks, np.ndarray) and masks.ndim == 2 and masks.shape[1] > 0
    if setting == "off":
        return None
    if not has:
        if setting == "on":
            raise ValueError(f"train.action_masks='on' but {getattr(env, 'name', 'the env')} "
                             f"provides no action masks: use 'auto' or 'off'")
        return None
    if distribution.kind == "box":
        raise ValueError("the env provides action masks but its action space is continuous (Box): "
                         "masks apply to Discrete/MultiDiscrete actions; set train.action_masks='off'")
    if masks.shape[1] != distribution.num_params:
        raise ValueError(f"the env's action masks have {masks.shape[1]} entries per agent but its "
                         f"action space {distribution.space} has {distribution.num_params} "
                         f"logits: the env must write one entry per logit (sum(nvec)), or set "
                         f"train.action_masks='off' to train without its masks")
    return masks
