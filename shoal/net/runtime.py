"""The C policy on numpy batches, and the torch sampler that reproduces its draws.

:class:`CPolicy` wraps the ``shoal.net._net`` extension (``shoal_net.h``): forward passes and
sampling run in C without the GIL, rows split over ``threads`` OpenMP threads (results do not
depend on the thread count).

Sampling uses one RNG state per agent (SplitMix64, uint64; :func:`agent_rng`). A row draws
exactly ``num_params`` uniforms per sampled step; :func:`agent_uniforms` returns the ones it
would draw, and :func:`sample_from_uniforms` turns them into the same actions and log-probs
with torch ops (Gumbel-max for discrete heads, Box-Muller for Box), so a torch rollout fed the
same uniforms takes the same actions as the C one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import _net
from .export import export_policy

__all__ = ["CPolicy", "agent_rng", "agent_uniforms", "sample_from_uniforms"]

_TWO_PI = float(np.float32(2.0 * math.pi))
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def agent_rng(num_agents: int, seed: int, first: int = 0) -> np.ndarray:
    """RNG states (uint64 ``[num_agents]``) for agents ``first ..``, seeded by ``seed``; agent
    i's stream depends only on ``(seed, first + i)``."""
    states = np.empty(num_agents, np.uint64)
    _net.rng_seed(states, int(seed) % 2**64, int(first))
    return states


def agent_uniforms(states: np.ndarray, k: int) -> np.ndarray:
    """The next ``k`` uniforms of every row's stream, ``[rows, k]`` float32 in (0, 1);
    advances ``states`` in place."""
    out = np.empty((len(states), k), np.float32)
    _net.rng_uniforms(states, out)
    return out


def sample_from_uniforms(distribution: Any, params: torch.Tensor, uniforms: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Actions and log-probs of ``params [B, num_params]`` given each row's uniforms
    ``[B, num_params]``, exactly as ``shoal_net_sample`` draws them (torch ops; what the torch
    rollout uses to agree with the C one). ``distribution``: an
    :class:`~shoal.trainer.distributions.ActionDistribution`."""
    B = params.shape[0]
    params = params.float()
    u = uniforms.to(params.device, torch.float32)
    if distribution.kind == "box":
        d = distribution.action_dim
        mean, log_std = distribution._gaussian(params)
        noise = torch.sqrt(-2.0 * torch.log(u[:, :d])) * torch.cos(_TWO_PI * u[:, d:])
        actions = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
        return actions.reshape(B, *distribution.action_shape), log_prob
    gumbel = -torch.log(-torch.log(u))
    picks, chosen = [], torch.zeros(B, dtype=torch.float32, device=params.device)
    for logits, g in zip(params.split(distribution.nvec, -1), gumbel.split(distribution.nvec, -1)):
        logp = torch.log_softmax(logits, -1)
        pick = (logp + g).argmax(-1)
        picks.append(pick)
        chosen = chosen + logp.gather(-1, pick.unsqueeze(-1)).squeeze(-1)
    choice = torch.stack(picks, -1)
    if distribution.kind == "discrete":
        return choice.reshape(B) + distribution._offset, chosen
    return choice.reshape(B, *distribution.action_shape), chosen


class CPolicy:
    """An exported policy run by ``shoal_net.h``.

    Args:
        blob: the bytes :func:`shoal.net.export.export_policy` wrote (checked on load: a bad
            blob raises ValueError saying what is wrong).
        threads: OpenMP threads for forward and sample (1 = the caller only).
    """

    def __init__(self, blob: bytes, threads: int = 1) -> None:
        self.net = _net.Net(bytes(blob))
        self.threads = int(threads)
        self.obs_shape: tuple[int, ...] = self.net.obs_shape
        self.obs_dtype = np.dtype(self.net.obs_dtype)
        self.num_params: int = self.net.num_params
        self.hidden: int = self.net.hidden
        self.recurrent: bool = self.net.recurrent
        self.head: str = self.net.head

    @classmethod
    def from_policy(cls, policy: torch.nn.Module, obs_dtype: Any = None,
                    threads: int = 1) -> "CPolicy":
        """Exports ``policy`` (see :func:`~shoal.net.export.export_policy`) and loads it."""
        return cls(export_policy(policy, obs_dtype), threads)

    def initial_state(self, batch: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Zeros ``(h, c)`` ``[batch, hidden]`` for a recurrent policy, else None."""
        if not self.recurrent:
            return None
        return (np.zeros((batch, self.hidden), np.float32),
                np.zeros((batch, self.hidden), np.float32))

    def forward(self, obs: np.ndarray, starts: np.ndarray | None = None,
                state: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(params [B, num_params], values [B])`` for one step of ``obs [B, *obs_shape]``.
        A recurrent policy's ``state`` (``(h, c)`` float32 ``[B, hidden]``) is updated in place;
        ``starts [B]`` zeroes it first where 1. Observations must have the exported dtype."""
        obs = np.ascontiguousarray(obs)
        B = obs.shape[0] if obs.ndim else 0
        params = np.empty((B, self.num_params), np.float32)
        values = np.empty(B, np.float32)
        h, c = state if state is not None else (None, None)
        if starts is not None:
            starts = np.ascontiguousarray(starts, dtype=np.float32)
        self.net.forward(obs, starts, h, c, params, values, self.threads)
        return params, values

    def sample(self, params: np.ndarray, rng: np.ndarray | None = None, greedy: bool = False,
               action_masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, logprobs)``: int32 ``[B, dims]`` / float32 ``[B, d]`` actions (Box
        actions unclipped) and float32 log-probs; ``rng`` (uint64 ``[B]``) advances in place.
        ``action_masks`` (bool ``[B, num_params]``): invalid actions are never taken and the
        log-probs are those of the masked distribution (:mod:`shoal.trainer.action_masks`)."""
        B = params.shape[0]
        if action_masks is not None:
            params = np.array(params, np.float32, order="C")   # masked in place: a copy
            self.net.mask_logits(params, np.ascontiguousarray(action_masks, np.uint8))
        box = self.head == "box"
        actions = np.empty((B, self.net.action_dims), np.float32 if box else np.int32)
        logprobs = np.empty(B, np.float32)
        self.net.sample(np.ascontiguousarray(params, np.float32), rng, greedy, actions,
                        logprobs, self.threads)
        return actions, logprobs

    def clip_actions(self, actions: np.ndarray) -> np.ndarray:
        """Box actions clipped to the action space's bounds (what the env receives)."""
        out = np.empty_like(actions, dtype=np.float32)
        self.net.clip_actions(np.ascontiguousarray(actions, np.float32), out)
        return out
