"""train.pipeline: synchronous PPO with the rollout and the update overlapped. The batch is
collected env range by env range (vec_rollout over [env_lo, env_hi)), which fills the storage
one call over all envs fills; the learner trains on each range as it comes in, which gives the
synchronous update with minibatches = "ranges" bit for bit; runs repeat and resume exactly; and
where it cannot run the run goes unpipelined and says why."""

import threading

import pytest
import torch

from shoal.trainer.config import build_config
from shoal.trainer.distributed import combine_parts, explained_from_parts, variance_parts
from shoal.trainer.pipeline import Arrivals, row_bounds
from shoal.trainer.ppo import Trainer
from support.helped_rollout import FIELDS, assert_same_rollout
from support.training_runs import assert_repeats_and_resumes_exactly

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _trainer(tmp_path, name, env="breakout", **overrides):
    over = {"train.total_steps": 10**6, "env.num_envs": 16, "train.horizon": 16,
            "train.minibatch_size": 64, "log.dashboard": "off", "policy.hidden": 32,
            "train.rollout": "fused", "train.overlap": False, "train.precision": "float32",
            "train.norm_reward": False, "train.minibatches": "ranges", "train.torch_threads": 1,
            "train.pipeline": False,
            "log.run_dir": str(tmp_path / name)}
    over.update(overrides)
    return Trainer(build_config(env, overrides=over))


@pytest.mark.parametrize("env,policy,overrides", [
    ("breakout", "lstm", {"env.max_steps": 7}),              # truncations, recurrent state
    ("g2048", "mlp", {"env.max_steps": 40}),                 # action masks
    ("coord", "mlp", {}),                                    # two agents per env
    ("target", "lstm", {}),                                  # Box actions
])
def test_env_ranges_fill_the_storage_one_call_fills(tmp_path, env, policy, overrides):
    """Envs are independent: vec_rollout over consecutive env ranges (one or two threads each)
    leaves the storage, the recurrent state and the episode stats as one call over every env
    does, segment after segment."""
    over = {"policy.name": policy, "train.rollout_threads": 2, **overrides}
    whole = _trainer(tmp_path, "whole", env, **over)
    split = _trainer(tmp_path, "split", env, **over)
    try:
        E = split.env.num_envs
        cuts = [(0, 3), (3, 4), (4, E // 2), (E // 2, E)]
        ended = 0.0
        for epoch in range(3):
            whole.fused._call(1)
            for i, envs in enumerate(cuts):
                split.fused._call(1, envs=envs, threads=1 + i % 2)
            assert_same_rollout(whole, split, f"epoch {epoch}")
            ended += float(whole.storage.dones.sum())
            whole.storage.shift()
            split.storage.shift()
        assert ended > 0, "the case must end episodes to test resets across ranges"
    finally:
        whole.close()
        split.close()


def test_vec_rollout_refuses_a_bad_env_range(tmp_path):
    tr = _trainer(tmp_path, "r")
    scaled = _trainer(tmp_path, "s", **{"train.norm_reward": True})
    try:
        E = tr.env.num_envs
        for envs in ((0, 0), (3, 2), (-1, 4), (0, E + 1), (E, E)):
            with pytest.raises(ValueError, match=r"envs \[.*out of range"):
                tr.fused._call(1, envs=envs)
        # reward scaling runs over the whole segment: a part of it is refused, the whole taken
        with pytest.raises(ValueError, match="norm_reward.*not by env ranges"):
            scaled.fused._call(1, envs=(0, 3))
        scaled.fused._call(1, envs=(0, E))
    finally:
        tr.close()
        scaled.close()


@pytest.mark.parametrize("env,policy,overrides", [
    ("breakout", "mlp", {"env.max_steps": 11, "train.update_epochs": 2}),
    ("breakout", "lstm", {"env.max_steps": 11, "train.target_kl": 1e-5}),  # updates stop early
    ("breakout", "mlp", {"train.minibatch_size": 48, "env.num_envs": 20}),  # a shorter last range
    ("breakout", "mlp", {"train.norm_obs": True, "env.max_steps": 11}),  # statistics updated
    ("g2048", "mlp", {"env.max_steps": 40}),                                # action masks
    ("coord", "mlp", {"train.minibatch_size": 64}),                         # two agents per env
    ("breakout", "mlp", {"train.learner_threads": 2, "env.max_steps": 11}),  # sharded steps
])
def test_the_pipelined_update_is_the_synchronous_update_bit_for_bit(tmp_path, env, policy,
                                                                     overrides):
    """Training on each range while the next is collected changes when the learner reads the
    rows, never what it reads: weights, storage and logged losses equal the synchronous fused
    path's with the same minibatch schedule (minibatches = "ranges"), epoch after epoch."""
    over = {"policy.name": policy, **overrides}
    sync = _trainer(tmp_path, "sync", env, **over)
    piped = _trainer(tmp_path, "piped", env, **over, **{"train.pipeline": True})
    try:
        assert piped.fused.pipeline and not sync.fused.pipeline
        stopped_early = False
        per_update = -(-sync.S // (sync.config.train.minibatch_size // sync.T))
        for epoch in range(4):
            a, b = sync.run_epoch(), piped.run_epoch()
            assert a["losses"] == b["losses"], f"epoch {epoch}"
            assert a["episodes"] == b["episodes"], f"epoch {epoch}"
            for x, y in zip(sync.policy.parameters(), piped.policy.parameters()):
                assert torch.equal(x, y), f"epoch {epoch}: weights"
            for name in FIELDS:
                assert torch.equal(getattr(sync.storage, name), getattr(piped.storage, name))
            stopped_early |= a["losses"]["minibatches"] < per_update
        if overrides.get("train.target_kl"):
            assert stopped_early, "the target_kl case must stop an update early"
    finally:
        sync.close()
        piped.close()


@pytest.mark.parametrize("tail", [0, 2])
def test_pipelined_training_is_deterministic_and_resumes_exactly(tmp_path, tail):
    """With and without the update's last steps on two torch threads once the rollout thread
    has prepared every range (train.overlap_tail_threads)."""
    over = {"train.overlap_tail_threads": tail, "train.overlap_tail_start": 0.5,
            "train.torch_threads": 1, "train.total_steps": 5 * 32 * 16, "env.num_envs": 32, "train.horizon": 16,
            "train.minibatch_size": 128, "log.dashboard": "off", "policy.hidden": 32,
            "policy.name": "lstm", "train.rollout": "fused", "train.overlap": False,
            "train.pipeline": True, "train.minibatches": "ranges", "train.norm_reward": False,
            "train.precision": "auto", "env.max_steps": 11}
    assert_repeats_and_resumes_exactly(tmp_path, "breakout", over)


@pytest.mark.parametrize("overrides,why", [
    ({"train.rollout": "torch"}, "train.rollout is torch"),
    ({"train.overlap": True}, "train.overlap collects the next batch"),
    ({"train.minibatches": "draws"}, "train.minibatches = ranges"),
    ({"train.norm_reward": True}, "train.norm_reward scales the rewards"),
])
def test_pipeline_where_it_cannot_run_leaves_the_run_unpipelined_and_says_why(tmp_path, overrides,
                                                                              why, capsys):
    """breakout ships train.pipeline on; the switches to the other paths work as they read (the
    pipeline never changes what a run computes, only when the learner reads the batch), and the
    run says why it is not pipelined."""
    tr = _trainer(tmp_path, "r", **{"train.pipeline": True, **overrides})
    try:
        assert why in tr.pipeline_note and "does not apply" in tr.pipeline_note
        assert tr.fused is None or not tr.fused.pipeline
        tr.run_epoch()      # and it trains on its own path
    finally:
        tr.close()
    # a minibatch must hold whole envs: coord has two agents per env
    tr = _trainer(tmp_path, "coord", "coord", **{"train.pipeline": True,
                                                 "train.minibatch_size": 3 * 16})
    try:
        assert "multiple of 2" in tr.pipeline_note and not tr.fused.pipeline
    finally:
        tr.close()
    # and the dashboard says so when the run starts
    tr = _trainer(tmp_path, "said", **{"train.pipeline": True, "train.rollout": "torch",
                                       "log.dashboard": "plain",
                                       "train.total_steps": 16 * 16})
    tr.train()
    assert "train.pipeline is on but does not apply" in capsys.readouterr().out
    shipped = _trainer(tmp_path, "shipped", **{"train.pipeline": True})
    try:
        assert shipped.pipeline_note == "" and shipped.fused.pipeline
    finally:
        shipped.close()


def test_arrivals_let_the_learner_read_only_collected_ranges_and_raise_a_failure():
    arrivals = Arrivals()
    read: list[int] = []

    def learner() -> None:
        for k in range(3):
            arrivals.wait(k)
            read.append(k)

    thread = threading.Thread(target=learner)
    thread.start()
    arrivals.arrived(1)
    thread.join(0.2)
    assert thread.is_alive() and read == [0]      # range 1 is not in yet
    arrivals.arrived(3)
    thread.join(5)
    assert read == [0, 1, 2]
    failing = Arrivals()
    failing.arrived(1)
    failing.fail(OSError("disk"))
    failing.wait(0)     # what came in before the failure is still readable
    with pytest.raises(RuntimeError, match="rows range 1.*disk"):
        failing.wait(1)


def test_a_failure_on_the_rollout_thread_mid_batch_stops_the_epoch_with_its_cause(tmp_path):
    """The rollout thread's call for a later rows range fails (an action outside the space in
    the env's action buffer, as a corrupted resume would leave it): the learner, waiting for
    that range, raises with the cause instead of hanging, and no thread is left running."""
    tr = _trainer(tmp_path, "fails", **{"train.pipeline": True})
    try:
        assert tr.fused.pipeline
        tr.run_epoch()
        E = tr.env.num_envs
        per_range = tr.segments // tr.env.agents_per_env
        assert E // per_range > 2, "the failing env must be in a range the rollout thread collects"
        tr.env.actions[E - 1] = 99          # breakout has 3 actions; env E - 1: the last range
        threads = threading.active_count()
        with pytest.raises(RuntimeError, match="rollout thread stopped before rows range") as info:
            tr.run_epoch()
        assert isinstance(info.value.__cause__, ValueError)
        assert "action 99 for agent" in str(info.value.__cause__)
        assert threading.active_count() <= threads     # (the rollout thread waits for work)
    finally:
        tr.close()


def test_ranges_cover_the_rows_and_their_explained_variance_is_the_batch_s():
    assert row_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert row_bounds(8, 8) == [(0, 8)]
    with pytest.raises(ValueError):
        row_bounds(8, 9)
    g = torch.Generator().manual_seed(0)
    values = torch.randn(10, 6, generator=g)
    returns = values + torch.randn(10, 6, generator=g)
    masks = (torch.rand(10, 6, generator=g) > 0.2).float()
    whole = variance_parts(values, returns, masks)
    parts = combine_parts([variance_parts(values[lo:hi], returns[lo:hi], masks[lo:hi])
                           for lo, hi in row_bounds(10, 4)])
    assert parts == pytest.approx(whole, rel=1e-6, abs=1e-6)   # (float32 sums)
    assert explained_from_parts([parts]) == pytest.approx(explained_from_parts([whole]))


@pytest.mark.parametrize("env,threshold", [("recall", 0.90), ("target", 0.90)])
def test_pipelined_training_solves_the_sanity_envs(tmp_path, env, threshold):
    """The LSTM and MLP sanity envs of tests/test_learning.py, within their shipped budgets,
    trained pipelined (their configs scale no rewards; minibatches in row ranges)."""
    cfg = build_config(env, overrides={
        "log.dashboard": "off", "log.checkpoint_interval": 10_000, "train.rollout": "fused",
        "train.pipeline": True, "train.minibatches": "ranges",
        "log.run_dir": str(tmp_path / env)})
    trainer = Trainer(cfg)
    assert trainer.fused.pipeline, trainer.pipeline_note
    summary = trainer.train()
    assert summary["score"] is not None and summary["score"] >= threshold, summary
