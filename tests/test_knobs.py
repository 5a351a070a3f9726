"""The trainer's algorithm knobs against references: minibatches as passes, reward scaling,
target-KL early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shoal.trainer.config import build_config
from shoal.trainer.normalize import ReturnScaler, RunningMeanStd
from shoal.trainer.ppo import Trainer
from shoal.trainer.sampling import segment_passes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = {"log.dashboard": "off", "log.checkpoint_interval": 10_000}


@pytest.mark.parametrize("S, n, passes", [(64, 16, 1), (64, 16, 3), (10, 3, 2), (5, 5, 4),
                                          (7, 1, 1)])
def test_passes_use_every_segment_exactly_once_per_pass(S, n, passes):
    g = torch.Generator().manual_seed(0)
    chunks = segment_passes(S, n, passes, g)
    per_pass = -(-S // n)
    assert len(chunks) == per_pass * passes
    for p in range(passes):
        mine = chunks[p * per_pass:(p + 1) * per_pass]
        assert sorted(torch.cat(mine).tolist()) == list(range(S))
        sizes = [len(c) for c in mine]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= n
    if passes > 1 and S > 2:  # each pass is a fresh permutation
        assert not torch.equal(torch.cat(chunks[:per_pass]), torch.cat(chunks[per_pass:2 * per_pass]))
    again = segment_passes(S, n, passes, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(chunks, again))


def test_passes_reject_bad_sizes():
    with pytest.raises(ValueError, match="segments_per_minibatch=9 must be in"):
        segment_passes(8, 9, 1)
    with pytest.raises(ValueError, match="passes=0"):
        segment_passes(8, 2, 0)


def _trainer(tmp_path, **over):
    overrides = dict(RUN, **{"log.run_dir": str(tmp_path / "run"), "train.total_steps": 1024 * 3})
    overrides.update(over)
    return Trainer(build_config("bandit", overrides=overrides))


def test_update_epochs_are_whole_passes_over_the_batch(tmp_path):
    """With passes, the trainer visits every segment update_epochs times; independent draws
    (the other mode) leave some segments out and use others several times."""
    seen: list[torch.Tensor] = []
    import shoal.trainer.ppo as ppo

    trainer = _trainer(tmp_path, **{"train.update_epochs": 3, "train.minibatches": "passes"})
    original = ppo.Minibatch.__init__

    def record(self, storage, idx, *rest):  # records what the real Minibatch is built from
        seen.append(idx.clone())
        original(self, storage, idx, *rest)

    ppo.Minibatch.__init__ = record
    try:
        trainer.rollout()
        stats = trainer.update()
    finally:
        ppo.Minibatch.__init__ = original
        trainer.close()
    S = trainer.S
    counts = torch.bincount(torch.cat(seen), minlength=S)
    assert stats["minibatches"] == len(seen) == 3 * (S // (256 // 16))
    assert counts.tolist() == [3] * S


def test_reward_scaler_matches_a_reference_loop():
    rng = np.random.default_rng(0)
    S, T, gamma = 6, 50, 0.9
    rewards = rng.normal(-1.0, 3.0, (T, S))
    dones = rng.random((T, S)) < 0.1
    scaler = ReturnScaler(S, gamma)
    got = np.zeros((T, S))
    for t in range(T):
        r = torch.tensor(rewards[t], dtype=torch.float32)
        scaler.scale_(r, torch.tensor(dones[t]), slice(0, S))
        got[t] = r.numpy()
    # reference: the discounted return per row, reset after the step that ends an episode;
    # the mean square of every return seen so far; rewards divided by its square root
    ret = np.zeros(S)
    seen: list[float] = []
    want = np.zeros((T, S))
    for t in range(T):
        ret = ret * gamma + rewards[t]
        seen.extend(ret.tolist())
        want[t] = rewards[t] / np.sqrt(np.mean(np.square(seen)) + 1e-8)
        ret = ret * (1 - dones[t])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (np.sign(got) == np.sign(rewards)).all()   # scale only, never sign or offset


@pytest.mark.parametrize("groups,live_fraction", [
    ([(0, 37)], 1.0),                       # one group, every row live
    ([(0, 3), (3, 8), (8, 37)], 1.0),       # unaligned groups (the torch rollout's buffers)
    ([(0, 3), (3, 8), (8, 37)], 0.7),       # dead rows left out of the statistics
    ([(0, 20), (20, 37)], 0.0)])            # no live row at all: statistics unchanged
def test_reward_scaler_segment_equals_its_steps_bit_for_bit(groups, live_fraction):
    """scale_segment_ (the fused rollout's, after its C call) leaves the same scaled rewards
    and statistics as scale_ called step by step, group by group (the torch rollout's)."""
    rng = np.random.default_rng(2)
    S, T, gamma = 37, 19, 0.97
    groups = [slice(lo, hi) for lo, hi in groups]
    stepwise, segment = ReturnScaler(S, gamma), ReturnScaler(S, gamma)
    for _ in range(3):          # carried returns and statistics across segments
        rewards = torch.tensor(rng.normal(-0.3, 2.0, (S, T)), dtype=torch.float32)
        rewards[0, 0] = -0.0
        dones = torch.tensor(rng.random((S, T)) < 0.15, dtype=torch.float32)
        live = torch.tensor(rng.random((S, T)) < live_fraction, dtype=torch.float32)
        want = rewards.clone()
        for t in range(T):
            for rows in groups:
                stepwise.scale_(want[rows, t], dones[rows, t], rows, live[rows, t])
        got = segment.scale_segment_(rewards, dones, live, groups)
        assert got is rewards
        assert torch.equal(want, rewards) and torch.equal(want.signbit(), rewards.signbit())
        for x, y in ((stepwise.returns, segment.returns), (stepwise.stats.mean, segment.stats.mean),
                     (stepwise.stats.var, segment.stats.var),
                     (stepwise.stats.count, segment.stats.count)):
            assert x.dtype == y.dtype == torch.float64 and torch.equal(x, y)
    assert float(segment.stats.count) == 3 * T * S * live_fraction or live_fraction not in (0, 1)


def test_reward_scaling_of_a_constant_penalty_stays_finite_and_unit_free():
    """Every return equal (a constant per-step penalty): scaled rewards stay near 1 in size and
    the same for any reward unit."""
    out = []
    for unit in (0.01, 1.0, 100.0):
        scaler = ReturnScaler(4, 0.99)
        steps = []
        for _ in range(20):
            r = torch.full((4,), -unit)
            scaler.scale_(r, torch.zeros(4), slice(0, 4))
            steps.append(r.clone())
        out.append(torch.stack(steps))
    assert float(out[1].abs().max()) <= 1.0
    torch.testing.assert_close(out[0], out[1], rtol=1e-3, atol=0)  # ε: 1e-8
    torch.testing.assert_close(out[2], out[1], rtol=1e-5, atol=0)


def test_running_mean_std_matches_gymnasiums():
    from gymnasium.wrappers.utils import RunningMeanStd as Reference

    rng = np.random.default_rng(1)
    mine, ref = RunningMeanStd(), Reference(epsilon=1e-12)
    for n in (1, 5, 100, 3):
        x = rng.normal(3.0, 2.0, n)
        mine.update(torch.tensor(x))
        ref.update(x)
    assert float(mine.mean) == pytest.approx(float(ref.mean), rel=1e-9)
    assert float(mine.var) == pytest.approx(float(ref.var), rel=1e-9)


def test_reward_scaling_is_kept_in_checkpoints(tmp_path):
    summary = _trainer(tmp_path, **{"train.norm_reward": True}).train()
    ckpt = torch.load(summary["checkpoint"], weights_only=False)
    stats = ckpt["reward_scaler"]["stats"]
    assert float(stats["count"]) > 0 and float(stats["var"]) != 1.0
    resumed = Trainer.resume(str(tmp_path / "run"), overrides={"train.total_steps": 1024 * 4,
                                                               "log.dashboard": "off"})
    try:
        assert float(resumed.reward_scaler.stats.count) == float(stats["count"])
        assert torch.equal(resumed.reward_scaler.returns.cpu(), ckpt["reward_scaler"]["returns"])
    finally:
        resumed.close()


def test_target_kl_stops_the_update_early(tmp_path):
    """A tiny target stops after the first gradient step (the first minibatch is scored against
    the unchanged rollout policy, KL 0); off, every minibatch runs."""
    over = {"train.update_epochs": 4, "train.learning_rate": 0.05}
    tight = _trainer(tmp_path / "a", **over, **{"train.target_kl": 1e-6})
    free = _trainer(tmp_path / "b", **over)
    try:
        tight.rollout()
        free.rollout()
        stopped, full = tight.update(), free.update()
    finally:
        tight.close()
        free.close()
    assert full["minibatches"] == 4 * (tight.S // 16)
    assert 1 <= stopped["minibatches"] < full["minibatches"]


@pytest.mark.parametrize("schedule_steps", [0, 8192])
def test_schedules_span_schedule_steps(tmp_path, schedule_steps):
    """The learning-rate cosine and prio beta's rise follow schedule_steps (0: total_steps), so a
    run can stop part-way along a longer budget's schedules."""
    from shoal.trainer.ppo import cosine_lr
    from shoal.trainer.sampling import anneal_beta

    trainer = _trainer(tmp_path, **{"train.schedule_steps": schedule_steps,
                                    "train.learning_rate": 0.01, "train.prio_beta0": 0.2,
                                    "train.prio_alpha": 0.5})
    span = schedule_steps or trainer.config.train.total_steps
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 3 and summary["agent_steps"] == 3072
    for r in records:  # each update runs at the steps collected before it
        before = r["agent_steps"] - 1024
        assert r["lr"] == pytest.approx(cosine_lr(0.01, before / span))
        assert r["beta"] == pytest.approx(anneal_beta(0.2, before / span))
    assert records[-1]["lr"] > 0.008 if schedule_steps else records[-1]["lr"] < 0.003
