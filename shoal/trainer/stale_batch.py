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
   weighted by that ratio truncated at ``train.overlap_weight_cap`` (:data:`WEIGHT_CAP` by
   default; importance sampling from the collector's actions to the learner's policy; the
   truncation bounds the variance of rare actions, and a cap of 1 keeps the weights from
   pushing the actions the last update favoured further, which lowers the policy's entropy on
   breakout: docs/train.md), and the clip window, ±``clip_coef`` around the learner's policy, is also kept within
   ±:data:`COLLECTOR_CLIP` × ``clip_coef`` of the collector's (so a step whose action the learner
   already moved far from the collector cannot move further on this stale sample; without it
   the LSTM sanity env ``recall`` falls back from 1.0 late in some runs).

Two options, off by default: ``train.overlap_advantages`` (:func:`stale_advantages`) corrects
the stale batch's V-trace advantages and value targets to the collector's actions (by default
they use the ratio to the learner's anchor, as if the learner had acted the batch), and
``train.overlap_weight_norm`` (:func:`self_normalised`) divides the truncated weights by their
minibatch mean. Measurements: BENCHMARKS.md, "Per-step lag of the overlapped path".

When the collector is the learner (the synchronous paths) ``collector_ratio`` is None and the
loss is the plain PPO loss, unchanged (neither option applies).

Off the learner's critical path (:class:`PipelinedAnchor`). A minibatch's loss reads only its
own segments' anchored log-probs and values (a stale batch normalises by the minibatch's
recomputed advantages, not the drawn ones). So when the update's minibatches do not depend on
the batch's advantages (``minibatches = "passes"``, or draws with ``prio_alpha = 0`` and
``target_kl = 0``) and the policy is feedforward (:func:`pipelined_anchoring`), the whole
schedule is drawn first and the segments are anchored minibatch by minibatch: the learner
anchors the first minibatch's, the rollout thread the others' ahead of the learner, then
the segments no minibatch drew (only the update's explained variance reads them), then
collects the next batch. Every segment gets the forward pass of the same weights that
:func:`anchor_at_learner` gives it (a copy of the learner's weights at the start of the
update), up to float32 rounding; the work is split by the schedule, not by timing, and the
learner waits for a minibatch's segments before it gathers them, so a run is the same under a
seed whatever the threads do. Otherwise the learner anchors the whole batch first
(:func:`anchor_at_learner`).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import torch

from .action_masks import mask_logits
from .advantage import compute_advantages
from .config import weight_norm_split_error
from .policies import autocast

__all__ = ["WEIGHT_CAP", "COLLECTOR_CLIP", "ADVANTAGE_MODES", "anchor_at_learner",
           "anchor_segments", "collector_terms", "self_normalised", "stale_advantages",
           "pipelined_anchoring", "PipelinedAnchor"]

#: truncation of the importance weight ``π_learner / π_collector`` of a step's policy term
#: (the default of ``train.overlap_weight_cap``)
WEIGHT_CAP = 2.0
#: the clip window also stays within ±COLLECTOR_CLIP x clip_coef of the collector's policy
COLLECTOR_CLIP = 2.0
#: the values of ``train.overlap_advantages`` (:func:`stale_advantages`)
ADVANTAGE_MODES = ("learner", "collector", "collector_later")


def anchor_at_learner(policy: torch.nn.Module, distribution: Any, storage: Any,
                      precision: str = "float32") -> None:
    """Replaces ``storage``'s log-probs and values (all ``T+1`` slots) by the learner's
    (``policy``'s current weights, replayed over whole segments from the stored start state, as
    training replays them, in the learner's ``precision``) and sets ``storage.collector_ratio``
    ``[S, T]`` to ``π_learner / π_collector`` of the stored actions. With
    ``precision="bfloat16"`` and a float32 collector (the C policy) the ratio also carries the
    two precisions' rounding differences, which the importance weights handle like any other
    difference between the two policies."""
    b, T = storage, storage.T
    with torch.no_grad(), autocast(b.obs.device, precision):
        params, values, _ = policy(b.obs, b.state0, b.starts)
        params = mask_logits(params.float(), b.action_masks, distribution.nvec)
        logprobs, _ = distribution.log_prob_and_entropy(params, b.actions)
    b.collector_ratio = (logprobs[:, :T] - b.logprobs[:, :T]).exp()
    b.logprobs.copy_(logprobs)
    b.values.copy_(values.float().reshape(b.values.shape))


def anchor_segments(policy: torch.nn.Module, distribution: Any, storage: Any,
                    idx: torch.Tensor, precision: str = "float32") -> None:
    """:func:`anchor_at_learner` for the segments (rows) ``idx`` of ``storage`` only; its
    ``collector_ratio`` must be allocated (``[S, T]``). Each row gets the numbers the whole-batch
    pass gives it, up to float32 rounding (a matrix product over fewer rows can round
    differently)."""
    b, T = storage, storage.T
    state0 = None if b.state0 is None else tuple(s[idx] for s in b.state0)
    with torch.no_grad(), autocast(b.obs.device, precision):
        params, values, _ = policy(b.obs[idx], state0, b.starts[idx])
        params = mask_logits(params.float(), b.action_masks[idx], distribution.nvec)
        logprobs, _ = distribution.log_prob_and_entropy(params, b.actions[idx])
        b.collector_ratio[idx] = (logprobs[:, :T] - b.logprobs[idx, :T]).exp()
        b.logprobs[idx] = logprobs
        b.values[idx] = values.float().reshape(len(idx), T + 1)


def pipelined_anchoring(train: Any, storage: Any) -> bool:
    """Whether an update with these settings (a :class:`~shoal.trainer.config.TrainConfig`) of
    a stale batch in ``storage`` is anchored minibatch by minibatch (:class:`PipelinedAnchor`):
    its minibatches must not depend on the anchored advantages (passes, ranges, or uniform
    draws), drawing them all first must draw what the update would (no early stop on
    ``target_kl`` between draws), and the policy must be feedforward. A recurrent policy's pass over part of the
    segments differs from the whole batch's by float32 rounding (its products are shaped by the
    number of segments), and the LSTM sanity env's late learning turns on such differences (one
    seed in three of its synchronous runs falls back from a solved 1.0 late as well): recurrent
    policies keep the whole-batch pass until that is understood."""
    if storage.state0 is not None:
        return False
    return train.minibatches in ("passes", "ranges") or (train.prio_alpha == 0
                                                         and train.target_kl == 0)


class PipelinedAnchor:
    """Anchors a stale batch minibatch by minibatch, ahead of the update (module docstring).

    ``policy`` holds the learner's weights at the start of the update (a copy the update does
    not change); ``precision`` is the learner's (``train.precision``). The trainer calls
    :meth:`start` with the update's schedule, then :meth:`minibatch_ready` before gathering each
    minibatch and :meth:`finish` at the end; a second thread calls :meth:`work_ahead` and
    :meth:`work_rest`, then collects the next batch (its chunks follow the learner's steps:
    :mod:`~shoal.trainer.acting_refresh`).

    With a ``gather`` function (:meth:`start`) the second thread also gathers minibatches 1..
    (their rows copied out of the storage: ~5% of the update's CPU time on breakout) right
    after anchoring their segments, and :meth:`minibatch_ready` hands them to the learner. A
    minibatch's rows are final once its segments are anchored (the learner writes only the
    storage's advantages during the update, and gathers those itself), so it holds the numbers
    the learner would have gathered, whichever thread runs first.
    """

    def __init__(self, policy: torch.nn.Module, distribution: Any, storage: Any,
                 precision: str = "float32") -> None:
        self.policy, self.distribution, self.storage = policy, distribution, storage
        self.precision = precision
        self.chunks: list[torch.Tensor] = []
        self._done: list[threading.Event] = []
        self._scheduled = threading.Event()
        self._gather: Callable[[int], Any] | None = None
        self._gathered: list[Any] = []
        self._summarise: Callable[[], Any] | None = None
        self._summary: Any = None
        # set once the learner anchored the first chunk (or stopped): minibatches that draw
        # its segments are gathered after it
        self._first_anchored = threading.Event()
        self._stopped = False
        self._error: BaseException | None = None

    def start(self, schedule: Sequence[torch.Tensor],
              gather: Callable[[int], Any] | None = None,
              summarise: Callable[[], Any] | None = None) -> None:
        """Learner, before the first minibatch: ``schedule`` lists every minibatch's segments
        in order. Chunk k is the segments of minibatch k that no earlier one has; the last chunk
        holds the segments no minibatch drew. ``gather(k)``, if given, returns minibatch k
        gathered from the storage; the second thread calls it for k = 1.. once the minibatch's
        segments are anchored, and :meth:`minibatch_ready` returns what it gave.
        ``summarise()``, if given, reads the whole anchored storage; the second thread calls it
        once every segment is anchored, and :meth:`finish` returns what it gave."""
        b = self.storage
        self._gather, self._summarise, self._summary = gather, summarise, None
        self._gathered = [None] * len(schedule)
        seen = torch.zeros(b.S, dtype=torch.bool)
        for idx in schedule:
            idx = idx.cpu()
            new = idx[~seen[idx]]
            seen[new] = True
            self.chunks.append(new)
        self.chunks.append((~seen).nonzero().squeeze(1))
        self._done = [threading.Event() for _ in self.chunks]
        b.collector_ratio = torch.empty(b.S, b.T, device=b.logprobs.device)
        self._scheduled.set()

    def _anchor(self, k: int) -> None:
        if len(self.chunks[k]):
            anchor_segments(self.policy, self.distribution, self.storage,
                            self.chunks[k].to(self.storage.logprobs.device), self.precision)
        if k == 0:
            self._first_anchored.set()
        elif self._gather is not None and k < len(self._gathered):
            # its segments are in chunks 0..k: this thread anchored 1..k, the learner 0
            self._first_anchored.wait()
            if self._stopped:
                return
            self._gathered[k] = self._gather(k)
        if k == len(self.chunks) - 1 and self._summarise is not None:
            self._first_anchored.wait()     # (and this thread anchored the others)
            if self._stopped:
                return
            self._summary = self._summarise()
        self._done[k].set()

    def _wait(self, k: int) -> None:
        self._done[k].wait()
        if self._error is not None:
            raise RuntimeError("the rollout thread failed while the update waited for it to "
                               "anchor the batch") from self._error

    def minibatch_ready(self, k: int) -> Any:
        """Learner: returns once minibatch ``k``'s segments are anchored (the first minibatch's
        are anchored here, on the learner's thread), with what ``gather(k)`` gave for ``k`` > 0
        (None for 0 or without ``gather``)."""
        if k == 0:
            self._anchor(0)
            return None
        self._wait(k)
        gathered, self._gathered[k] = self._gathered[k], None   # (the learner's from now on)
        return gathered

    def finish(self) -> Any:
        """Learner, at the end of the update: returns once every segment is anchored, with
        what ``summarise()`` gave (None without it)."""
        for k in range(len(self._done)):
            self._wait(k)
        return self._summary

    def work_ahead(self) -> None:
        """Second thread: anchors the new segments of every minibatch but the first, in the
        update's order."""
        self._scheduled.wait()
        for k in range(1, len(self.chunks) - 1):
            if self._stopped:
                return
            self._guarded(k)

    def work_rest(self) -> None:
        """Second thread, after :meth:`work_ahead`: anchors the segments no minibatch drew."""
        if self._scheduled.is_set() and not self._stopped:
            self._guarded(len(self.chunks) - 1)

    def _guarded(self, k: int) -> None:
        try:
            self._anchor(k)
        except BaseException as exc:
            self.fail(exc)
            raise

    def fail(self, exc: BaseException) -> None:
        """Second thread, on an error: the learner raises it instead of waiting forever."""
        self._error = exc
        for event in self._done:
            event.set()

    def stop(self) -> None:
        """Learner, when the update ends (or fails): the second thread anchors nothing more and
        no longer waits for a schedule."""
        self._stopped = True
        self._scheduled.set()
        self._first_anchored.set()


def collector_terms(collector_ratio: torch.Tensor, clip_coef: float,
                    weight_cap: float = WEIGHT_CAP
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, low, high)`` for steps whose learner-to-collector ratio is
    ``collector_ratio``: the importance weight of the policy term truncated at ``weight_cap``
    (``train.overlap_weight_cap``), and the clip window of the ratio to the learner
    (±``clip_coef``, narrowed to keep the ratio to the collector within ±``COLLECTOR_CLIP`` x
    ``clip_coef``)."""
    weight = collector_ratio.clamp(max=weight_cap)
    # a ratio that underflowed to 0 would give 0/0 = NaN at clip_coef = 1 / COLLECTOR_CLIP
    ratio = collector_ratio.clamp(min=torch.finfo(collector_ratio.dtype).tiny)
    low = torch.clamp((1.0 - COLLECTOR_CLIP * clip_coef) / ratio, min=1.0 - clip_coef)
    high = torch.clamp((1.0 + COLLECTOR_CLIP * clip_coef) / ratio, max=1.0 + clip_coef)
    return weight, low, high


def self_normalised(weight: torch.Tensor, masks: torch.Tensor, ranks: Any = None
                    ) -> torch.Tensor:
    """``weight`` divided by its mean over the unmasked steps (``masks > 0``) of the minibatch
    (``train.overlap_weight_norm``): the truncated importance weights then only re-weight the
    steps against each other and average 1, so the truncation does not shrink the policy term
    against the entropy and value terms (a common scale of the whole loss Adam would undo; a
    scale of one term it does not). Needs the whole minibatch: ``ranks`` (the loss's
    data-parallel or learner-thread hook) must not split it."""
    if ranks is not None and ranks.distributed:
        # (refused when the run is built; this guards other callers of the loss)
        raise ValueError(weight_norm_split_error("the loss's rank hook"))
    live = masks > 0
    mean = torch.where(live, weight, torch.zeros_like(weight)).sum() / live.sum().clamp_min(1)
    return weight / mean.clamp_min(torch.finfo(weight.dtype).tiny)


def stale_advantages(values: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
                     ratio: torch.Tensor, collector_ratio: torch.Tensor, mode: str,
                     gamma: float, lam: float, rho_clip: float, c_clip: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)`` ``[B, T]`` of a minibatch of a stale batch
    (``train.overlap_advantages``): the advantages of its policy term and the value targets.

    ``values`` ``[B, T+1]`` are the learner's (anchored), ``ratio`` is ``π_current / π_learner``
    (the PPO ratio) and ``collector_ratio`` ``π_learner / π_collector``, so ``ratio x
    collector_ratio`` is the current policy's ratio to the one that acted. ``mode``:

    * ``"learner"``: V-trace (:func:`~shoal.trainer.advantage.compute_advantages`) with
      ``ratio``, as if the learner had acted the batch; the returns are ``advantages +
      values``. The synchronous formula.
    * ``"collector"``: V-trace with ``ratio x collector_ratio`` in every step's TD term and trace
      (``ρ_t = min(rho_clip, π_current / π_collector)``, ``c_t = min(c_clip, …)``): the
      advantages and returns estimate the current policy's values from the collector's
      trajectories (IMPALA's correction). A step's own TD term is then scaled by its ratio to
      the collector as well as by its importance weight (:func:`collector_terms`).
    * ``"collector_later"``: the value targets of ``"collector"``; the policy term's advantage
      keeps the step's own factors of the synchronous formula and corrects only the steps after
      it, ``A_t = ρ_t δ_t + γ λ c_t (1 - done_t) A^col_{t+1}`` with ``ρ_t, c_t`` from ``ratio``
      and ``A^col`` the ``"collector"`` advantages: the estimate of the stored action's value
      under the current policy (``r_t + γ v_{t+1}``, IMPALA's policy-gradient target), whose
      action the importance weight already corrects. Equal to ``"learner"`` when the collector
      is the learner.
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"train.overlap_advantages={mode!r}: use one of {ADVANTAGE_MODES}")
    if mode == "learner":
        adv = compute_advantages(values, rewards, dones, ratio, gamma, lam, rho_clip, c_clip)
        return adv, adv + values[:, :-1]
    behind = compute_advantages(values, rewards, dones, ratio * collector_ratio, gamma, lam,
                                rho_clip, c_clip)
    returns = behind + values[:, :-1]
    if mode == "collector":
        return behind, returns
    nonterminal = 1.0 - dones.to(values.dtype)
    delta = rewards + gamma * values[:, 1:] * nonterminal - values[:, :-1]
    later = torch.zeros_like(behind)
    later[:, :-1] = behind[:, 1:]
    adv = (ratio.clamp(max=rho_clip) * delta
           + (gamma * lam) * ratio.clamp(max=c_clip) * nonterminal * later)
    return adv, returns
