"""Running observation normalisation (``train.norm_obs``).

Every element of the observation features a policy reads is shifted and scaled by the running
mean and variance of that element over every observation the run has collected::

    y = clamp((x - mean) * inv_std, -clip, clip),    inv_std = 1 / sqrt(var + epsilon)

``x`` is the float feature the policy's :class:`~shoal.trainer.policies.ObservationPreprocessor`
makes of the observation: the observation times its bound scale ``1 / max(|low|, |high|)``,
which is 1 for unbounded elements (the usual case for badly scaled observations), so for those
the statistics are the raw observations'. ``mean`` and ``inv_std`` are rounded to float32 once
(in float64 arithmetic) and the expression above is evaluated in float32, the same operations
``shoal_net.h`` runs, so the torch and C policies normalise identically.

The normaliser is a buffer-only module (:class:`ObservationNormalizer`) inside the policy: every
consumer of the policy (rollouts, the update, ``shoal eval``, ``shoal watch``, ``shoal export``
and the fused C rollout) applies exactly the same transform, and its statistics are part of the
model's ``state_dict`` and therefore of every checkpoint.

Statistics are float64 and merged batch by batch (Chan et al.'s parallel update,
:func:`shoal.trainer.normalize.merge_moments`). The trainer merges each batch *after* the
update that trains on it, so the policy that collected a batch and the one the update scores it
with normalise the same way, and the acting normaliser is fixed during a segment. Under
``torch.distributed`` every rank's batch moments travel in one all-reduce of
``[count, Σ(x - mean), Σ(x - mean)²]`` (sums around the current mean, which every rank shares,
so the sums stay well conditioned), and all ranks hold the same statistics.

What is normalised: Box observations the policy reads as numbers (float observations, and
integer ones it scales rather than one-hot codes, e.g. byte images). Observations the policy
one-hot codes (Discrete spaces, small-range integer Boxes) and structured (Dict/Tuple) byte rows
have no meaningful per-element mean; :func:`attach_observation_normalizer` refuses them with a
message naming the fix.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from .normalize import merge_moments

__all__ = ["ObservationNormalizer", "attach_observation_normalizer", "observation_normalizer",
           "attach_for_state_dict", "observation_normalizer_for", "preprocessed_features",
           "update_from_observations", "DEFAULT_CLIP", "DEFAULT_EPSILON"]

DEFAULT_CLIP = 10.0
DEFAULT_EPSILON = 1e-8


class ObservationNormalizer(nn.Module):
    """``clamp((x - mean) / sqrt(var + epsilon), -clip, clip)`` per element of ``x``
    (``[N, *shape]``), with the running statistics as float64 buffers (``count``, ``mean``,
    ``var``; ``clip`` and ``epsilon`` too, so a saved model carries its whole transform).

    Starts at mean 0, variance 1 (the identity, clipped) until :meth:`update` sees data.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = DEFAULT_CLIP,
                 epsilon: float = DEFAULT_EPSILON) -> None:
        super().__init__()
        if not clip > 0:
            raise ValueError(f"clip={clip} must be > 0")
        if not epsilon > 0:
            raise ValueError(f"epsilon={epsilon} must be > 0")
        self.shape = tuple(int(s) for s in shape)
        f64 = torch.float64
        self.register_buffer("count", torch.zeros((), dtype=f64))
        self.register_buffer("mean", torch.zeros(self.shape, dtype=f64))
        self.register_buffer("var", torch.ones(self.shape, dtype=f64))
        self.register_buffer("clip", torch.tensor(float(clip), dtype=f64))
        self.register_buffer("epsilon", torch.tensor(float(epsilon), dtype=f64))

    def affine(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, inv_std)`` rounded to ``dtype``: the two per-element terms of the transform
        (the exporter writes these float32 values into the C policy)."""
        inv_std = 1.0 / torch.sqrt(self.var + self.epsilon)
        return self.mean.to(dtype), inv_std.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self.affine(x.dtype)
        clip = self.clip.to(x.dtype)        # a tensor: no host sync on an accelerator
        return torch.clamp((x - mean) * inv_std, -clip, clip)

    @torch.no_grad()
    def update(self, features: torch.Tensor, live: torch.Tensor | None = None,
               collective: Any = None) -> None:
        """Merges a batch of features ``[..., *shape]`` into the statistics; ``live`` (the
        batch's leading dimensions, nonzero where a row counts) leaves out dead agents' rows.
        ``collective`` (a :class:`~shoal.trainer.distributed.Collective`) sums the batch's
        moments over ranks first, so every rank merges the job's whole batch."""
        self.merge_sums(self.batch_sums(features, live), collective)

    @torch.no_grad()
    def batch_sums(self, features: torch.Tensor, live: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """``[count, Σ(x - mean), Σ(x - mean)²]`` (float64, ``1 + 2·size`` values) of a batch's
        live rows around the current mean; sums of several chunks of a batch add up."""
        rows = features.detach().reshape(-1, *self.shape).to(self.mean.device, torch.float64)
        if live is not None:
            rows = rows[live.reshape(-1).to(rows.device).bool()]
        centred = rows - self.mean
        count = torch.full((1,), float(rows.shape[0]), dtype=torch.float64, device=rows.device)
        return torch.cat([count, centred.sum(0).reshape(-1), centred.square().sum(0).reshape(-1)])

    @torch.no_grad()
    def merge_sums(self, sums: torch.Tensor, collective: Any = None) -> None:
        """Merges a batch given by :meth:`batch_sums` (summed over ranks by ``collective``
        first: one all-reduce)."""
        if collective is not None:
            sums = collective.sum(sums)
        n = float(sums[0])
        if n == 0:
            return
        size = self.mean.numel()
        shift = sums[1:1 + size].reshape(self.shape) / n          # batch mean - running mean
        batch_var = (sums[1 + size:].reshape(self.shape) / n - shift.square()).clamp_min(0.0)
        count, mean, var = merge_moments(self.count, self.mean, self.var, n,
                                         self.mean + shift, batch_var)
        self.count.copy_(count)
        self.mean.copy_(mean)
        self.var.copy_(var)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, clip={float(self.clip):g}, epsilon={float(self.epsilon):g}"


def _preprocessors(policy: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The observation preprocessors of a built-in policy's encoders (the critic's own trunk
    included)."""
    for name in ("encoder", "critic_encoder"):
        encoder = getattr(policy, name, None)
        pre = getattr(encoder, "preprocess", None) if encoder is not None else None
        if pre is not None:
            yield f"{name}.preprocess", pre


def observation_normalizer(policy: nn.Module) -> ObservationNormalizer | None:
    """The normaliser attached to ``policy`` (None when there is none)."""
    for _, pre in _preprocessors(policy):
        norm = getattr(pre, "obs_norm", None)
        if isinstance(norm, ObservationNormalizer):
            return norm
    return None


def attach_observation_normalizer(policy: nn.Module, clip: float = DEFAULT_CLIP,
                                  epsilon: float = DEFAULT_EPSILON) -> ObservationNormalizer:
    """Puts one :class:`ObservationNormalizer` at the front of ``policy`` (after the scaling of
    its observation preprocessor, shared by the actor's and the critic's encoders) and returns
    it; returns the one already there unchanged. Attach before loading a state dict saved with
    one. Raises ValueError naming the reason for observations it cannot normalise (see the
    module docstring) and for policies other than shoal's built-in ones."""
    from .policies import ObservationPreprocessor

    existing = observation_normalizer(policy)
    if existing is not None:
        return existing
    found = list(_preprocessors(policy))
    if not found:
        raise ValueError(
            f"train.norm_obs=true needs one of shoal's built-in policies (mlp, cnn, lstm), whose "
            f"encoders hold the observation preprocessor it extends; {type(policy).__name__} has "
            f"none: normalise inside the custom policy, or set train.norm_obs=false")
    for where, pre in found:
        if not isinstance(pre, ObservationPreprocessor):
            raise ValueError(
                f"train.norm_obs=true cannot normalise structured (Dict/Tuple) observations "
                f"stored as byte rows ({where} is {type(pre).__name__}): set "
                f"train.norm_obs=false")
        if pre.levels:
            raise ValueError(
                f"train.norm_obs=true normalises observations read as numbers, but this "
                f"policy one-hot codes {pre.space} ({pre.levels} levels per element), which has "
                f"no per-element mean to remove: set train.norm_obs=false (one-hot codes are "
                f"already in [0, 1])")
    device = found[0][1].scale.device
    norm = ObservationNormalizer(found[0][1].obs_shape, clip, epsilon).to(device)
    for _, pre in found:
        pre.obs_norm = norm
    return norm


def update_from_observations(policy: nn.Module, obs: torch.Tensor, live: torch.Tensor,
                             collective: Any = None, chunk_values: int = 1 << 22) -> None:
    """Merges a batch of env observations ``[..., *obs_shape]`` (``live`` over the leading
    dimensions) into ``policy``'s normaliser, as features (:func:`preprocessed_features`), a
    chunk of about ``chunk_values`` values at a time so that a batch of images never needs a
    float64 copy of itself."""
    norm = observation_normalizer(policy)
    if norm is None:
        raise ValueError("the policy has no observation normaliser")
    size = max(1, norm.mean.numel())
    rows = obs.reshape(-1, *norm.shape)
    flags = live.reshape(-1)
    step = max(1, chunk_values // size)
    sums = None
    for start in range(0, rows.shape[0], step):
        part = norm.batch_sums(preprocessed_features(policy, rows[start:start + step]),
                               flags[start:start + step])
        sums = part if sums is None else sums + part
    if sums is not None:
        norm.merge_sums(sums, collective)


def preprocessed_features(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The features ``policy``'s normaliser sees for ``obs`` (``[..., *obs_shape]``, the env's
    dtype): the observation times its preprocessor's bound scale, in float32."""
    pre = next(p for _, p in _preprocessors(policy))
    return obs.to(pre.scale.dtype) * pre.scale


def attach_for_state_dict(policy: nn.Module, state_dict: Any) -> ObservationNormalizer | None:
    """Attaches a normaliser to ``policy`` when ``state_dict`` (a saved model) holds one, so
    the saved statistics load into it (checkpoints of ``train.norm_obs`` runs; ``shoal eval``,
    ``watch`` and ``export`` use this). Returns the normaliser, or None when the model has
    none."""
    if not any(".obs_norm." in key for key in state_dict):
        return observation_normalizer(policy)
    return attach_observation_normalizer(policy)


def observation_normalizer_for(policy: nn.Module, train: Any) -> ObservationNormalizer | None:
    """The trainer's normaliser for ``train.norm_obs`` (attached to ``policy``; None when off);
    a ConfigError names what cannot be normalised."""
    from .config import ConfigError

    if not train.norm_obs:
        return None
    if not train.norm_obs_clip > 0:
        raise ConfigError(f"train.norm_obs_clip={train.norm_obs_clip} must be > 0 (e.g. the "
                          f"default 10.0)")
    try:
        return attach_observation_normalizer(policy, train.norm_obs_clip)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
