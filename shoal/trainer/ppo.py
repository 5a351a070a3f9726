"""The PPO trainer: storage, loss, rollout, update and the epoch loop, top to bottom.

The run's bookkeeping lives beside it: assembling a checkpoint from a :class:`Trainer` and
restoring one in :mod:`shoal.trainer.run_state`, the extra loggers and the summary line in
:mod:`shoal.trainer.run_log`, and the ``shoal.train`` entry point (:func:`train`, importable
from here) in :mod:`shoal.trainer.launch`.

One epoch is:

1. **Rollout.** Every agent row of the vector env is one segment; the rollout fills ``[S, T]``
   storage (``S`` = agents, ``T`` = ``train.horizon``) preallocated on the training device:
   observations, actions, log-probs, values (``[S, T+1]``; column T bootstraps the segment's
   end), rewards, dones, episode starts, masks and (recurrent policies) the state each segment
   starts from. Stepping goes through ``env.recv()``/``env.send()``, so with
   ``env.num_buffers=2`` one group of envs steps while the policy acts on the other. The policy
   runs through an :class:`~shoal.trainer.policies.Inference` object (no autograd). With
   ``train.rollout = "fused"`` (C envs) one C call collects the whole segment instead, the
   policy running in C (:mod:`shoal.trainer.fused_rollout`); it fills the same storage.

   Slot ``T`` of the storage is the next epoch's slot 0: at the end of a segment the
   pre-update policy already acts on the next observation (the envs never wait for the update),
   that action's log-prob is stored with it, and its value is the bootstrap value of the
   segment just collected.

   Truncation: when an episode is cut short (``truncations`` and not ``terminals``) the value of
   its final observation, ``V(final_observation)``, computed with the recurrent state the
   episode ended with, is folded into the reward: ``rewards[s, t] += γ·V``. ``dones[s, t]`` is 1
   for both kinds of ending, so the advantage kernel never bootstraps across an episode
   boundary and a terminated episode gets no bootstrap at all.

   Recurrent state: ``starts[s, t] = dones[s, t-1]`` and the policy zeroes its state before a
   step that starts an episode, both in the rollout (one step at a time) and in training (the
   whole segment from the stored start state), so both see the same boundaries.

2. **Update.** Minibatches of ``minibatch_size / T`` segments are either whole passes over the
   batch (``minibatches = "passes"``: a permutation per pass) or independent draws by the
   priority ``(Σ|A|)^α`` that plain GAE advantages give each segment; each is replayed through
   the policy (an update stops early once a minibatch's KL passes ``target_kl``), and
   recomputes their advantages with the current importance ratio (V-trace-style clipped ρ and
   c), normalised by the moments of the minibatch's estimates as drawn (docs/train.md).
   Loss = clipped policy loss weighted by the prioritised-sampling importance weights +
   ``vf_coef`` × clipped value loss − ``ent_coef`` × entropy; every term is a mean over
   *unmasked* steps only (padded or dead agents contribute nothing). Gradients are clipped to
   ``max_grad_norm``; the optimizer is Adam, or Muon for 2-D weight matrices with Adam for the
   rest; the learning rate follows a cosine from ``learning_rate`` to 0 over ``total_steps``
   (or ``schedule_steps``).

3. **Logging.** One JSON line per epoch in ``metrics.jsonl`` (steps, SPS, losses, episode
   stats, the time split env / inference / learn / other), the terminal dashboard, and every
   ``log.checkpoint_interval`` epochs an atomic checkpoint (:mod:`shoal.trainer.run_state`).

Exact resume. A checkpoint is written only at an epoch boundary and holds the model, optimizer,
every RNG (torch's, the action sampler's, the segment sampler's), the step/epoch counters, the
slot-0 carry described above, the episode-score window, and the env's own state when the env can
snapshot itself (``env.save_state()``/``env.load_state()``): then a stopped and resumed run
produces exactly the metrics of an uninterrupted one (same seed, same backend). An env without
snapshots is instead reset at resume with a seed derived from ``(seed, epoch)`` and the policy
acts afresh: the model, optimizer and RNGs continue exactly, but episodes in progress restart, so
later metrics differ from an uninterrupted run. Ctrl-C or SIGTERM (the first one) finishes the
current epoch, checkpoints and returns (:mod:`shoal.trainer.signals`); a second aborts at once
(after saving what it can).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from . import run_state
from .advantage import compute_advantages
from .checkpoint import FRESH_EPISODES_NOTE, CheckpointError, atomic_write_text, load_checkpoint
from .config import (Config, ConfigError, pipeline_unavailable, to_toml,
                     weight_norm_split_error)
from .config import config_for_env as _config_for_env  # noqa: F401  (its name here before)
from .dashboard import Dashboard
from .distributed import (Collective, EpochEnd, JobEpoch, JobMoments, PendingMoments, connect,
                          explained_from_parts, minibatch_moments, rank_share, variance_parts)
from .action_masks import env_action_masks, mask_logits
from .fused_rollout import AgentRng, FusedRollout
from .launch import train  # shoal.trainer.ppo.train, as before
from . import loss_head
from .loss_head import use_c_head
from .learner_threads import make_learner
from .policies import Inference, autocast, make_policy, policy_initial_state, resolve_precision
from .normalize import ReturnScaler
from .obs_norm import observation_normalizer_for, update_from_observations
from .optim import clip_grad_norm, fused_adam
from .process_state import ProcessState
from .run_log import extra_loggers, merge_log, run_dir_label, summary_line
from .signals import deferred_stop
from .acting_refresh import ActingRefresh
from .stale_batch import (COLLECTOR_CLIP, WEIGHT_CAP, PipelinedAnchor, collector_terms, self_normalised,
                          stale_advantages)
from .tail_threads import TailThreads
from .pipeline import RowRanges
from .sampling import anneal_beta, sample_segments, segment_passes, segment_priorities
from .transfer import HostUpload

__all__ = ["Trainer", "RolloutStorage", "Minibatch", "ppo_loss", "replay", "train",
           "make_optimizer", "resolve_device"]

State = tuple[torch.Tensor, ...] | None

# The dashboard notes a routine checkpoint at most this often (the final one is in the summary).
CHECKPOINT_NOTE_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------

def _torch_dtype(np_dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


class RolloutStorage:
    """The ``[S, T]`` batch, preallocated once on the training device.

    ``obs``, ``actions``, ``logprobs``, ``values``, ``starts`` and ``masks`` have ``T+1`` slots:
    slot T is the first step of the next segment (see the module docstring); ``rewards`` and
    ``dones`` have ``T``. ``state0`` is the recurrent state each segment starts from (None for
    stateless policies) and ``state0_next`` the one the next segment will start from.
    """

    def __init__(self, S: int, T: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype,
                 act_shape: tuple[int, ...], act_dtype: torch.dtype, state_template: State,
                 device: torch.device, action_mask_width: int = 0) -> None:
        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.S, self.T = S, T
        self.obs = zeros(S, T + 1, *obs_shape, dtype=obs_dtype)
        self.actions = zeros(S, T + 1, *act_shape, dtype=act_dtype)
        self.logprobs = zeros(S, T + 1)
        self.values = zeros(S, T + 1)
        self.starts = zeros(S, T + 1)
        self.masks = zeros(S, T + 1)
        # each step's valid actions (shoal.trainer.action_masks); width 0 when masks are off
        self.action_masks = zeros(S, T + 1, action_mask_width, dtype=torch.bool)
        self.rewards = zeros(S, T)
        self.dones = zeros(S, T)
        self.advantages = zeros(S, T)
        # π_learner / π_collector per step when an older policy collected the batch
        # (train.overlap: shoal/trainer/stale_batch.py); None when the learner collected it
        self.collector_ratio: torch.Tensor | None = None
        if state_template is None:
            self.state0 = self.state0_next = None
        else:
            self.state0 = tuple(torch.zeros_like(s, device=device) for s in state_template)
            self.state0_next = tuple(torch.zeros_like(s, device=device) for s in state_template)

    CARRIED = ("obs", "actions", "logprobs", "values", "starts", "masks", "action_masks")

    def shift(self) -> None:
        """Slot T becomes slot 0 and the next segment's start state becomes the current one."""
        for name in self.CARRIED:
            buf = getattr(self, name)
            buf[:, 0].copy_(buf[:, self.T])
        if self.state0 is not None:
            for s, n in zip(self.state0, self.state0_next):
                s.copy_(n)


class Minibatch:
    """Segments ``idx`` of a :class:`RolloutStorage`, gathered for one gradient step.

    ``advantages=False`` leaves ``self.advantages`` None, for the caller to gather once the
    update has refreshed them (a minibatch gathered ahead of the learner:
    :class:`~shoal.trainer.stale_batch.PipelinedAnchor`)."""

    def __init__(self, storage: RolloutStorage, idx: torch.Tensor, weights: torch.Tensor,
                 weight_peak: torch.Tensor | None = None,
                 job: JobMoments | PendingMoments | None = None, advantages: bool = True
                 ) -> None:
        T = storage.T
        self.idx = idx
        self.obs = storage.obs[idx, :T]
        self.actions = storage.actions[idx, :T]
        self.logprobs = storage.logprobs[idx, :T]
        self.values = storage.values[idx]                # [B, T+1], bootstrap column included
        self.rewards = storage.rewards[idx]
        self.dones = storage.dones[idx]
        self.starts = storage.starts[idx, :T]
        self.masks = storage.masks[idx, :T]
        # the advantage estimates as drawn: their moments normalise the recomputed ones
        self.advantages = storage.advantages[idx] if advantages else None
        self.action_masks = storage.action_masks[idx, :T]
        self.collector_ratio = (None if storage.collector_ratio is None
                                else storage.collector_ratio[idx])
        self.state0 = None if storage.state0 is None else tuple(s[idx] for s in storage.state0)
        self.weights = weights
        # data-parallel: the raw weight that ``weights`` were divided by (Collective.weight_peak)
        self.weight_peak = weight_peak
        # data-parallel: the job's count, moments and weight scale, when already known
        self.job = job


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------

def replay_outputs(policy: nn.Module, distribution: Any, mb: Minibatch,
                   forward: Callable[..., Any] | None = None, precision: str = "float32"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the policy over whole segments from their stored start state, with the stored
    episode starts: ``(action_params [B, T, P], values [B, T])`` in float32 whatever
    ``precision`` the policy ran in, invalid actions' logits masked."""
    with autocast(mb.obs.device, precision):
        params, values, _ = (policy if forward is None else forward)(mb.obs, mb.state0, mb.starts)
    return mask_logits(params.float(), mb.action_masks, distribution.nvec), values.float()


def replay(policy: nn.Module, distribution: Any, mb: Minibatch,
           forward: Callable[..., Any] | None = None, precision: str = "float32"
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`replay_outputs` as ``(logprobs [B, T], entropy [B, T], values [B, T])`` of the
    stored actions."""
    params, values = replay_outputs(policy, distribution, mb, forward, precision)
    logprobs, entropy = distribution.log_prob_and_entropy(params, mb.actions)
    return logprobs, entropy, values


def _masked_mean(x: torch.Tensor, masks: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.where(masks > 0, x, torch.zeros_like(x)).sum() / count


def ppo_loss(policy: nn.Module, distribution: Any, mb: Minibatch, t: Any,
             forward: Callable[..., Any] | None = None, ranks: Collective | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The PPO loss of one minibatch; ``t`` is a :class:`~shoal.trainer.config.TrainConfig`.

    Returns ``(loss, stats, advantages)``. Advantages are recomputed here from the stored
    rewards, dones and values with the current importance ratio (V-trace-style) and normalised
    by the mean and variance of the minibatch's advantage estimates as they were when it was
    drawn (``mb.advantages``: known before the replay, so a data-parallel job learns them
    without a meeting point of its own). Every term is averaged over unmasked steps only. A
    batch an older policy collected (``train.overlap``: ``mb.collector_ratio`` set) has its
    policy term weighted and clipped as :mod:`shoal.trainer.stale_batch` describes.

    Data-parallel: the step count, the advantage moments and the weights' normaliser are the
    job's: ``mb.job`` when the trainer already has them, else from ``ranks`` (a
    :class:`~shoal.trainer.distributed.Collective`: one collective,
    :func:`~shoal.trainer.distributed.minibatch_moments`), and each term is this rank's part of
    the job's mean, so the ranks' losses (and gradients) add up to the one-process loss.
    """
    params, newvalues = replay_outputs(policy, distribution, mb, forward,
                                       getattr(t, "precision", "float32"))
    in_c = use_c_head(distribution, params, t)    # the rest of the loss in C (loss_head.py)
    if in_c:
        head = loss_head.ratios(distribution, params, mb.actions, mb.logprobs)
        ratio = head.ratio
    else:
        newlogp, entropy = distribution.log_prob_and_entropy(params, mb.actions)
        logratio = newlogp - mb.logprobs
        ratio = logratio.exp()
    with torch.no_grad():
        mode = getattr(t, "overlap_advantages", "learner")
        if mb.collector_ratio is None or mode == "learner":
            adv = compute_advantages(mb.values, mb.rewards, mb.dones, ratio.detach(), t.gamma,
                                     t.gae_lambda, t.rho_clip, t.c_clip)
            returns = adv + mb.values[:, :-1]
        else:   # a stale batch's advantages corrected to the collector (stale_batch.py)
            adv, returns = stale_advantages(mb.values, mb.rewards, mb.dones, ratio.detach(),
                                            mb.collector_ratio, mode, t.gamma, t.gae_lambda,
                                            t.rho_clip, t.c_clip)
        masks = mb.masks
        # a stale batch (train.overlap) normalises by the recomputed advantages' own moments:
        # with the drawn estimates' moments the LSTM sanity env stops learning on some seeds
        drawn = mb.advantages if mb.collector_ratio is None else adv
        job = mb.job if mb.job is not None else minibatch_moments(
            drawn, masks, mb.weight_peak, ranks, moments=t.norm_adv)
        count = job.count
        weights = mb.weights if job.weight_scale is None else mb.weights * job.weight_scale
        weight_cap = getattr(t, "overlap_weight_cap", WEIGHT_CAP)
        if not in_c:
            adv_n = (adv - job.mean) / (job.var.sqrt() + 1e-8) if t.norm_adv else adv
            adv_w = adv_n * weights.unsqueeze(1)
            if mb.collector_ratio is not None:   # an older policy collected it (stale_batch.py)
                weight, low, high = collector_terms(mb.collector_ratio, t.clip_coef, weight_cap)
                if getattr(t, "overlap_weight_norm", False):
                    weight = self_normalised(weight, masks, ranks)
                adv_w = adv_w * weight
    if in_c:    # the same terms and their gradients in one C pass
        loss, stats = loss_head.loss_and_stats(distribution, params, newvalues, head, mb, adv,
                                               returns, job, weights, t, weight_cap,
                                               COLLECTOR_CLIP)
        return loss, stats, adv
    pg1 = -adv_w * ratio
    if mb.collector_ratio is None:
        pg2 = -adv_w * ratio.clamp(1.0 - t.clip_coef, 1.0 + t.clip_coef)
    else:
        pg2 = -adv_w * torch.minimum(torch.maximum(ratio, low), high)
    pg_loss = _masked_mean(torch.max(pg1, pg2), masks, count)

    old_values = mb.values[:, :-1]
    v_err = (newvalues - returns).square()
    if t.vf_clip_coef > 0:
        clipped = old_values + (newvalues - old_values).clamp(-t.vf_clip_coef, t.vf_clip_coef)
        v_err = torch.max(v_err, (clipped - returns).square())
    v_loss = 0.5 * _masked_mean(v_err, masks, count)
    ent = _masked_mean(entropy, masks, count)
    loss = pg_loss + t.vf_coef * v_loss - t.ent_coef * ent

    with torch.no_grad():
        stats = {
            "policy": pg_loss.detach(), "value": v_loss.detach(), "entropy": ent.detach(),
            "approx_kl": _masked_mean((ratio - 1.0) - logratio, masks, count),
            "clipfrac": _masked_mean(((ratio - 1.0).abs() > t.clip_coef).float(), masks, count),
            "ratio": _masked_mean(ratio, masks, count),
        }
    return loss, stats, adv


# ---------------------------------------------------------------------------------------------
# Optimizer, device, seeds
# ---------------------------------------------------------------------------------------------

class _Optimizers:
    """Several optimizers stepped as one (Muon for matrices + Adam for the rest)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            for o in self.optimizers:
                o.zero_grad(set_to_none=False)
            return
        # what Optimizer.zero_grad(set_to_none=True) does, without its profiling wrapper
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state["optimizers"]
        if len(saved) != len(self.optimizers):
            raise CheckpointError(f"the checkpoint holds {len(saved)} optimizer(s) but this "
                                  f"config builds {len(self.optimizers)}: was train.optimizer "
                                  f"changed?")
        for o, s in zip(self.optimizers, saved):
            settings = [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
            o.load_state_dict(s)
            # a checkpoint's groups carry the settings (betas, eps, momentum, weight decay) and
            # the kernel choice of the run and code that saved it: keep this config's
            for g, own in zip(o.param_groups, settings):
                g.update(own)


def make_optimizer(policy: nn.Module, t: Any) -> _Optimizers:
    """Adam over every parameter, or (``optimizer = "muon"``) ``torch.optim.Muon`` over the 2-D
    weight matrices and Adam over the rest (biases, gains, log-std). Muon's learning rate is
    adjusted to match Adam's update RMS, so one ``learning_rate`` serves both."""
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    adam_kw = dict(lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)
    if t.optimizer == "adam":
        return _Optimizers([fused_adam(params, **adam_kw)])
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"train.optimizer = 'muon' needs torch.optim.Muon, which torch gained "
                          f"in 2.9; this is torch {torch.__version__}. Fix: pip install "
                          f"'torch>=2.9', or use --train.optimizer adam")
    matrices = [p for p in params if p.ndim == 2]
    rest = [p for p in params if p.ndim != 2]
    optimizers: list[torch.optim.Optimizer] = []
    if matrices:
        optimizers.append(torch.optim.Muon(matrices, lr=t.learning_rate,
                                           weight_decay=t.weight_decay, momentum=t.muon_momentum,
                                           adjust_lr_fn="match_rms_adamw"))
    if rest:
        optimizers.append(fused_adam(rest, **adam_kw))
    return _Optimizers(optimizers)


def cosine_lr(base: float, progress: float) -> float:
    """``base`` decayed by a half cosine: ``base`` at progress 0, 0 at progress 1."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def resolve_device(name: str, cpu_only: bool = False) -> torch.device:
    """``auto`` -> cuda when available (and not ``cpu_only``: the fused rollout), else cpu;
    other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not cpu_only else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a torch device: use cpu, cuda, cuda:N "
                          f"or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available: use "
                          f"--train.device cpu")
    return device


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------

class ScoreWindow:
    """Mean score of (about) the most recent ``size`` episodes, from ``env.log()`` means.

    ``env.log()`` reports means over the episodes finished since the last call; each report is
    kept as (mean, count) and the oldest report is weighted down so the counts sum to ``size``.
    """

    def __init__(self, size: int = 100) -> None:
        self.size = size
        self.chunks: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def add(self, mean: float, n: float) -> None:
        if n <= 0:
            return
        self.chunks.append((float(mean), float(n)))
        self.total += n
        while self.chunks and self.total - self.chunks[0][1] >= self.size:
            self.total -= self.chunks.popleft()[1]

    def mean(self) -> float | None:
        if not self.chunks:
            return None
        excess = max(0.0, self.total - self.size)
        weighted = count = 0.0
        for i, (m, n) in enumerate(self.chunks):
            w = n - excess if i == 0 else n
            weighted += m * w
            count += w
        return weighted / count if count > 0 else None


class Trainer:
    """PPO on a vector env; see the module docstring for what each epoch does.

    Args:
        config: a checked :class:`~shoal.trainer.config.Config`.
        env: an already-built vector env to train on (default: ``shoal.make`` from the config).
            The trainer closes it when training ends.
        policy: an ``nn.Module`` following the policy contract, or a callable
            ``(observation_space, action_space) -> nn.Module`` (default: ``policy.name``).
        callback: called after every epoch as ``callback(trainer, metrics)``; returning True
            stops training after a checkpoint (as Ctrl-C does).
        checkpoint: a loaded checkpoint to continue from (see :meth:`resume`).
        run_dir: where to write the run (default: ``log.run_dir`` or runs/<env>-<timestamp>).
        trust_pickled_env_state: load the ``checkpoint``'s env state even when it is pickled
            Python envs (unpickling runs code the file names); without it such a run resumes
            with fresh episodes.
    """

    def __init__(self, config: Config, env: Any = None, policy: Any = None,
                 callback: Callable[["Trainer", dict], Any] | None = None,
                 checkpoint: Mapping[str, Any] | None = None, run_dir: str | None = None,
                 trust_pickled_env_state: bool = False) -> None:
        self.config = config
        self.trust_pickled_env_state = trust_pickled_env_state
        self.callback = callback
        t = config.train
        self.dist = connect()           # the ranks of a torchrun job; one process otherwise
        self.device = self.dist.device(resolve_device(t.device, cpu_only=t.rollout == "fused"))
        # "auto" becomes what this machine runs best; the run records (config.toml,
        # checkpoints) and resumes with that choice
        t.precision, self.precision_note = resolve_precision(t.precision, self.device)
        # torch's and numpy's global RNGs and torch's thread count are the trainer's only while
        # it works (building, training): the caller's are put back after (process_state.py)
        self.process_state = ProcessState(t.seed, t.torch_threads)
        with self.process_state.active():
            self._build(config, env, policy, checkpoint, run_dir)

    def _build(self, config: Config, env: Any, policy: Any,
               checkpoint: Mapping[str, Any] | None, run_dir: str | None) -> None:
        # ---- env ----
        if env is None:
            from ..vector import make as make_env

            kwargs = config.make_env_kwargs()
            kwargs["seed"] = self.dist.seed(kwargs["seed"])
            env = make_env(config.env.name, **kwargs)
            self.env_owned_seed = kwargs["seed"]
        else:
            config.env.name = config.env.name or getattr(env, "name", "custom")
            config.env.num_envs = int(getattr(env, "num_envs", config.env.num_envs))
            config.env.num_buffers = int(getattr(env, "num_buffers", 1))
            if not config.env.params:  # recorded in config.toml and checkpoints
                config.env.params = dict(getattr(env, "params", None) or {})
            self.env_owned_seed = self.dist.seed(int(getattr(env, "seed", config.env_seed())))
        self.env = env
        try:
            self._setup(policy, checkpoint, run_dir)
        except BaseException:
            self.close()
            raise

    def _setup(self, policy: Any, checkpoint: Mapping[str, Any] | None,
               run_dir: str | None) -> None:
        config, t, env = self.config, self.config.train, self.env
        self.S = int(env.num_agents)
        self.T = int(t.horizon)
        self.dist.check_same("agents x horizon per rank", (self.S, self.T),
                             "every rank needs the same env, env.num_envs and train.horizon")
        if self.precision_note:     # "auto" may choose differently on different machines
            self.dist.check_same("train.precision auto's choice", t.precision,
                                 "pass --train.precision float32 (or bfloat16) to every rank")
        if t.overlap and t.overlap_weight_norm and self.dist.world_size > 1:
            raise ConfigError(weight_norm_split_error(f"a job of {self.dist.world_size} ranks"))
        #: segments (rows of the storage) per minibatch
        self.segments = max(1, min(self.S, t.minibatch_size // self.T))
        why = pipeline_unavailable(t)
        if why is None and t.pipeline and self.segments % env.agents_per_env:
            why = (f"it collects minibatches env by env, but a minibatch of {self.segments} "
                   f"segments splits envs of {env.agents_per_env} agents (make minibatch_size "
                   f"/ horizon a multiple of {env.agents_per_env})")
        #: train.pipeline is on, and why it does not apply to this run ("" where it does)
        self.pipeline_note = "" if why is None else \
            f"note: train.pipeline is on but does not apply: {why}; the run is not pipelined"
        self.batch_size = self.S * self.T * self.dist.world_size    # the job's steps per epoch
        self.groups = list(env.agent_groups)

        # ---- policy, inference, optimizer ----
        obs_space, act_space = env.single_observation_space, env.single_action_space
        if policy is None:
            policy = make_policy(env, config.policy.name, hidden=config.policy.hidden)
        elif not isinstance(policy, nn.Module):
            policy = policy(obs_space, act_space)
        self.obs_norm = observation_normalizer_for(policy, t)
        self.policy = policy.to(self.device)
        self.dist.broadcast_parameters(self.policy)
        rank_seed = self.dist.seed(t.seed)
        self.action_generator = torch.Generator(device=self.device).manual_seed(rank_seed + 1)
        self.sampler_generator = torch.Generator(device=self.device).manual_seed(rank_seed + 2)
        self.inference = Inference(self.policy, act_space, self.device,
                                   generator=self.action_generator, precision=t.precision)
        self.distribution = self.inference.distribution
        try:
            env_masks = env_action_masks(env, t.action_masks, self.distribution)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.env_action_masks = None if env_masks is None else torch.from_numpy(env_masks)
        self.forward = torch.compile(self.policy) if t.compile else self.policy
        self.optimizer = make_optimizer(self.policy, t)

        # ---- storage (training device) and env views (CPU, no copies) ----
        self.state = policy_initial_state(self.policy, self.S, self.device)
        self.storage = RolloutStorage(
            self.S, self.T, tuple(obs_space.shape), _torch_dtype(env.observations.dtype),
            tuple(self.distribution.action_shape), self.distribution.action_dtype, self.state,
            self.device, 0 if env_masks is None else env_masks.shape[1])
        self.env_obs = torch.from_numpy(env.observations)
        self.env_rewards = torch.from_numpy(env.rewards)
        self.env_terminals = torch.from_numpy(env.terminals)
        self.env_truncations = torch.from_numpy(env.truncations)
        self.env_masks = torch.from_numpy(env.masks)
        self.ended = torch.zeros(self.S, dtype=torch.bool)      # terminal | truncated, per row
        self.upload = HostUpload(self.device)   # host -> device (pinned, async on CUDA)
        self.agent_rng = (AgentRng(self.S, rank_seed + 3)     # ranks: their own action noise
                          if t.action_rng == "agent" or t.rollout == "fused" else None)
        if t.overlap and t.rollout != "fused":
            raise ConfigError("train.overlap=true needs train.rollout='fused': with the torch "
                              "rollout pass --train.overlap false")
        if t.overlap_chunks > 1 and not t.overlap:
            raise ConfigError(f"train.overlap_chunks={t.overlap_chunks} needs train.overlap=true "
                              f"(it splits the batch collected during an update); set "
                              f"train.overlap_chunks=1 or train.overlap=true")
        self.fused = FusedRollout(self) if t.rollout == "fused" else None
        self.learner = make_learner(self) if t.learner_threads > 1 else None
        self.reward_scaler = ReturnScaler(self.S, t.gamma, self.device) if t.norm_reward else None

        # ---- counters and logs ----
        self.epoch = 0
        self.agent_steps = 0
        self.wall_before = 0.0          # seconds spent in earlier sessions of a resumed run
        self.scores = ScoreWindow(100)
        self.returns = ScoreWindow(100)   # episode returns, for envs whose score is not the return
        self.episodes_total = 0.0
        self.last_metrics: dict[str, Any] = {}
        self.num_epochs = max(1, math.ceil(t.total_steps / self.batch_size))
        self._env_time = 0.0
        self._session_start = time.perf_counter()
        self._session_steps0 = 0
        self.exact_resume = None
        self.resumed_from: str | None = None
        self.resume_note: str | None = None    # why a resume did not restore the env's state
        self.stopped_by: str | None = None     # SIGINT/SIGTERM when a signal stopped training
        # data-parallel: whether a stop signal arrived (read when the epoch's end is sent), and
        # the job's end of the last epoch (statistics, stop votes)
        self.stop_requested: Callable[[], bool] = lambda: False
        self.job_epoch: JobEpoch | None = None
        self.no_snapshot: str | None = None   # why the env cannot snapshot, once a save found out
        # inside run_epoch: the env and storage are past the state the counters describe
        self.mid_epoch = False

        # ---- run directory (rank 0's: only rank 0 writes) ----
        main = self.dist.is_main
        self.run_dir = self.dist.object_broadcast(
            run_dir or config.log.run_dir or (self._new_run_dir() if main else None))
        if main:
            os.makedirs(os.path.join(self.run_dir, "checkpoints"), exist_ok=True)
        config.log.run_dir = self.run_dir
        self.metrics_path = os.path.join(self.run_dir, "metrics.jsonl")

        if checkpoint is not None:
            run_state.restore(self, checkpoint)
        else:
            taken = main and os.path.exists(self.metrics_path) and \
                os.path.getsize(self.metrics_path) > 0
            if self.dist.any(taken):
                raise ConfigError(
                    f"{self.run_dir} already holds a run (metrics.jsonl): continue it with "
                    f"--resume {self.run_dir}, or choose another --run-dir")
            self._reset_env(self.env_owned_seed)
        if main:
            atomic_write_text(os.path.join(self.run_dir, "config.toml"), to_toml(config))

    def _new_run_dir(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(os.getcwd(), "runs", f"{run_dir_label(self.config.env.name)}-{stamp}")
        path, k = base, 1
        while os.path.exists(path):
            k += 1
            path = f"{base}-{k}"
        return path

    # ---- rollout ----

    def _reset_env(self, seed: int) -> None:
        """Resets the envs and lets the policy take the first step into slot 0."""
        self.env.reset(seed)
        if self.state is not None:
            for s in self.state:
                s.zero_()
        b = self.storage
        if self.fused is not None:
            b.starts[:, 0] = 1.0
            self.fused.act_first()
            return
        for _ in self.groups:
            _, _, _, _, _, rows = self.env.recv()
            b.starts[rows, 0] = 1.0
            self._act(rows, 0)

    def _act(self, rows: slice, t: int) -> None:
        """The policy acts on the observations of ``rows`` (already received) into slot ``t``,
        then those envs start stepping."""
        b = self.storage
        self.upload(b.obs[rows, t], self.env_obs, rows)
        self.upload(b.masks[rows, t], self.env_masks, rows)
        if self.env_action_masks is not None:
            self.upload(b.action_masks[rows, t], self.env_action_masks, rows)
        state_in = None if self.state is None else tuple(s[rows] for s in self.state)
        if state_in is not None:
            # the state the segment starting at this slot replays from
            target = b.state0 if t == 0 else (b.state0_next if t == self.T else None)
            if target is not None:
                for dst, src in zip(target, state_in):
                    dst[rows].copy_(src)
        uniforms = (None if self.agent_rng is None
                    else self.agent_rng.uniforms(rows, self.distribution.num_params))
        actions, logprobs, values, new_state = self.inference.act(
            b.obs[rows, t], state_in, b.starts[rows, t], uniforms,
            action_masks=None if self.env_action_masks is None else b.action_masks[rows, t])
        b.actions[rows, t] = actions
        b.logprobs[rows, t] = logprobs
        b.values[rows, t] = values
        if new_state is not None:
            for dst, src in zip(self.state, new_state):
                dst[rows].copy_(src)
        self.inference.env_actions(actions, out=self.env.actions[rows])
        t0 = time.perf_counter()
        self.env.send(self.env.actions[rows])
        self._env_time += time.perf_counter() - t0

    def _bootstrap_truncated(self, rows: slice, t: int) -> None:
        """``rewards[s, t] += γ·V(final_observation)`` for rows whose episode was truncated (not
        terminated) at step t, using the recurrent state the episode ended with."""
        trunc = self.env.truncations[rows]
        if not trunc.any():
            return
        local = np.flatnonzero(trunc & ~self.env.terminals[rows])
        if local.size == 0:
            return
        index = torch.from_numpy(local + rows.start)
        final = torch.from_numpy(self.env.final_observations[index.numpy()]).to(self.device)
        dev_index = index.to(self.device)
        state = None if self.state is None else tuple(s[dev_index] for s in self.state)
        with torch.inference_mode(), autocast(self.device, self.config.train.precision):
            _, values, _ = self.policy(final.unsqueeze(1), state, None)
        b = self.storage
        b.rewards[dev_index, t] += self.config.train.gamma * values.reshape(-1).float()

    def rollout(self) -> dict[str, float]:
        """Collects one ``[S, T]`` batch (slot 0 is already filled); returns episode stats."""
        b, env, T = self.storage, self.env, self.T
        if self.fused is not None:
            stats, env_seconds = self.fused.rollout()
            self._env_time += env_seconds
            return stats
        stats: dict[str, float] = {}
        for t in range(1, T + 1):
            for _ in self.groups:
                t0 = time.perf_counter()
                _, _, _, _, _, rows = env.recv()
                self._env_time += time.perf_counter() - t0
                # results of the actions taken at step t-1
                ended = self.ended[rows]
                torch.logical_or(self.env_terminals[rows], self.env_truncations[rows], out=ended)
                self.upload(b.rewards[rows, t - 1], self.env_rewards, rows)
                self.upload(b.dones[rows, t - 1], self.ended, rows)
                if self.reward_scaler is not None:
                    self.reward_scaler.scale_(b.rewards[rows, t - 1], b.dones[rows, t - 1], rows,
                                              b.masks[rows, t - 1])
                self.upload(b.starts[rows, t], self.ended, rows)
                self._bootstrap_truncated(rows, t - 1)
                if t == T:
                    # this group is not stepping now, so its episode stats can be read
                    merge_log(stats, env.log())
                self._act(rows, t)
        return stats

    # ---- update ----

    def update(self, episodes: dict[str, float] | None = None,
               anchor: PipelinedAnchor | None = None,
               acting: ActingRefresh | None = None,
               tail: TailThreads | None = None,
               ranges: RowRanges | None = None) -> dict[str, float]:
        """One pass (``update_epochs`` passes) of minibatch PPO over the batch just collected.
        ``episodes`` (this rank's episode statistics) come back under "episodes", merged over
        the ranks in the update's one closing collective. ``anchor`` (``train.overlap``: a
        :class:`~shoal.trainer.stale_batch.PipelinedAnchor`) anchors a stale batch minibatch by
        minibatch, ahead of the learner; ``acting`` (an
        :class:`~shoal.trainer.acting_refresh.ActingRefresh`) hands the weights after some of
        its gradient steps to the rollout thread, which acts the next batch with them; ``tail``
        (a :class:`~shoal.trainer.tail_threads.TailThreads`) runs its last steps on more torch
        threads once the rollout thread is done. ``ranges`` (``train.pipeline``: a
        :class:`~shoal.trainer.pipeline.RowRanges` with arrivals) is the batch's rows ranges
        as the rollout thread collects and prepares them: the update waits for each before its
        first minibatch reads it, and takes the batch's episode statistics once every range is
        in."""
        t, b = self.config.train, self.storage
        T, S = self.T, self.S
        progress = self.agent_steps / max(1, t.schedule_steps or t.total_steps)
        lr = cosine_lr(t.learning_rate, progress) if t.anneal_lr else t.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        beta = anneal_beta(t.prio_beta0, progress)

        masks = b.masks[:, :T]
        segments = self.segments
        # minibatches = "ranges": each range's advantages once it is taken (and collected)
        if ranges is None and t.minibatches == "ranges":
            ranges = RowRanges(b, segments, t, device=self.device)
        arrivals = None if ranges is None else ranges.arrivals
        if ranges is None:
            adv = compute_advantages(b.values, b.rewards, b.dones, None, t.gamma, t.gae_lambda,
                                     t.rho_clip, t.c_clip, out=b.advantages)
            priorities = segment_priorities(adv, masks, t.prio_alpha)
        else:
            adv, priorities = b.advantages, None

        passes = None
        if t.minibatches == "passes":
            passes = segment_passes(S, segments, t.update_epochs, self.sampler_generator,
                                    self.device)
        if ranges is not None:
            num_minibatches = ranges.count * t.update_epochs
        else:
            num_minibatches = len(passes) if passes else max(1, S // segments) * t.update_epochs
        if acting is not None:
            acting.start(num_minibatches)
        if tail is not None:
            tail.start(num_minibatches)
        totals: dict[str, torch.Tensor] = {}
        grad_norm_sum = torch.zeros((), device=self.device)
        self.policy.train()
        done = 0
        ending: EpochEnd | None = None     # data-parallel: this rank's end of the epoch

        def draw(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            """Minibatch k's segments, their importance weights and (data-parallel) the raw
            weight these were divided by."""
            if ranges is not None:
                return ranges.take(k)
            if passes:
                return passes[k], torch.ones(len(passes[k]), device=self.device), None
            d = sample_segments(adv, masks, segments, t.prio_alpha, beta,
                                self.sampler_generator, priorities=priorities)
            return d.indices, d.weights, self.dist.weight_peak(d, S, beta)

        def anchored_explained() -> list[float]:
            """Of the learner's values of every segment (the rollout thread calls it once all
            are anchored)."""
            return variance_parts(b.values[:, :T], compute_advantages(
                b.values, b.rewards, b.dones, None, t.gamma, t.gae_lambda, t.rho_clip, t.c_clip)
                + b.values[:, :T], masks)

        take = draw
        # a stale batch anchored minibatch by minibatch: the whole schedule first, so the
        # anchoring works ahead of it (its draws do not read the advantages above); the rollout
        # thread also gathers minibatches 1.. once their segments are anchored, and ends with
        # the anchored values' explained variance (anchor.finish() returns it)
        if anchor is not None:
            schedule = [draw(k) for k in range(num_minibatches)]
            anchor.start([d[0] for d in schedule],
                         lambda k: Minibatch(b, *schedule[k], advantages=False),
                         anchored_explained)
            anchor.minibatch_ready(0)
            take = schedule.__getitem__
        mb = Minibatch(b, *take(0))
        # moments known before the replay: the drawn estimates' (a stale batch's come from its
        # replay, so with train.overlap ppo_loss meets the other ranks for them itself)
        ahead = self.dist.distributed and b.collector_ratio is None
        if ahead:   # one all-gather, in flight during the replay; later ones ride in gradient sums
            mb.job = minibatch_moments(mb.advantages, mb.masks, mb.weight_peak, self.dist,
                                       wait=False)
        # of the batch's estimates before the minibatches refresh them
        # (a pipelined anchor's: anchored_explained, once every segment is anchored)
        # (ranges: each range's share as it is taken, ranges.explained())
        explained: list[float] | None = None if anchor is not None or ranges is not None \
            else variance_parts(b.values[:, :T], adv + b.values[:, :T], masks)

        for k in range(num_minibatches):
            if self.learner is not None:    # train.learner_threads: shards on threads
                sharded = self.learner.loss_and_gradients(mb, t.target_kl)
                if sharded is None:
                    break
                stats, mb_adv = sharded
            else:
                loss, stats, mb_adv = ppo_loss(self.policy, self.distribution, mb, t,
                                               self.forward, self.dist)
                # each rank's approx_kl is its share of the job's mean: the sum decides on
                # every rank
                if t.target_kl > 0 and \
                        float(self.dist.sum(stats["approx_kl"].detach().reshape(1))) > t.target_kl:
                    break  # the policy already moved far enough from the one that collected
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            done += 1
            params = [p for p in self.policy.parameters() if p.grad is not None]
            # the freshest advantage estimates feed the next draws' priorities
            adv[mb.idx] = mb_adv
            if priorities is not None and take is draw:  # (a schedule drawn up front, or
                # ranges, reads them no more)
                priorities[mb.idx] = segment_priorities(mb_adv, mb.masks, t.prio_alpha)
            nxt = take(k + 1) if k + 1 < num_minibatches else None
            # data-parallel: the next minibatch's share of the job's statistics rides in this
            # gradient sum (one meeting point per minibatch); its tensors are gathered while
            # the sum travels
            share = None if nxt is None or not ahead else \
                rank_share(adv[nxt[0]], masks[nxt[0]], nxt[2])
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            if nxt is None and self.dist.distributed:   # and so does the end of the epoch
                if anchor is not None:  # which carries the anchored values' explained variance
                    explained = anchor.finish()
                elif ranges is not None:
                    explained = ranges.explained()
                    if arrivals is not None:    # (every range is in: the batch's episodes)
                        episodes = arrivals.episodes
                ending = self._epoch_end(totals, done, explained, episodes)
            summing = self.dist.sum_gradients(params, wait=False, next_share=share,
                                              epoch_end=ending)
            following = None
            if nxt is not None:     # gathered by the rollout thread where it can be: a stale
                # batch's anchored minibatch (overlap), a range as it came in (train.pipeline)
                if anchor is not None:
                    following = anchor.minibatch_ready(k + 1)
                    if following is not None:   # its advantages as this step left them
                        following.advantages = b.advantages[following.idx]
                elif ranges is not None:
                    following = ranges.gathered(k + 1)
                if following is None:
                    following = Minibatch(b, *nxt)
            job = summing.wait()                # the job's gradient on every rank
            if following is not None and ahead:
                following.job = job
            if t.max_grad_norm > 0:
                grad_norm = clip_grad_norm(params, t.max_grad_norm)
            else:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([p.grad.detach().norm() for p in params]))
            self.optimizer.step()
            if acting is not None:
                acting.stepped(done)
            if tail is not None:
                tail.stepped(done, following)
            grad_norm_sum += grad_norm.detach()
            mb = following
        if acting is not None:
            acting.finish()
        if anchor is not None and ending is None:
            explained = anchor.finish()
        elif ranges is not None and ending is None:   # (stopped early: the ranges not taken too)
            explained = ranges.explained()
            if arrivals is not None:
                episodes = arrivals.episodes
        out = {k: float(v) / max(1, done) for k, v in totals.items()}
        if self.dist.distributed:   # each rank's terms are its share of the job's means
            if ending is None:      # stopped early (target_kl): no gradient sum carried it
                ending = self._epoch_end(totals, done, explained, episodes)
                ending.gather()
            self.job_epoch = ending.job
            out, explained_job, episodes = ending.job.losses, ending.job.explained, \
                ending.job.episodes
        else:
            explained_job = explained_from_parts([explained])
        out["grad_norm"] = float(grad_norm_sum) / max(1, done)
        out["minibatches"] = done
        out["explained_variance"] = explained_job
        if episodes is not None:
            out["episodes"] = episodes
        out["lr"] = lr
        out["beta"] = beta
        if self.obs_norm is not None:   # after the update: it scored the batch as it was acted
            update_from_observations(self.policy, b.obs[:, :T], masks, self.dist)
        return out

    def _epoch_end(self, totals: Mapping[str, torch.Tensor], done: int,
                   explained: list[float], episodes: dict[str, float] | None) -> EpochEnd:
        """This rank's end of the epoch (data-parallel): its loss terms, explained-variance
        moments, episode statistics, and whether a signal asked it to stop."""
        return EpochEnd(self.dist, {k: float(v) / max(1, done) for k, v in totals.items()},
                        explained, episodes, self.stop_requested(), self.callback is not None)

    # ---- the loop ----

    def train(self) -> dict[str, Any]:
        """Runs until ``train.total_steps`` agent steps; returns the run summary (also written to
        ``summary.json``). Closes the env when done: a finished trainer cannot train again
        (:meth:`resume` continues its run)."""
        if getattr(self, "closed", False):
            raise RuntimeError(f"this trainer has trained and closed its env: continue the run "
                               f"with Trainer.resume({self.run_dir!r}) (shoal train --resume "
                               f"{self.run_dir})")
        with self.process_state.active():
            return self._train()

    def _train(self) -> dict[str, Any]:
        log, main = self.config.log, self.dist.is_main
        dash = Dashboard(log.dashboard if main else "off", title=f"shoal train "
                         f"{self.config.env.name}  ({self.run_dir})",
                         print_interval=log.print_interval)
        writers = extra_loggers(self.config, self.run_dir) if main else []
        finished = False
        self._session_start = time.perf_counter()
        self._session_steps0 = self.agent_steps
        try:
            dash.start()
            if self.precision_note:
                dash.message(self.precision_note)
            if self.pipeline_note:
                dash.message(self.pipeline_note)
            if self.resumed_from:
                dash.message(f"resumed from {self.resumed_from} at epoch {self.epoch}"
                             + ("" if self.exact_resume else
                                " (env state not restored: episodes in progress restarted)")
                             + (f"\nnote: {self.resume_note}" if self.resume_note else ""))
            with deferred_stop(lambda text: print(text, flush=True)) as interrupted, \
                    open(self.metrics_path if main else os.devnull, "a",
                         encoding="utf-8") as metrics_file:
                # under torchrun also true once its agent exited: no rank runs on orphaned
                interrupted = self.dist.watch_agent(interrupted)
                self.stop_requested = interrupted
                last_note, noted_fresh = -math.inf, False
                while self.agent_steps < self.config.train.total_steps:
                    metrics = self.run_epoch()
                    metrics_file.write(json.dumps(metrics) + "\n")
                    metrics_file.flush()
                    dash.update(metrics)
                    tail_note = self.fused.tail.take_note() if self.fused and self.fused.tail \
                        else None
                    if tail_note:
                        dash.message(tail_note)
                    for w in writers:
                        w(metrics)
                    stop = bool(self.callback(self, metrics)) if self.callback else False
                    if not self.dist.distributed:
                        stop = stop or interrupted()
                    elif self.job_epoch.stop:   # the ranks' signals rode in the update's end
                        stop = True
                    elif self.job_epoch.callback:   # all ranks stop together
                        stop = self.dist.any(stop or interrupted())
                    done = self.agent_steps >= self.config.train.total_steps
                    if done or stop or self.epoch % log.checkpoint_interval == 0:
                        path = self.save()
                        if self.no_snapshot and not noted_fresh:
                            dash.message(f"note: checkpoints hold no env state ({self.no_snapshot})"
                                         f": {FRESH_EPISODES_NOTE}")
                            noted_fresh = True
                        if log.video and main:
                            from ..tools.watch import record_checkpoint_video

                            note = record_checkpoint_video(path, self.run_dir, log.video_steps)
                            if note:
                                dash.message(note)
                        # at most a line a minute: short epochs checkpoint every few seconds
                        if not done and time.monotonic() - last_note >= CHECKPOINT_NOTE_SECONDS:
                            dash.message(f"checkpoint: {path}")
                            last_note = time.monotonic()
                    if stop:
                        if interrupted():
                            self.stopped_by = interrupted.name
                        break
                finished = self.agent_steps >= self.config.train.total_steps
        except KeyboardInterrupt:
            # a second Ctrl-C (or one outside the main thread): the epoch in progress is lost,
            # the last boundary's model is kept only if the update had not started
            dash.stop()
            run_state.emergency_save(self)
            raise
        finally:
            dash.stop()
            self.close()
            for w in writers:
                close = getattr(w, "close", None)
                if close:
                    close()
        summary = self.summary(finished)
        if main and dash.mode != "off":
            print(summary_line(summary), flush=True)
        return summary

    def run_epoch(self) -> dict[str, Any]:
        """Rollout + update + bookkeeping for one epoch; returns its metrics."""
        start = time.perf_counter()
        self.mid_epoch = True
        self._env_time = 0.0
        self.dist.comm_seconds = 0.0
        if self.fused is not None and self.fused.overlap:
            episodes, losses, rollout_time, learn_time = self.fused.overlapped_epoch()
        elif self.fused is not None and self.fused.pipeline:
            episodes, losses, rollout_time, learn_time = self.fused.pipelined_epoch()
        else:
            t0 = time.perf_counter()
            episodes = self.rollout()
            rollout_time = time.perf_counter() - t0
            t1 = time.perf_counter()
            losses = self.update(episodes)
            episodes = losses.pop("episodes")   # every rank's
            self.storage.shift()
            learn_time = time.perf_counter() - t1
        self.epoch += 1
        self.agent_steps += self.batch_size
        self.mid_epoch = False
        if episodes.get("n", 0) > 0:
            self.scores.add(episodes.get("score", episodes.get("episode_return", 0.0)),
                            episodes["n"])
            if "episode_return" in episodes:
                self.returns.add(episodes["episode_return"], episodes["n"])
            self.episodes_total += episodes["n"]
        epoch_time = time.perf_counter() - start
        elapsed = self.wall_before + (time.perf_counter() - self._session_start)
        done_steps = self.agent_steps
        session_steps = max(1, done_steps - self._session_steps0)
        session_secs = max(1e-9, time.perf_counter() - self._session_start)
        rate = session_steps / session_secs
        times = {
            "env": self._env_time,
            "inference": rollout_time - self._env_time,
            "learn": learn_time,
        }
        if self.dist.distributed:   # time inside collectives, out of learn (and the gather)
            times["learn"] = max(0.0, learn_time - self.dist.comm_seconds)
            times["comm"] = self.dist.comm_seconds
        times["other"] = max(0.0, epoch_time - sum(times.values()))
        score100 = self.scores.mean()
        metrics = {
            "epoch": self.epoch,
            "agent_steps": self.agent_steps,
            "total_steps": self.config.train.total_steps,
            "sps": self.batch_size / max(epoch_time, 1e-9),
            "sps_avg": rate,
            "elapsed": elapsed,
            "remaining": max(0, self.config.train.total_steps - done_steps) / max(rate, 1e-9),
            "time": times,
            "lr": losses.pop("lr"),
            "beta": losses.pop("beta"),
            "losses": losses,
            "episodes": episodes,
            "score100": score100,
            "episodes_total": self.episodes_total,
        }
        self.last_metrics = metrics
        return metrics

    # ---- summary, checkpoints ----

    def summary(self, finished: bool = True) -> dict[str, Any]:
        """The run summary; also written to ``<run_dir>/summary.json``."""
        wall = self.wall_before + (time.perf_counter() - self._session_start)
        summary = {
            "env": self.config.env.name,
            "agent_steps": self.agent_steps,
            "epochs": self.epoch,
            "wall_seconds": wall,
            "sps": self.agent_steps / max(wall, 1e-9),
            "score": self.scores.mean(),
            "episodes": int(self.episodes_total),
            "episode_return": self.returns.mean(),
            "finished": finished,
            "run_dir": self.run_dir,
            "checkpoint": getattr(self, "last_checkpoint", None),
            "batch_size": self.batch_size,
            "exact_resume": self.exact_resume,
        }
        if self.stopped_by:
            summary["stopped_by"] = self.stopped_by
        if self.no_snapshot:
            summary["resume_note"] = f"checkpoints hold no env state: {FRESH_EPISODES_NOTE}"
        if self.fused is not None and self.fused.tail is not None:   # (this session's)
            summary["tail_updates"] = self.fused.tail.counts()
        if self.dist.is_main:
            atomic_write_text(os.path.join(self.run_dir, "summary.json"),
                              json.dumps(summary, indent=2) + "\n")
        return summary

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (tensors on the CPU, plain values otherwise). In a
        data-parallel job every rank must call it: rank 0's RNGs, carry and env state sit at the
        top level as in one process, the other ranks' under ``ranks`` (rank 1 first)."""
        return run_state.state_dict(self)

    def save(self) -> str:
        """Writes a checkpoint for the current epoch boundary; returns its path."""
        return run_state.save(self)

    @classmethod
    def resume(cls, path: str, env_name: str | None = None, files: list[str] | tuple = (),
               overrides: Mapping[str, Any] | None = None, env: Any = None, policy: Any = None,
               callback: Callable[["Trainer", dict], Any] | None = None,
               origin: str = "override", trust_pickled_env_state: bool = False) -> "Trainer":
        """A trainer continuing the run at ``path`` (a run directory: its newest checkpoint; or
        a checkpoint file). ``files``/``overrides`` change the saved config (e.g. a larger
        ``train.total_steps``); resume is exact only without them. Python envs' saved state is
        pickled and is loaded only with ``trust_pickled_env_state=True`` (unpickling runs code
        the file names: only for checkpoints you made or trust); without it the episodes
        restart."""
        coll = connect()
        # rank 0 reads the file (the run directory may exist on its machine only)
        ckpt = coll.object_broadcast(load_checkpoint(path) if coll.is_main else None)
        cfg, run_dir = run_state.resume_config(ckpt, path, env_name, files, overrides, env, origin)
        return cls(cfg, env=env, policy=policy, callback=callback, checkpoint=ckpt,
                   run_dir=run_dir, trust_pickled_env_state=trust_pickled_env_state)

    def close(self) -> None:
        """Closes the env (stops its workers) and ends the process group this trainer started;
        safe to call twice."""
        # the overlapped rollout thread first: a hard interrupt can leave it stepping the envs
        if getattr(self, "fused", None) is not None:
            self.fused.close()
        env = getattr(self, "env", None)
        if env is not None:
            env.close()
        if getattr(self, "learner", None) is not None:
            self.learner.close()
        self.dist.close()
        self.closed = True
