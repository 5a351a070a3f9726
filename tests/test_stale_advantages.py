"""The stale batch's advantages corrected to the collector (train.overlap_advantages;
stale_batch.stale_advantages) and its self-normalised importance weights
(train.overlap_weight_norm; stale_batch.self_normalised).

An overlapped run's batch was acted by the weights one update behind the learner. By default its
V-trace advantages use the ratio of the current policy to the learner's anchor, as if the learner
had acted; ``collector`` uses the ratio to the collector in every step (IMPALA's correction), and
``collector_later`` corrects only the steps after each step's own.
"""

import copy

import numpy as np
import pytest
import torch

from shoal.trainer.advantage import advantages_reference
from shoal.trainer.config import ConfigError, build_config
from shoal.trainer.ppo import Trainer, ppo_loss, replay
from shoal.trainer.stale_batch import COLLECTOR_CLIP, self_normalised, stale_advantages
from support.stale_batches import overlapped_trainer, stale_minibatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAMMA, LAM = 0.97, 0.9


def _batch(S=6, T=14, seed=0):
    """A small float64 batch with episode ends, and ratios on both sides of the clips."""
    g = np.random.default_rng(seed)
    values = g.normal(size=(S, T + 1))
    rewards = g.normal(size=(S, T))
    dones = (g.random((S, T)) < 0.15).astype(np.float64)
    ratio = np.exp(g.uniform(-0.4, 0.4, size=(S, T)))
    collector = np.exp(g.uniform(-1.0, 1.0, size=(S, T)))
    return values, rewards, dones, ratio, collector


def _torch(*arrays):
    return [torch.from_numpy(a) for a in arrays]


@pytest.mark.parametrize("rho_clip,c_clip", [(1.0, 1.0), (0.8, 2.5)])
def test_collector_mode_is_vtrace_with_the_ratio_to_the_collector(rho_clip, c_clip):
    """``collector``: the advantages are the V-trace recurrence (advantages_reference) with
    ρ_t = min(rho_clip, π_current / π_collector), c_t = min(c_clip, same), where that ratio is the
    PPO ratio times the learner-to-collector ratio; the returns are advantages + values."""
    values, rewards, dones, ratio, collector = _batch()
    adv, returns = stale_advantages(*_torch(values, rewards, dones, ratio, collector),
                                    "collector", GAMMA, LAM, rho_clip, c_clip)
    reference = advantages_reference(values, rewards, dones, ratio * collector, GAMMA, LAM,
                                     rho_clip, c_clip)
    np.testing.assert_allclose(adv.numpy(), reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(returns.numpy(), reference + values[:, :-1], rtol=1e-12,
                               atol=1e-12)
    # the correction bites: the uncorrected (learner) advantages differ
    learner, _ = stale_advantages(*_torch(values, rewards, dones, ratio, collector), "learner",
                                  GAMMA, LAM, rho_clip, c_clip)
    assert np.abs(learner.numpy() - reference).max() > 0.1


def test_collector_later_corrects_only_the_steps_after_each_step():
    """``collector_later``, written out step by step: A_t = min(r_t, ρ̄) δ_t + γ λ min(r_t, c̄)
    (1 - done_t) A^col_{t+1} with r the PPO ratio and A^col the collector-corrected advantages
    (themselves a hand loop here); the returns are the collector mode's."""
    values, rewards, dones, ratio, collector = _batch(seed=1)
    rho_clip, c_clip = 1.0, 1.0
    S, T = rewards.shape
    q = ratio * collector
    a_col = np.zeros((S, T + 1))
    expected = np.zeros((S, T))
    for s in range(S):
        for t in range(T - 1, -1, -1):
            nonterminal = 1.0 - dones[s, t]
            delta = rewards[s, t] + GAMMA * values[s, t + 1] * nonterminal - values[s, t]
            a_col[s, t] = (min(q[s, t], rho_clip) * delta
                           + GAMMA * LAM * min(q[s, t], c_clip) * nonterminal * a_col[s, t + 1])
            expected[s, t] = (min(ratio[s, t], rho_clip) * delta
                              + GAMMA * LAM * min(ratio[s, t], c_clip) * nonterminal
                              * a_col[s, t + 1])
    adv, returns = stale_advantages(*_torch(values, rewards, dones, ratio, collector),
                                    "collector_later", GAMMA, LAM, rho_clip, c_clip)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(returns.numpy(), a_col[:, :T] + values[:, :-1], rtol=1e-10,
                               atol=1e-10)


def test_every_mode_is_the_synchronous_formula_when_the_collector_is_the_learner():
    """With a learner-to-collector ratio of 1 everywhere each mode gives the learner's
    (synchronous) advantages and returns."""
    values, rewards, dones, ratio, collector = _batch(seed=2)
    inputs = _torch(values, rewards, dones, ratio, np.ones_like(collector))
    learner = stale_advantages(*inputs, "learner", GAMMA, LAM, 1.0, 1.0)
    reference = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0)
    np.testing.assert_allclose(learner[0].numpy(), reference, rtol=1e-12, atol=1e-12)
    for mode in ("collector", "collector_later"):
        adv, returns = stale_advantages(*inputs, mode, GAMMA, LAM, 1.0, 1.0)
        np.testing.assert_allclose(adv.numpy(), reference, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(returns.numpy(), learner[1].numpy(), rtol=1e-10, atol=1e-10)


def test_an_unknown_mode_is_refused_by_name():
    values, rewards, dones, ratio, collector = _batch()
    with pytest.raises(ValueError, match="overlap_advantages='vtrace'.*collector_later"):
        stale_advantages(*_torch(values, rewards, dones, ratio, collector), "vtrace", GAMMA,
                         LAM, 1.0, 1.0)
    with pytest.raises(ConfigError, match="overlap_advantages"):
        build_config("breakout", overrides={"train.overlap_advantages": "vtrace"})


@pytest.mark.parametrize("mode", ["collector", "collector_later"])
def test_the_loss_of_a_stale_batch_uses_the_corrected_advantages_and_returns(tmp_path, mode):
    """ppo_loss on an anchored stale batch with train.overlap_advantages set: its policy term
    and value loss, recomputed in numpy from the corrected advantages and returns, with the
    weights and clip window of the stale batch; and both differ from the default's."""
    tr = overlapped_trainer(tmp_path, **{"train.norm_adv": False, "train.vf_clip_coef": 0.0,
                                         "train.overlap_advantages": mode})
    t = tr.config.train
    try:
        with tr.process_state.active():
            batch, mb = stale_minibatch(tr, seed=0, spread=1.0)
            _, stats, _ = ppo_loss(tr.policy, tr.distribution, mb, t)
            default = copy.copy(t)
            default.overlap_advantages = "learner"
            _, default_stats, _ = ppo_loss(tr.policy, tr.distribution, mb, default)
            with torch.no_grad():
                newlogp, _, newvalues = replay(tr.policy, tr.distribution, mb)
        T = batch.T
        f64 = lambda x: x.numpy().astype(np.float64)  # noqa: E731
        ratio = np.exp(f64(newlogp) - f64(batch.logprobs[:, :T]))
        behind = f64(batch.collector_ratio)
        values, rewards, dones = f64(batch.values), f64(batch.rewards), f64(batch.dones)
        a_col = advantages_reference(values, rewards, dones, ratio * behind, t.gamma,
                                     t.gae_lambda, t.rho_clip, t.c_clip)
        if mode == "collector":
            adv = a_col
        else:
            nonterminal = 1.0 - dones
            delta = rewards + t.gamma * values[:, 1:] * nonterminal - values[:, :-1]
            later = np.concatenate([a_col[:, 1:], np.zeros((batch.S, 1))], axis=1)
            adv = (np.minimum(ratio, t.rho_clip) * delta + t.gamma * t.gae_lambda
                   * np.minimum(ratio, t.c_clip) * nonterminal * later)
        weighted = adv * np.minimum(behind, t.overlap_weight_cap)
        low = np.maximum((1 - COLLECTOR_CLIP * t.clip_coef) / behind, 1 - t.clip_coef)
        high = np.minimum((1 + COLLECTOR_CLIP * t.clip_coef) / behind, 1 + t.clip_coef)
        clipped = np.minimum(np.maximum(ratio, low), high)
        masks = f64(batch.masks[:, :T]) > 0
        policy = np.maximum(-weighted * ratio, -weighted * clipped)[masks].mean()
        value = 0.5 * ((f64(newvalues) - (a_col + values[:, :-1])) ** 2)[masks].mean()
        assert float(stats["policy"]) == pytest.approx(policy, rel=1e-4, abs=1e-7)
        assert float(stats["value"]) == pytest.approx(value, rel=1e-4, abs=1e-7)
        assert abs(float(default_stats["policy"]) - policy) > 1e-3 * max(1e-3, abs(policy))
        assert abs(float(default_stats["value"]) - value) > 1e-3 * max(1e-3, abs(value))
    finally:
        tr.close()


def test_the_synchronous_path_ignores_the_switch(tmp_path):
    """train.overlap_advantages only concerns a stale batch: a synchronous run with it set
    trains bit for bit as one without it."""
    over = {"train.total_steps": 4 * 8 * 16, "env.num_envs": 8, "train.horizon": 16,
            "train.minibatch_size": 32, "log.dashboard": "off", "policy.hidden": 32,
            "env.max_steps": 9, "train.rollout": "fused", "train.overlap": False,
            "train.precision": "float32"}
    weights = {}
    for mode in ("learner", "collector_later"):
        tr = Trainer(build_config("breakout", overrides=dict(
            over, **{"train.overlap_advantages": mode, "log.run_dir": str(tmp_path / mode)})))
        tr.train()
        weights[mode] = {k: v.clone() for k, v in tr.policy.state_dict().items()}
    for key, value in weights["learner"].items():
        assert torch.equal(value, weights["collector_later"][key]), key


# ---- train.overlap_weight_norm ----

def test_self_normalised_weights_average_one_over_the_unmasked_steps():
    """The truncated weights divided by their mean over the unmasked steps: they average 1
    there and keep their proportions; the masked steps do not enter the mean."""
    g = torch.Generator().manual_seed(0)
    weight = torch.exp(torch.empty(5, 9).uniform_(-1.0, 1.0, generator=g)).clamp(max=1.0)
    masks = (torch.rand(5, 9, generator=g) > 0.3).float()
    masks[0] = 1.0
    normalised = self_normalised(weight, masks)
    live = masks > 0
    assert float(normalised[live].mean()) == pytest.approx(1.0, rel=1e-6)
    assert float(weight[live].mean()) < 0.9     # the truncation had shrunk them
    torch.testing.assert_close(normalised / normalised[0, 0], weight / weight[0, 0])
    # a masked step's weight does not move the others
    moved = weight.clone()
    moved[~live] = 100.0
    torch.testing.assert_close(self_normalised(moved, masks)[live], normalised[live])


def test_the_loss_of_a_stale_batch_uses_the_normalised_weights(tmp_path):
    """ppo_loss with train.overlap_weight_norm: the policy term recomputed in numpy with each
    step's weight min(ratio to the collector, cap) divided by the weights' mean over the
    unmasked steps."""
    tr = overlapped_trainer(tmp_path, **{"train.norm_adv": False, "train.overlap_weight_cap": 1.0,
                                         "train.overlap_weight_norm": True})
    t = tr.config.train
    try:
        with tr.process_state.active():
            batch, mb = stale_minibatch(tr, seed=1, spread=1.0)
            _, stats, _ = ppo_loss(tr.policy, tr.distribution, mb, t)
            with torch.no_grad():
                newlogp, _, _ = replay(tr.policy, tr.distribution, mb)
        T = batch.T
        f64 = lambda x: x.numpy().astype(np.float64)  # noqa: E731
        ratio = np.exp(f64(newlogp) - f64(batch.logprobs[:, :T]))
        behind = f64(batch.collector_ratio)
        adv = advantages_reference(f64(batch.values), f64(batch.rewards), f64(batch.dones),
                                   ratio, t.gamma, t.gae_lambda, t.rho_clip, t.c_clip)
        masks = f64(batch.masks[:, :T]) > 0
        weight = np.minimum(behind, 1.0)
        weight = weight / weight[masks].mean()
        weighted = adv * weight
        low = np.maximum((1 - COLLECTOR_CLIP * t.clip_coef) / behind, 1 - t.clip_coef)
        high = np.minimum((1 + COLLECTOR_CLIP * t.clip_coef) / behind, 1 + t.clip_coef)
        clipped = np.minimum(np.maximum(ratio, low), high)
        policy = np.maximum(-weighted * ratio, -weighted * clipped)[masks].mean()
        assert float(stats["policy"]) == pytest.approx(policy, rel=1e-4, abs=1e-7)
    finally:
        tr.close()


def test_normalised_weights_on_split_minibatches_are_refused(tmp_path):
    """The mean needs the whole minibatch: learner threads (shards of it) are refused by name
    when the config is built, before a run directory exists or an epoch runs."""
    with pytest.raises(ConfigError, match="overlap_weight_norm.*learner_threads = 1"):
        overlapped_trainer(tmp_path, **{"train.norm_adv": False, "train.learner_threads": 2,
                                        "train.overlap_weight_norm": True})
    assert not (tmp_path / "run").exists()
