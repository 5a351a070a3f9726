"""The correction for a batch collected one update behind (train.overlap; stale_batch.py).

An overlapped run trains update k on the batch collected during update k-1. Without the
correction the PPO clip is anchored at the collector's policy and breakout does not learn; the
update must be anchored at the learner's policy and values, the collector's actions weighted by
the truncated ratio between the two, and the clip window kept near the collector's policy.
"""

import copy
import threading
import time

import numpy as np
import pytest
import torch

from shoal.trainer.acting_refresh import ActingRefresh, head_steps
from shoal.trainer.advantage import advantages_reference
from shoal.trainer.config import build_config
from shoal.trainer.ppo import Minibatch, Trainer, ppo_loss, replay
from shoal.trainer.stale_batch import (COLLECTOR_CLIP, WEIGHT_CAP, PipelinedAnchor,
                                       anchor_at_learner, collector_terms, pipelined_anchoring)
from support.stale_batches import overlapped_trainer, stale_minibatch
from support.training_runs import metric_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("policy,precision", [("mlp", "float32"), ("lstm", "float32"),
                                              ("mlp", "bfloat16"), ("lstm", "bfloat16")])
def test_the_pending_batch_is_anchored_at_the_learner(tmp_path, policy, precision):
    """After two overlapped epochs the pending batch was collected by weights one update older
    than the learner's: anchoring replaces its log-probs and values by the learner's replay (in
    the learner's precision; the C policy that collected it runs float32) and keeps the
    learner-to-collector ratio of every step."""
    tr = overlapped_trainer(tmp_path, **{"policy.name": policy, "train.precision": precision})
    try:
        with tr.process_state.active():
            tr.run_epoch()
            tr.run_epoch()
            batch = copy.deepcopy(tr.storage)         # pending: collected during update 2
            collector_logp = batch.logprobs.clone()
            anchor_at_learner(tr.policy, tr.distribution, batch, precision)
            T = batch.T
            mb = Minibatch(batch, torch.arange(batch.S), torch.ones(batch.S))
            with torch.no_grad():
                learner_logp, _, learner_values = replay(tr.policy, tr.distribution, mb,
                                                         precision=precision)
        torch.testing.assert_close(batch.logprobs[:, :T], learner_logp, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.values[:, :T], learner_values, atol=1e-5, rtol=0)
        expected = (learner_logp - collector_logp[:, :T]).exp()
        torch.testing.assert_close(batch.collector_ratio, expected, atol=1e-5, rtol=1e-5)
        # the collector really is another policy: the ratio is not 1
        assert float((batch.collector_ratio - 1).abs().max()) > 1e-3
        # the storage the trainer trains on next is untouched until its update starts
        assert torch.equal(tr.storage.logprobs, collector_logp)
    finally:
        tr.close()


@pytest.mark.parametrize("weight_cap", [WEIGHT_CAP, 1.0])
def test_loss_on_a_stale_batch_equals_a_hand_computed_reference(tmp_path, weight_cap):
    """The policy term of ppo_loss on an anchored batch, recomputed in numpy: V-trace
    advantages from the learner's values and ratio, each step weighted by min(ratio to the
    collector, train.overlap_weight_cap), the ratio clipped to ±clip_coef around the learner
    and within ±COLLECTOR_CLIP x clip_coef of the collector."""
    tr = overlapped_trainer(tmp_path, **{"train.norm_adv": False,
                                          "train.overlap_weight_cap": weight_cap})
    t = tr.config.train
    try:
        with tr.process_state.active():
            # learner-to-collector ratios across the truncation and both window edges
            batch, mb = stale_minibatch(tr, seed=0, spread=1.5)
            _, stats, _ = ppo_loss(tr.policy, tr.distribution, mb, t)
            with torch.no_grad():
                newlogp, _, _ = replay(tr.policy, tr.distribution, mb)
            plain = copy.copy(mb)
            plain.collector_ratio = None
            _, plain_stats, _ = ppo_loss(tr.policy, tr.distribution, plain, t)
        T = batch.T
        ratio = np.exp(newlogp.numpy().astype(np.float64) - batch.logprobs[:, :T].numpy())
        assert np.abs(ratio - 1).max() > t.clip_coef        # the clip is exercised
        adv = advantages_reference(batch.values.numpy().astype(np.float64),
                                   batch.rewards.numpy().astype(np.float64),
                                   batch.dones.numpy(), ratio, t.gamma, t.gae_lambda,
                                   t.rho_clip, t.c_clip)
        behind = batch.collector_ratio.numpy().astype(np.float64)
        assert (behind > weight_cap).any()                   # the truncation is exercised
        weighted = adv * np.minimum(behind, weight_cap)
        low = np.maximum((1 - COLLECTOR_CLIP * t.clip_coef) / behind, 1 - t.clip_coef)
        high = np.minimum((1 + COLLECTOR_CLIP * t.clip_coef) / behind, 1 + t.clip_coef)
        clipped = np.minimum(np.maximum(ratio, low), high)
        loss = np.maximum(-weighted * ratio, -weighted * clipped)
        masks = batch.masks[:, :T].numpy() > 0
        reference = loss[masks].mean()
        assert float(stats["policy"]) == pytest.approx(reference, rel=1e-4, abs=1e-7)
        # the correction changes the loss: plain PPO on the same batch gives another value
        assert abs(float(plain_stats["policy"]) - reference) > 1e-3 * max(1e-3, abs(reference))
    finally:
        tr.close()


def _anchored_both_ways(tmp_path, schedule_of):
    """The pending batch of an overlapped MLP run, anchored by the whole-batch pass and by the
    pipeline (the learner's side here, the rollout thread's side on a real second thread)."""
    tr = overlapped_trainer(tmp_path)
    try:
        with tr.process_state.active():
            tr.run_epoch()
            tr.run_epoch()
            whole, pipelined = copy.deepcopy(tr.storage), copy.deepcopy(tr.storage)
            anchor_at_learner(tr.policy, tr.distribution, whole)
            anchor = PipelinedAnchor(copy.deepcopy(tr.policy), tr.distribution, pipelined)
            second = threading.Thread(target=lambda: (anchor.work_ahead(), anchor.work_rest()))
            second.start()
            schedule = schedule_of(pipelined.S)
            anchor.start(schedule)
            for k in range(len(schedule)):
                anchor.minibatch_ready(k)
            anchor.finish()
            anchor.stop()
            second.join()
        return whole, pipelined, anchor
    finally:
        tr.close()


def test_pipelined_anchoring_gives_every_segment_the_whole_batch_anchor(tmp_path):
    """Anchored minibatch by minibatch (the first on the learner's thread, the others on a
    second thread, then the segments no minibatch drew), the batch holds what the whole-batch
    pass gives it: the learner's log-probs and values and the ratio to the collector."""
    g = torch.Generator().manual_seed(0)
    # minibatches of 3 segments drawn with repeats across minibatches, as uniform draws are
    whole, pipelined, anchor = _anchored_both_ways(tmp_path, lambda S: [
        torch.randperm(S, generator=g)[:3] for _ in range(4)])
    drawn = torch.cat(anchor.chunks[:-1])
    assert len(drawn) == len(set(drawn.tolist()))        # each segment anchored once
    assert len(anchor.chunks[-1]) > 0                    # some were never drawn
    assert sorted(torch.cat(anchor.chunks).tolist()) == list(range(whole.S))
    for name in ("logprobs", "values", "collector_ratio"):
        torch.testing.assert_close(getattr(pipelined, name), getattr(whole, name),
                                   atol=1e-6, rtol=1e-6, msg=name)
    assert float((whole.collector_ratio - 1).abs().max()) > 1e-3


_GATHERED = ("obs", "actions", "logprobs", "values", "rewards", "dones", "starts", "masks",
             "action_masks", "collector_ratio", "weights")


def test_the_rollout_thread_gathers_each_minibatch_once_its_segments_are_anchored(tmp_path):
    """With a gather function the second thread hands the learner minibatches 1.. already
    gathered: each holds exactly the rows of the fully anchored storage, even when it draws
    segments of the first minibatch, which the learner anchors (here only after the second
    thread has had time to run ahead); the function given for the end runs once every segment
    is anchored, on the second thread, and finish() returns what it gave."""
    tr = overlapped_trainer(tmp_path)
    try:
        with tr.process_state.active():
            tr.run_epoch()
            tr.run_epoch()
            b = copy.deepcopy(tr.storage)
            anchor = PipelinedAnchor(copy.deepcopy(tr.policy), tr.distribution, b)
            # minibatch 1 redraws segments of minibatch 0; segment 7 is never drawn
            assert b.S == 8
            schedule = [torch.tensor([0, 1, 2]), torch.tensor([3, 0, 4]),
                        torch.tensor([5, 1]), torch.tensor([6, 2, 3])]
            weights = [torch.rand(len(idx)) for idx in schedule]
            second = threading.Thread(target=lambda: (anchor.work_ahead(), anchor.work_rest()))
            second.start()
            anchor.start(schedule, lambda k: Minibatch(b, schedule[k], weights[k],
                                                       advantages=False),
                         lambda: (b.values.clone(), threading.get_ident()))
            time.sleep(0.3)                 # the second thread runs as far as it can
            got = [anchor.minibatch_ready(k) for k in range(len(schedule))]
            values_at_end, summarised_on = anchor.finish()
            anchor.stop()
            second.join()
        assert got[0] is None                   # the learner gathers its first minibatch
        for k in range(1, len(schedule)):
            own = Minibatch(b, schedule[k], weights[k])
            assert got[k].advantages is None and torch.equal(got[k].idx, schedule[k])
            for name in _GATHERED:
                assert torch.equal(getattr(got[k], name), getattr(own, name)), (k, name)
        assert torch.equal(values_at_end, b.values)
        assert summarised_on == second.ident != threading.get_ident()
    finally:
        tr.close()


def test_a_learner_that_stops_before_its_first_minibatch_releases_the_gathering_thread(
        tmp_path):
    """The second thread gathers a minibatch only after the learner anchored the first one; an
    update that ends before that (it failed) releases it instead of leaving it waiting."""
    tr = overlapped_trainer(tmp_path)
    try:
        b = copy.deepcopy(tr.storage)
        anchor = PipelinedAnchor(copy.deepcopy(tr.policy), tr.distribution, b)
        schedule = [torch.arange(2), torch.arange(2, 4), torch.arange(4, 6)]
        second = threading.Thread(target=lambda: (anchor.work_ahead(), anchor.work_rest()))
        second.start()
        anchor.start(schedule, lambda k: Minibatch(b, schedule[k], torch.ones(2)))
        time.sleep(0.2)
        anchor.stop()
        second.join(timeout=30)
        assert not second.is_alive()
    finally:
        tr.close()


def test_a_failing_rollout_thread_is_raised_on_the_learner_not_waited_for(tmp_path):
    """If the second thread fails (here: it is told so before it anchors anything), the learner
    waiting for a minibatch's segments gets the error; a learner that never starts the
    schedule lets the second thread return instead of waiting for it."""
    tr = overlapped_trainer(tmp_path)
    try:
        anchor = PipelinedAnchor(tr.policy, tr.distribution, copy.deepcopy(tr.storage))
        anchor.start([torch.arange(2), torch.arange(2, 4)])
        anchor.minibatch_ready(0)
        anchor.fail(ValueError("rollout failed"))
        with pytest.raises(RuntimeError, match="rollout thread failed") as info:
            anchor.minibatch_ready(1)
        assert isinstance(info.value.__cause__, ValueError)
        idle = PipelinedAnchor(tr.policy, tr.distribution, copy.deepcopy(tr.storage))
        second = threading.Thread(target=lambda: (idle.work_ahead(), idle.work_rest()))
        second.start()
        idle.stop()
        second.join(timeout=30)
        assert not second.is_alive()
    finally:
        tr.close()


@pytest.mark.parametrize("minibatches", ["draws", "passes"])
def test_pipelined_anchoring_trains_as_anchoring_up_front(tmp_path, minibatches):
    """An overlapped MLP run anchored minibatch by minibatch logs what the same run anchored up
    front logs (a target_kl too large to stop anything sends the update down the up-front
    path), to float32 rounding: the schedule drawn first is the one drawn minibatch by
    minibatch, and every segment gets the same anchor."""
    over = {"train.total_steps": 6 * 16 * 8, "env.num_envs": 16, "train.horizon": 8,
            "train.minibatch_size": 32, "train.update_epochs": 2, "log.dashboard": "off",
            "policy.hidden": 32, "train.rollout": "fused", "train.overlap": True,
            "train.precision": "float32", "env.max_steps": 11, "train.minibatches": minibatches}
    kinds = {}
    for name, extra in (("pipelined", {}), ("up_front", {"train.target_kl": 1e9})):
        cfg = build_config("breakout", overrides=dict(
            over, **extra, **{"log.run_dir": str(tmp_path / name)}))
        tr = Trainer(cfg)
        kinds[name] = pipelined_anchoring(cfg.train, tr.storage)
        tr.train()
    assert kinds == {"pipelined": True, "up_front": minibatches == "passes"}
    rows_p, rows_u = metric_rows(tmp_path / "pipelined"), metric_rows(tmp_path / "up_front")
    assert len(rows_p) == len(rows_u) == 6
    for (_, losses_p, episodes_p), (_, losses_u, episodes_u) in zip(rows_p, rows_u):
        assert losses_p.keys() == losses_u.keys()
        for key, value in losses_p.items():
            assert losses_u[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_overlap_acts_each_chunk_with_the_learners_weights_after_its_steps(tmp_path):
    """train.overlap_chunks: the batch collected during an update is split into chunks of
    steps, chunk j acted by the learner's weights after j * n // C of the update's n gradient
    steps (chunk 0 by the weights before it): each chunk's stored log-probs are those weights'
    log-probs of the stored actions, and the later chunks' are not the first weights'."""
    tr = overlapped_trainer(tmp_path, **{"train.overlap_chunks": 3, "train.update_epochs": 2})
    try:
        weights = [copy.deepcopy(tr.policy.state_dict())]      # after 0, 1, 2, ... steps
        last = getattr(tr.optimizer, "optimizers", [tr.optimizer])[-1]   # (Muon + Adam)
        last.register_step_post_hook(
            lambda *_: weights.append(copy.deepcopy(tr.policy.state_dict())))
        with tr.process_state.active():
            tr.run_epoch()      # the first batch collected up front, the second during update 1
        acting = tr.fused.acting
        n = len(weights) - 1
        assert n == 2 * 8 * 16 // 64                           # two passes of 2 minibatches
        assert acting.chunks == 3
        assert acting.bounds == [(1, 5), (6, 10), (11, 16)]
        assert acting.steps == [0, 4 * 1 // 3, 4 * 2 // 3] == [0, 1, 2]
        batch = tr.storage                                     # pending: collected in update 1
        policy = copy.deepcopy(tr.policy)
        logp = []
        for steps in acting.steps:
            policy.load_state_dict(weights[steps])
            replayed = copy.deepcopy(batch)
            anchor_at_learner(policy, tr.distribution, replayed)
            logp.append(replayed.logprobs)
        for j, (first, last) in enumerate(acting.bounds):
            stored = batch.logprobs[:, first:last + 1]
            torch.testing.assert_close(stored, logp[j][:, first:last + 1], atol=1e-5, rtol=0)
            if j:   # the first weights would have given other log-probs
                assert float((stored - logp[0][:, first:last + 1]).abs().max()) > 1e-3
    finally:
        tr.close()


def test_overlap_chunks_of_one_act_the_whole_batch_with_the_weights_before_the_update(tmp_path):
    """train.overlap_chunks = 1 (and every recurrent policy): the batch collected during
    update 1 is a rollout by the initial weights, as before chunks existed."""
    for name, extra in (("one", {"train.overlap_chunks": 1}), ("lstm", {"policy.name": "lstm"})):
        tr = overlapped_trainer(tmp_path / name, **extra)
        try:
            initial = copy.deepcopy(tr.policy.state_dict())
            with tr.process_state.active():
                tr.run_epoch()
            assert tr.fused.acting.chunks == 1
            policy = copy.deepcopy(tr.policy)
            policy.load_state_dict(initial)
            replayed = copy.deepcopy(tr.storage)
            anchor_at_learner(policy, tr.distribution, replayed)
            torch.testing.assert_close(tr.storage.logprobs[:, 1:], replayed.logprobs[:, 1:],
                                       atol=1e-5, rtol=0)
        finally:
            tr.close()


def test_an_update_that_ends_early_leaves_the_rollout_thread_neither_waiting_nor_collecting(
        tmp_path):
    """If the update fails after some of its steps, the rollout thread collects the chunks whose
    weights came, then raises instead of waiting for steps that never come; an update that
    stops early on target_kl hands the chunks of later steps the weights it ended with."""
    from shoal.trainer.acting_refresh import ActingRefresh

    tr = overlapped_trainer(tmp_path, **{"train.overlap_chunks": 8})
    try:
        acting = ActingRefresh(tr.policy, tr.env.observations.dtype)
        collected: list[tuple[int, int, object]] = []
        errors: list[BaseException] = []

        def rollout_thread():
            try:
                acting.collect(lambda first, last, net: collected.append((first, last, net))
                               or 0.0, "start weights")
            except RuntimeError as exc:
                errors.append(exc)

        acting.begin(tr.config.train, copy.deepcopy(tr.storage))
        second = threading.Thread(target=rollout_thread)
        second.start()
        acting.start(8)                       # 8 chunks of 2 steps, chunk j after step j
        acting.stepped(1)
        acting.stepped(2)
        acting.stop()                         # the update failed at its third step
        second.join(timeout=30)
        assert not second.is_alive()
        assert [c[:2] for c in collected] == [(1, 2), (3, 4), (5, 6)]
        assert collected[0][2] == "start weights"
        assert errors and "gradient step 3" in str(errors[0])

        # stopped on target_kl after 2 steps: chunks 3.. are acted by the weights after step 2
        collected.clear()
        acting.begin(tr.config.train, copy.deepcopy(tr.storage))
        second = threading.Thread(target=rollout_thread)
        second.start()
        acting.start(8)
        acting.stepped(1)
        acting.stepped(2)
        acting.finish()
        acting.stop()
        second.join(timeout=30)
        assert not second.is_alive() and len(errors) == 1
        assert [c[:2] for c in collected] == [(2 * j + 1, 2 * j + 2) for j in range(8)]
    finally:
        tr.close()


def test_the_first_steps_collected_before_the_update_stay_within_the_first_chunk(tmp_path):
    """The rollout thread collects the next batch's first steps before the update draws its
    schedule, with the weights from the start of the update: at most the first chunk, which
    those weights act whatever the update's number of gradient steps; a collection told that
    more steps were collected refuses."""
    t = build_config("breakout").train
    assert (t.overlap_chunks, t.horizon) == (1, 64)
    assert head_steps(t, 64) == 8
    t.overlap_chunks = 16             # chunks of 4 steps
    assert head_steps(t, 64) == 4
    t.overlap_chunks = 1
    assert head_steps(t, 7) == 0      # too short a horizon: no head
    tr = overlapped_trainer(tmp_path, **{"train.overlap_chunks": 4})
    try:
        acting = ActingRefresh(tr.policy, tr.env.observations.dtype)
        acting.begin(tr.config.train, tr.storage)
        acting.start(8)
        acting.finish()                   # (the weights for every later chunk published)
        calls = []
        acting.collect(lambda first, last, net: calls.append((first, last, net)) or 0.0,
                       "weights at the start", 3)
        assert [c[:2] for c in calls] == [(4, 4), (5, 8), (9, 12), (13, 16)]
        assert calls[0][2] == "weights at the start"
        with pytest.raises(RuntimeError, match="first chunk ends at step 4"):
            acting.collect(lambda first, last, net: 0.0, "weights at the start", 5)
    finally:
        tr.close()


@pytest.mark.parametrize("clip_coef", [0.2, 1.0 / COLLECTOR_CLIP, 0.8])
def test_collector_terms_stay_finite_for_a_ratio_that_underflowed(clip_coef):
    """A learner-to-collector ratio of exactly 0 (exp of a log-ratio below float32's range)
    gives weight 0 and finite window edges, not NaN (at clip_coef = 1 / COLLECTOR_CLIP the
    lower edge was 0/0; there it is now the learner's own 1 - clip_coef)."""
    ratio = torch.tensor([0.0, 0.5, 1.0, 3.0])
    weight, low, high = collector_terms(ratio, clip_coef, 1.0)
    assert torch.isfinite(torch.stack([weight, low, high])).all()
    assert weight[0] == 0.0 and high[0] == pytest.approx(1.0 + clip_coef)
    if clip_coef >= 1.0 / COLLECTOR_CLIP:
        assert low[0] == pytest.approx(1.0 - clip_coef)
