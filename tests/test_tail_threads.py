"""train.overlap_tail_threads: the update's last gradient steps on more torch threads once the
overlapped rollout thread is done (shoal/trainer/tail_threads.py)."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from shoal.trainer.config import ConfigError, build_config
from shoal.trainer.policies import make_policy
from shoal.trainer.ppo import Trainer
from shoal.trainer.tail_threads import release_workers, tail_step
from support.training_runs import assert_repeats_and_resumes_exactly

BASE = {"train.total_steps": 5 * 32 * 16, "env.num_envs": 32, "train.horizon": 16,
        "train.minibatch_size": 128, "log.dashboard": "off", "policy.hidden": 64,
        "train.rollout": "fused", "train.overlap": True, "env.max_steps": 11,
        "train.torch_threads": 1, "train.overlap_tail_threads": 2,
        "train.overlap_tail_start": 0.5}


def _hooked_policy(hook):
    """A ``policy=`` factory: the MLP with ``hook`` as a forward pre-hook (deep copies, such as
    the anchoring one, keep it)."""
    def factory(obs_space, act_space):
        policy = make_policy((obs_space, act_space), "mlp", hidden=64)
        policy.register_forward_pre_hook(hook)
        return policy
    return factory


@contextlib.contextmanager
def _torch_threads(n):
    """torch at ``n`` threads inside, the caller's count restored after."""
    outer = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(outer)


@pytest.mark.parametrize("policy,precision,chunks", [
    ("mlp", "float32", 1), ("mlp", "bfloat16", 1), ("mlp", "float32", 4), ("lstm", "float32", 1)])
def test_tail_threads_training_is_deterministic_and_resumes_exactly(tmp_path, policy, precision,
                                                                   chunks):
    """The switch is fixed by the schedule (and, with chunks, waits for the last chunk's
    weights, which the rollout thread needs before it can finish): two runs log the same, and
    a resumed run logs what the uninterrupted one does."""
    over = dict(BASE, **{"policy.name": policy, "train.precision": precision,
                         "train.overlap_chunks": chunks})
    assert_repeats_and_resumes_exactly(tmp_path, "breakout", over)


def test_the_learner_switches_at_the_fixed_step_and_the_rollout_thread_never_does(tmp_path):
    """Every forward pass records its thread and torch's thread count: the learner's training
    passes run on one thread before the switch step and on two after it, in every update; the
    rollout thread's anchoring passes always on one; the process's thread count is as it was
    after training."""
    seen: list[tuple[str, bool, int]] = []

    def record(module, inputs):
        seen.append((threading.current_thread().name, torch.is_grad_enabled(),
                     torch.get_num_threads()))

    cfg = build_config("breakout", overrides=dict(BASE, **{"log.run_dir": str(tmp_path / "r")}))
    with _torch_threads(3):
        Trainer(cfg, policy=_hooked_policy(record)).train()
        assert torch.get_num_threads() == 3
    steps = 512 // 128          # gradient steps per update
    at = tail_step(cfg.train, steps)
    assert at == 2
    learner = [n for name, grad, n in seen if grad and name == threading.current_thread().name]
    epochs = cfg.train.total_steps // 512
    assert len(learner) == epochs * steps
    # the first epoch collects its batch synchronously and trains it overlapped, as every later
    assert learner == ([1] * at + [2] * (steps - at)) * epochs
    rollout = [n for name, grad, n in seen if name.startswith("shoal-fused-rollout")]
    assert rollout and set(rollout) == {1}, "the rollout thread anchors ahead on one thread"


def test_tail_step_follows_the_fraction_and_takes_at_least_one_step():
    cfg = build_config("breakout", overrides=dict(BASE))
    t = cfg.train
    assert tail_step(t, 8) == 4
    t.overlap_tail_start = 0.0
    assert tail_step(t, 8) == 1
    t.overlap_tail_start = 0.7
    assert tail_step(t, 8) == 6
    t.overlap_tail_start = 0.07     # 0.07 x 100 is 7.000000000000001 in floats
    assert tail_step(t, 100) == 7
    t.overlap_tail_start = 1.0
    assert tail_step(t, 8) == 8
    t.overlap_tail_threads = 1
    assert tail_step(t, 8) is None


def test_the_tail_applies_to_an_overlapped_or_pipelined_update_on_one_learner_thread(tmp_path):
    """A tail asked for where no rollout thread works beside the update (the synchronous paths)
    or where the update is split over learner threads does nothing: the run goes on as it
    would without it, and the thread count is never touched there."""
    def trainer(name, **over):
        return Trainer(build_config("breakout", overrides=dict(
            BASE, **over, **{"log.run_dir": str(tmp_path / name)})))

    for name, over, tail in [
            ("overlap", {}, True),
            ("pipeline", {"train.overlap": False, "train.pipeline": True}, True),
            ("sync", {"train.overlap": False, "train.pipeline": False}, False),
            ("no-ranges", {"train.overlap": False, "train.pipeline": True,
                           "train.minibatches": "draws"}, False),    # the pipeline does not apply
            ("sharded", {"train.learner_threads": 2}, False)]:
        tr = trainer(name, **over)
        try:
            assert (tr.fused.tail is not None) == tail, name
            with _torch_threads(3):
                tr.run_epoch()
                assert torch.get_num_threads() == 3, name
        finally:
            tr.close()
    with pytest.raises(ConfigError, match="overlap_tail_start"):
        build_config("breakout", overrides={"train.overlap_tail_start": 1.5})
    with pytest.raises(ConfigError, match="overlap_tail_threads"):
        build_config("breakout", overrides={"train.overlap_tail_threads": -1})


def test_a_failure_in_the_tail_leaves_the_thread_count_as_it_was(tmp_path):
    """A policy that raises in its third training pass of the first update (after the switch):
    the error reaches the caller and the process's thread count is what it was."""
    training_passes = [0]

    def fail_after_switch(module, inputs):
        if torch.is_grad_enabled():
            training_passes[0] += 1
            if training_passes[0] == 3:
                assert torch.get_num_threads() == 2, "the tail runs on two threads"
                raise RuntimeError("policy failed in the tail")

    cfg = build_config("breakout", overrides=dict(BASE, **{"log.run_dir": str(tmp_path / "f")}))
    with _torch_threads(3):
        tr = Trainer(cfg, policy=_hooked_policy(fail_after_switch))
        with pytest.raises(RuntimeError, match="policy failed in the tail"):
            tr.train()
        assert torch.get_num_threads() == 3


def test_releasing_the_openmp_workers_leaves_torch_working_as_before():
    """The tail's end releases torch's idle OpenMP workers (they stop spin-waiting on the core
    the rollout thread needs next): the next product on two threads starts them again and
    computes what it computed before."""
    a, b = torch.randn(512, 256), torch.randn(256, 64)
    with _torch_threads(2):
        before = a @ b
        assert release_workers(), "a build with OpenMP releases them"
        assert torch.equal(a @ b, before)
        assert release_workers()
    assert torch.equal(a @ b, before)
