"""train.overlap_tail_threads: the update's last gradient steps on more torch threads once the
overlapped rollout thread is done (shoal/trainer/tail_threads.py), in every update
(overlap_tail_when = always) or where the rollout thread had its core to itself and the threads
compute the same bits as one (free_core)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time

import pytest
import torch

from shoal.trainer.config import ConfigError, build_config
from shoal.trainer.policies import make_policy
from shoal.trainer.ppo import Minibatch, Trainer
from shoal.trainer.run_state import resume_config
from shoal.trainer.tail_threads import FREE_CORE_SHARE, release_workers, steps_alike, tail_step
from support.training_runs import assert_repeats_and_resumes_exactly

BASE = {"train.total_steps": 5 * 32 * 16, "env.num_envs": 32, "train.horizon": 16,
        "train.minibatch_size": 128, "log.dashboard": "off", "policy.hidden": 64,
        "train.rollout": "fused", "train.overlap": True, "env.max_steps": 11,
        "train.torch_threads": 1, "train.overlap_tail_threads": 2,
        "train.overlap_tail_start": 0.5, "train.overlap_tail_when": "always"}


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


@pytest.mark.parametrize("policy,precision,chunks,when", [
    ("mlp", "float32", 1, "always"), ("mlp", "bfloat16", 1, "always"),
    ("mlp", "float32", 4, "always"), ("lstm", "float32", 1, "always"),
    ("mlp", "bfloat16", 1, "free_core"), ("lstm", "float32", 1, "free_core")])
def test_tail_threads_training_is_deterministic_and_resumes_exactly(tmp_path, policy, precision,
                                                                   chunks, when):
    """The switch is fixed by the schedule (and, with chunks, waits for the last chunk's
    weights, which the rollout thread needs before it can finish), or taken only where it
    computes the same bits: two runs log the same, and a resumed run logs what the
    uninterrupted one does."""
    over = dict(BASE, **{"policy.name": policy, "train.precision": precision,
                         "train.overlap_chunks": chunks, "train.overlap_tail_when": when})
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
        summary = Trainer(cfg, policy=_hooked_policy(record)).train()
        assert torch.get_num_threads() == 3
    steps = 512 // 128          # gradient steps per update
    at = tail_step(cfg.train, steps)
    assert at == 2
    learner = [n for name, grad, n in seen if grad and name == threading.current_thread().name]
    epochs = cfg.train.total_steps // 512
    assert len(learner) == epochs * steps
    # the first epoch collects its batch synchronously and trains it overlapped, as every later
    assert learner == ([1] * at + [2] * (steps - at)) * epochs
    assert summary["tail_updates"] == {"taken": epochs, "core_busy": 0, "other_bits": 0}
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


def _big_sum_policy(obs_space, act_space):
    """The MLP with a term in its first layer's output that one sum over 4M numbers decides: a
    sum torch splits over its threads, so on two it rounds differently from one."""
    policy = make_policy((obs_space, act_space), "mlp", hidden=64)
    big = torch.randn(4_000_000, generator=torch.Generator().manual_seed(0))
    first = next(m for m in policy.modules() if isinstance(m, torch.nn.Linear))
    # (its fractional part: the rounding of the sum's last bits reaches every activation)
    first.register_forward_hook(lambda module, inputs, out: out + torch.frac(big.sum()))
    return policy


def _pipelined(tmp_path, name, policy=None, **over):
    cfg = build_config("breakout", overrides={**BASE, **{
        "train.overlap": False, "train.pipeline": True, "train.minibatches": "ranges",
        "train.norm_reward": False, "train.precision": "bfloat16",
        "train.overlap_tail_when": "free_core", "log.run_dir": str(tmp_path / name)}, **over})
    return Trainer(cfg) if policy is None else Trainer(cfg, policy=policy)


def _tensors(tree) -> list[torch.Tensor]:
    """Every tensor in a state dict, in order."""
    if torch.is_tensor(tree):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) \
        else []
    return [t for item in items for t in _tensors(item)]


def test_steps_alike_tells_a_step_that_rounds_differently_on_two_threads(tmp_path):
    """On copies: the run's weights, optimizer state and thread count are as they were. The
    step with a sum split over the threads is not alike on two threads; the same step on one
    is."""
    tr = _pipelined(tmp_path, "r", policy=_big_sum_policy, **{"train.overlap_tail_threads": 0,
                                                              "train.precision": "float32"})
    try:
        tr.run_epoch()      # a collected batch to take the minibatch from
        mb = Minibatch(tr.storage, torch.arange(tr.segments), torch.ones(tr.segments))
        weights = [p.detach().clone() for p in tr.policy.parameters()]
        state = [v.clone() for v in _tensors(tr.optimizer.state_dict())]
        with _torch_threads(1):
            assert not steps_alike(tr, mb, 2)
            assert steps_alike(tr, mb, 1)
            assert torch.get_num_threads() == 1
        assert all(torch.equal(a, p) for a, p in zip(weights, tr.policy.parameters()))
        now = _tensors(tr.optimizer.state_dict())
        assert state and len(now) == len(state)
        assert all(torch.equal(a, b) for a, b in zip(state, now))
    finally:
        tr.close()


def _assert_same_epochs(tailed, plain, epochs: int) -> None:
    """Both trainers, epoch by epoch on one torch thread: the same losses and weights."""
    with _torch_threads(1):
        for epoch in range(epochs):
            a, b = tailed.run_epoch(), plain.run_epoch()
            assert a["losses"] == b["losses"], f"epoch {epoch}"
            for x, y in zip(tailed.policy.parameters(), plain.policy.parameters()):
                assert torch.equal(x, y), f"epoch {epoch}"


def test_a_free_core_tail_that_would_round_differently_is_never_taken(tmp_path):
    """overlap_tail_when = free_core with a step that rounds differently on two threads: every
    update stays on one thread (whatever the load), so the run computes what the run without
    the tail computes, bit for bit."""
    seen: list[int] = []

    def factory(obs_space, act_space):
        policy = _big_sum_policy(obs_space, act_space)
        policy.register_forward_pre_hook(   # the run's training passes (not steps_alike's copies)
            lambda module, inputs: seen.append(torch.get_num_threads())
            if torch.is_grad_enabled() and module is policy else None)
        return policy

    tailed = _pipelined(tmp_path, "tail", policy=factory, **{"train.precision": "float32"})
    plain = _pipelined(tmp_path, "plain", policy=_big_sum_policy,
                       **{"train.overlap_tail_threads": 0, "train.precision": "float32"})
    try:
        _assert_same_epochs(tailed, plain, 3)
        tail = tailed.fused.tail
        assert tail.counts() == {"taken": 0, "core_busy": 0, "other_bits": 3}
        assert seen and set(seen) == {1}
        note = tail.take_note()     # (the dashboard shows it once)
        assert "other bits" in note and "--train.overlap-tail-when always" in note
        assert tail.take_note() is None
    finally:
        tailed.close()
        plain.close()


def test_the_dashboard_says_once_why_the_tail_stays_on_one_thread(tmp_path, capsys):
    """A whole run (the trainer's own loop, plain dashboard) whose step rounds differently on
    two threads: the note is printed once, and summary.json counts every update as other
    bits."""
    tr = _pipelined(tmp_path, "said", policy=_big_sum_policy,
                    **{"train.precision": "float32", "log.dashboard": "plain"})
    with _torch_threads(1):
        summary = tr.train()
    out = capsys.readouterr().out
    assert out.count("the update's tail stays on one torch thread") == 1
    assert "computes other bits than on one" in out
    assert summary["tail_updates"] == {"taken": 0, "core_busy": 0,
                                       "other_bits": summary["epochs"]}


def test_a_free_core_tail_computes_what_one_thread_computes(tmp_path):
    """The shipped tail (free_core) on the pipeline: each update decides once (taken, or
    skipped for a busy core or for other bits), and the run is the one-thread run bit for bit
    whatever it decided."""
    tailed = _pipelined(tmp_path, "tail")
    plain = _pipelined(tmp_path, "plain", **{"train.overlap_tail_threads": 0})
    try:
        _assert_same_epochs(tailed, plain, 4)
        tail = tailed.fused.tail
        assert tail.taken + tail.busy + tail.rounding == 4
    finally:
        tailed.close()
        plain.close()


def _rollout_epoch(tail, work) -> None:
    """A rollout thread's epoch: ``work`` inside its collection, then done."""
    def run():
        with tail.collecting():
            work()
        tail.rollout_done()
    tail.begin()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def test_the_free_core_test_reads_the_rollout_thread_s_cpu_time(tmp_path):
    """A rollout thread that waits through its collection (as one another process keeps off its
    core does) leaves the update on its own thread count, counted busy (where the threads
    compute one thread's bits; else counted for those); one that computes throughout had its
    core."""
    tr = _pipelined(tmp_path, "r")
    try:
        tr.run_epoch()
        tail = tr.fused.tail
        mb = Minibatch(tr.storage, torch.arange(tr.segments), torch.ones(tr.segments))
        with _torch_threads(1):
            alike = steps_alike(tr, mb, 2)
            before = tail.counts()
            _rollout_epoch(tail, lambda: time.sleep(0.1))
            assert tail.core_share() < 0.1
            tail.start(4)
            tail.stepped(tail_step(tr.config.train, 4), following=mb)
            assert torch.get_num_threads() == 1
            tail.end()
            after = tail.counts()
            grew = {k for k in after if after[k] != before[k]}
            assert grew == {"core_busy" if alike else "other_bits"}
            assert after[next(iter(grew))] == before[next(iter(grew))] + 1

            def compute():
                a = torch.randn(256, 256)
                until = time.perf_counter() + 0.2
                while time.perf_counter() < until:
                    a = torch.tanh(a @ a)
            _rollout_epoch(tail, compute)
            assert tail.core_share() >= FREE_CORE_SHARE
    finally:
        tr.close()


def test_a_run_saved_before_the_free_core_test_resumes_with_its_tail_in_every_update(tmp_path):
    """A checkpoint's config without train.overlap_tail_when (saved when the tail ran in every
    update) resumes with "always", so it continues as it ran; one that names it keeps it."""
    cfg = build_config("breakout", overrides=dict(BASE, **{"train.overlap_tail_when":
                                                           "free_core"}))
    saved = dataclasses.asdict(cfg)
    ckpt = {"path": str(tmp_path / "run" / "checkpoints" / "latest"), "config": saved}
    resumed, _ = resume_config(ckpt, ckpt["path"], None, [], None, None, "test")
    assert resumed.train.overlap_tail_when == "free_core"
    del saved["train"]["overlap_tail_when"]
    resumed, _ = resume_config(ckpt, ckpt["path"], None, [], None, None, "test")
    assert resumed.train.overlap_tail_when == "always"
    assert resumed.train.overlap_tail_threads == 2
