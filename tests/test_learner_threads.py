"""train.learner_threads: each minibatch's loss and gradient computed as fixed shards on several
threads. The shards' sum is the whole minibatch's loss and gradient (up to float32 rounding),
the KL early stop sees the whole minibatch's KL, runs are deterministic under a seed and resume
exactly with the overlapped fused rollout, and what it cannot run is refused."""

import threading

import pytest
import torch

from shoal.trainer.config import ConfigError, build_config
from shoal.trainer.learner_threads import shard_bounds
from shoal.trainer.ppo import Minibatch, Trainer, ppo_loss
from support.training_runs import (assert_repeats_and_resumes_exactly,
                                   estimate_advantages, metric_rows)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(tmp_path, name, env="breakout", **overrides):
    over = {"train.total_steps": 10**6, "env.num_envs": 8, "train.horizon": 16,
            "train.minibatch_size": 96, "log.dashboard": "off", "policy.hidden": 32,
            "env.max_steps": 9, "log.run_dir": str(tmp_path / name),
            # the synchronous float32 torch path on one torch thread (learner threads' own
            # setting) unless a test asks otherwise (breakout ships the fused overlapped
            # rollout with precision auto)
            "train.rollout": "torch", "train.overlap": False, "train.precision": "float32",
            "train.torch_threads": 1}
    over.update(overrides)
    return Trainer(build_config(env, overrides=over))


def test_shard_bounds_cover_every_segment_once():
    assert shard_bounds(6, 2) == [(0, 3), (3, 6)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(1, 4) == [(0, 1)]            # fewer segments than threads


@pytest.mark.parametrize("policy,threads,env", [("mlp", 2, "breakout"), ("lstm", 2, "breakout"),
                                                ("lstm", 3, "breakout"),
                                                ("mlp", 2, "g2048")])   # action masks sharded too
def test_shards_sum_to_the_minibatch_loss_and_gradient(tmp_path, policy, threads, env):
    tr = _trainer(tmp_path, policy, env, **{"policy.name": policy,
                                            "train.learner_threads": threads,
                                            "train.rollout": "fused"})
    try:
        with tr.process_state.active():
            tr.rollout()
            estimate_advantages(tr)
            b = tr.storage
            idx = torch.tensor([5, 0, 7, 2, 3, 6])
            mb = Minibatch(b, idx, torch.linspace(0.5, 1.0, len(idx)))
            if env == "g2048":
                assert not bool(mb.action_masks.all()), "the case must mask some actions"
            params = [p for p in tr.policy.parameters() if p.requires_grad]
            with torch.no_grad():   # a policy other than the one that acted: KL and ratios != 1
                gen = torch.Generator().manual_seed(0)
                for p in params:
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
            loss, stats, adv = ppo_loss(tr.policy, tr.distribution, mb, tr.config.train,
                                        tr.forward)
            whole = torch.autograd.grad(loss, params)
            before = threading.active_count()
            sharded_stats, sharded_adv = tr.learner.loss_and_gradients(mb, target_kl=0.0)
            assert threading.active_count() == before + threads - 1   # helpers kept for reuse
            assert torch.allclose(sharded_adv, adv, atol=1e-6)
            for k in stats:
                assert float(sharded_stats[k]) == pytest.approx(float(stats[k]), rel=1e-4,
                                                                abs=1e-6), k
            for p, g in zip(params, whole):
                assert p.grad is not None
                assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)
            # a KL limit below this minibatch's KL: no gradient, on every shard
            for p in params:
                p.grad = None
            kl = float(stats["approx_kl"])
            assert kl > 0
            assert tr.learner.loss_and_gradients(mb, target_kl=kl / 2) is None
            assert all(p.grad is None for p in params)
    finally:
        tr.close()
    assert not any(t.name.startswith("shoal-learner") for t in threading.enumerate())


def test_a_failing_shard_raises_its_error_and_the_others_stop(tmp_path):
    tr = _trainer(tmp_path, "fail", **{"train.learner_threads": 2})
    try:
        with tr.process_state.active():
            tr.rollout()
            estimate_advantages(tr)
            mb = Minibatch(tr.storage, torch.arange(4), torch.ones(4))
            mb.obs = mb.obs[:, :, :5]           # a shape the policy cannot take
            with pytest.raises(RuntimeError, match="shape|size"):
                tr.learner.loss_and_gradients(mb, target_kl=0.0)
            # the learner still works after an error
            good = Minibatch(tr.storage, torch.arange(4), torch.ones(4))
            assert tr.learner.loss_and_gradients(good, target_kl=0.0) is not None
    finally:
        tr.close()


@pytest.mark.parametrize("rollout,overlap", [("torch", False), ("fused", True)])
def test_learner_threads_are_deterministic_and_resume_exactly(tmp_path, rollout, overlap):
    over = {"train.total_steps": 5 * 16 * 16, "env.num_envs": 16, "train.horizon": 16,
            "train.minibatch_size": 128, "log.dashboard": "off", "policy.name": "lstm",
            "policy.hidden": 16, "train.rollout": rollout, "train.overlap": overlap,
            "train.precision": "float32", "train.learner_threads": 2, "env.max_steps": 11}
    assert_repeats_and_resumes_exactly(tmp_path, "breakout", over)
    # one learner thread trains on the same batches with the same schedule: the first epoch's
    # losses agree up to the rounding of the shards' separate sums
    Trainer(build_config("breakout", overrides=dict(over, **{
        "log.run_dir": str(tmp_path / "one"), "train.learner_threads": 1}))).train()
    first_two, first_one = metric_rows(tmp_path / "a")[0][1], metric_rows(tmp_path / "one")[0][1]
    for k in ("policy", "value", "entropy"):
        assert first_two[k] == pytest.approx(first_one[k], rel=1e-3, abs=1e-6), k


def test_learner_threads_leave_torch_threads_as_they_were(tmp_path):
    before = torch.get_num_threads()
    over = {"train.total_steps": 2 * 8 * 16, "train.learner_threads": 2,
            "train.rollout": "fused", "train.overlap": True, "train.torch_threads": 2}
    _trainer(tmp_path, "restore", **over).train()
    assert torch.get_num_threads() == before
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("shoal-learner") for n in names), names


def test_learner_threads_refuse_what_they_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="compile"):
        _trainer(tmp_path, "c", **{"train.learner_threads": 2, "train.compile": True})
    with pytest.raises(ConfigError, match="learner_threads"):
        build_config("breakout", overrides={"train.learner_threads": 0})


def _openmp_max_threads():
    """omp_get_max_threads of the calling thread, from the OpenMP runtime torch loaded."""
    import ctypes

    with open("/proc/self/maps") as fh:
        libs = {line.split()[-1] for line in fh if "libgomp" in line or "libiomp" in line}
    if not libs:
        pytest.skip("torch is not using an OpenMP runtime this test can query")
    return ctypes.CDLL(sorted(libs)[0]).omp_get_max_threads()


def test_helper_threads_run_torch_ops_on_the_trainers_thread_count(tmp_path):
    """OpenMP's thread count is per thread and a new thread starts with one per core: a helper
    left so would run every op on all cores while the trainer's thread and the rollout use
    them (on a 2-core machine 10x slower)."""
    from shoal.trainer.learner_threads import ShardedLearner

    tr = _trainer(tmp_path, "omp", **{"train.rollout": "fused"})
    seen = []
    try:
        with tr.process_state.active():
            assert torch.get_num_threads() == 1
            tr.rollout()
            estimate_advantages(tr)

            def loss_fn(mb, ranks):
                seen.append((threading.current_thread().name, _openmp_max_threads()))
                return ppo_loss(tr.policy, tr.distribution, mb, tr.config.train, tr.forward,
                                ranks)

            learner = ShardedLearner(tr.policy, 2, loss_fn)
            try:
                for _ in range(2):
                    learner.loss_and_gradients(
                        Minibatch(tr.storage, torch.arange(4), torch.ones(4)), target_kl=0.0)
            finally:
                learner.close()
    finally:
        tr.close()
    assert any(name.startswith("shoal-learner") for name, _ in seen)
    assert [n for _, n in seen] == [1] * 4, seen
