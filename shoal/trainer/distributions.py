"""Action distributions built from a gymnasium action space.

A policy outputs ``action_params`` of shape ``[..., num_params]``; the distribution turns them
into actions, log-probabilities and entropies. It holds no learnable state, so the trainer can
build it from the env's action space alone and use it with any policy, built-in or custom.

==================  ==================================  ===========================  ==========
space               action_params (last dim)            actions (per row)            num_params
==================  ==================================  ===========================  ==========
Discrete(n)         logits                              int64, shape ()              n
MultiDiscrete(nvec) logits of every dimension, in       int64, shape nvec.shape      sum(nvec)
                    nvec order, concatenated
Box(low, high, d)   [mean (d), log_std (d)]             float, shape (d,)            2·d
==================  ==================================  ===========================  ==========

Box actions are a diagonal Gaussian. The built-in policies learn a state-independent
``log_std`` (an ``nn.Parameter``) and append it to the mean they compute, so ``action_params``
carries both and this module needs no parameters of its own; a custom policy may instead make
the log-std depend on the state. Log-stds are clamped to ``[LOG_STD_MIN, LOG_STD_MAX]``.

How Box actions are bounded: the Gaussian sample is *not* squashed or clipped. That unbounded
sample is what is stored in the rollout and what :meth:`ActionDistribution.log_prob` scores,
so the PPO ratio is exact. Only the copy handed to the env is clipped to ``[low, high]``
(:meth:`ActionDistribution.to_env`): the env sees ``clip(a, low, high)``, and the policy learns
that pushing its mean beyond a bound changes nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

__all__ = ["ActionDistribution", "make_distribution", "LOG_STD_MIN", "LOG_STD_MAX"]

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def make_distribution(space: spaces.Space) -> "ActionDistribution":
    """The distribution for a single agent's action space (Discrete, MultiDiscrete or Box)."""
    return ActionDistribution(space)


class ActionDistribution:
    """Sampling, log-probabilities and entropies for one action space; see the module docstring.

    Every method takes ``params`` of shape ``[..., num_params]`` and works on any leading
    shape (``[B]``, ``[B, L]``, ...); per-row results (log_prob, entropy) have the leading shape.
    """

    def __init__(self, space: spaces.Space):
        self.space = space
        if isinstance(space, spaces.Discrete):
            self.kind = "discrete"
            self.nvec: tuple[int, ...] = (int(space.n),)
            self.action_shape: tuple[int, ...] = ()
            self.num_params = int(space.n)
            self._offset = int(space.start)
        elif isinstance(space, spaces.MultiDiscrete):
            self.kind = "multidiscrete"
            self.nvec = tuple(int(n) for n in np.asarray(space.nvec).ravel())
            self.action_shape = tuple(space.shape)
            self.num_params = int(sum(self.nvec))
            start = getattr(space, "start", None)
            if start is not None and np.any(np.asarray(start) != 0):
                raise ValueError(f"MultiDiscrete with a nonzero start is not supported: {space}")
        elif isinstance(space, spaces.Box):
            if not np.issubdtype(space.dtype, np.floating):
                raise ValueError(f"Box action spaces must be floating point, got {space}")
            self.kind = "box"
            self.nvec = ()
            self.action_shape = tuple(space.shape)
            self.action_dim = int(np.prod(space.shape))
            self.num_params = 2 * self.action_dim
            low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).ravel()
            high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).ravel()
            self._low = torch.from_numpy(low.copy())
            self._high = torch.from_numpy(high.copy())
        else:
            raise TypeError(
                f"unsupported action space {space}: use Discrete, MultiDiscrete or Box"
            )
        # MultiDiscrete with every dimension the same size: one batched softmax instead of a loop.
        self._uniform = len(set(self.nvec)) == 1 if self.nvec else False
        self._bounds_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"ActionDistribution({self.space})"

    @property
    def action_dtype(self) -> torch.dtype:
        """torch dtype of the actions sample() returns (int64 or float32)."""
        return torch.float32 if self.kind == "box" else torch.int64

    # ---- shape helpers ----

    def _check(self, params: torch.Tensor) -> None:
        if params.shape[-1] != self.num_params:
            extra = " ([mean, log_std] concatenated)" if self.kind == "box" else ""
            raise ValueError(
                f"action_params have {params.shape[-1]} values in the last dimension but "
                f"{self.space} needs {self.num_params}{extra}"
            )

    def _logit_groups(self, params: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """Normalised log-probabilities: [..., k, n] when every dimension has n choices, else a
        list of [..., n_i]."""
        if self._uniform:
            k, n = len(self.nvec), self.nvec[0]
            return torch.log_softmax(_at_least_float32(params.reshape(*params.shape[:-1], k, n)), dim=-1)
        return [torch.log_softmax(_at_least_float32(p), dim=-1) for p in params.split(self.nvec, dim=-1)]

    def _flat_actions(self, actions: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """Discrete actions as int64 [..., k] (k = number of action dimensions)."""
        k = len(self.nvec)
        actions = actions.reshape(*lead, k).long()
        if self.kind == "discrete" and self._offset:
            actions = actions - self._offset
        return actions

    def _gaussian(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = _at_least_float32(params).split(self.action_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    # ---- public API ----

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random actions, ``[..., *action_shape]``."""
        return self.sample_with_log_prob(params, generator)[0]

    def sample_with_log_prob(self, params: torch.Tensor, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random actions and their log-probabilities, sharing one softmax (for rollouts)."""
        self._check(params)
        lead = tuple(params.shape[:-1])
        if self.kind == "box":
            mean, log_std = self._gaussian(params)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                dtype=mean.dtype)
            actions = mean + log_std.exp() * noise
            log_prob = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
            return actions.reshape(*lead, *self.action_shape), log_prob
        logp = self._logit_groups(params)
        if self._uniform:
            choice = _sample_categorical(logp, generator)                      # [..., k]
            chosen = logp.gather(-1, choice.unsqueeze(-1)).squeeze(-1).sum(-1)
        else:
            picks = [_sample_categorical(lp, generator) for lp in logp]
            chosen = sum(lp.gather(-1, c.unsqueeze(-1)).squeeze(-1) for lp, c in zip(logp, picks))
            choice = torch.stack(picks, -1)
        if self.kind == "discrete":
            return choice.reshape(lead) + self._offset, chosen
        return choice.reshape(*lead, *self.action_shape), chosen

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability of ``actions`` (summed over action dimensions), shape ``[...]``."""
        return self.log_prob_and_entropy(params, actions)[0]

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        """Entropy (summed over action dimensions), shape ``[...]``."""
        self._check(params)
        if self.kind == "box":
            _, log_std = self._gaussian(params)
            return (log_std + 0.5 + _HALF_LOG_2PI).sum(-1)
        logp = self._logit_groups(params)
        if self._uniform:
            return -(logp.exp() * logp).sum((-1, -2))
        return sum(-(lp.exp() * lp).sum(-1) for lp in logp)

    def log_prob_and_entropy(self, params: torch.Tensor, actions: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob(params, actions), entropy(params))`` sharing one softmax (for training)."""
        self._check(params)
        lead = tuple(params.shape[:-1])
        if self.kind == "box":
            mean, log_std = self._gaussian(params)
            actions = actions.reshape(*lead, self.action_dim).to(mean.dtype)
            z = (actions - mean) * torch.exp(-log_std)
            log_prob = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
            entropy = (log_std + 0.5 + _HALF_LOG_2PI).sum(-1)
            return log_prob, entropy
        acts = self._flat_actions(actions, lead)
        logp = self._logit_groups(params)
        if self._uniform:
            log_prob = logp.gather(-1, acts.unsqueeze(-1)).squeeze(-1).sum(-1)
            entropy = -(logp.exp() * logp).sum((-1, -2))
        else:
            log_prob = sum(lp.gather(-1, acts[..., i:i + 1]).squeeze(-1) for i, lp in enumerate(logp))
            entropy = sum(-(lp.exp() * lp).sum(-1) for lp in logp)
        return log_prob, entropy

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most likely action (argmax logits; the Gaussian mean), for evaluation."""
        self._check(params)
        lead = tuple(params.shape[:-1])
        if self.kind == "box":
            return self._gaussian(params)[0].reshape(*lead, *self.action_shape)
        if self._uniform:
            choice = self._logit_groups(params).argmax(-1)
        else:
            choice = torch.stack([p.argmax(-1) for p in params.split(self.nvec, dim=-1)], -1)
        if self.kind == "discrete":
            return choice.reshape(lead) + self._offset
        return choice.reshape(*lead, *self.action_shape)

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions as the env takes them: Box actions clipped to the space's bounds (see the
        module docstring); discrete actions as int32 (the dtype of the env's action buffer)."""
        if self.kind != "box":
            return actions.to(torch.int32)
        low, high = self._bounds(actions.device)
        shape = actions.shape
        flat = actions.reshape(*shape[:len(shape) - len(self.action_shape)], self.action_dim)
        return torch.maximum(torch.minimum(flat.float(), high), low).reshape(shape)

    def _bounds(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._bounds_cache:
            self._bounds_cache[device] = (self._low.to(device), self._high.to(device))
        return self._bounds_cache[device]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float32 or float64 as given; half precision upcast to float32 for stable softmax."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _sample_categorical(log_probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of normalised log-probabilities [..., n] (Gumbel-max: argmax of
    log p + Gumbel noise), as int64 [...]."""
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device,
                   dtype=log_probs.dtype)
    # u is in [0, 1): clamping away 0 keeps the noise finite at both ends.
    gumbel = -torch.log(-torch.log(u.clamp_min_(torch.finfo(u.dtype).tiny)))
    return (log_probs + gumbel).argmax(-1)
