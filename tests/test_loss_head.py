"""The loss head in C (shoal/trainer/loss_head.py, ppo_head.c) against ppo_loss's torch ops.

Each test runs ppo_loss twice on the same minibatch of a real trainer, ``train.loss_head =
"torch"`` and ``"auto"`` (the C head wherever it applies), and compares the loss, its
statistics, the advantages and every parameter's gradient. The C head sums in double precision
and in another order, so the two agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import shoal
from shoal.trainer import loss_head
from shoal.trainer._ppo_head import loss as c_loss
from shoal.trainer._ppo_head import ratios as c_ratios
from shoal.trainer.config import apply_overrides, build_config, default_config
from shoal.trainer.ppo import Minibatch, Trainer, ppo_loss
from support.stale_batches import overlapped_trainer, stale_minibatch


def both_heads(tr: Trainer, mb: Minibatch, expect_c: bool = True) -> dict[str, Any]:
    """ppo_loss of ``mb`` with the torch ops and with ``loss_head = "auto"``: each one's loss,
    statistics, advantages and gradients; asserts which head "auto" took."""
    t = tr.config.train
    out = {}
    for head in ("torch", "auto"):
        t.loss_head = head
        tr.policy.zero_grad(set_to_none=True)
        loss, stats, adv = ppo_loss(tr.policy, tr.distribution, mb, t)
        in_c = type(loss.grad_fn).__name__.startswith("_WithGradients")
        assert in_c == (head == "auto" and expect_c), (head, type(loss.grad_fn).__name__)
        loss.backward()
        out[head] = (loss.detach().clone(), {k: float(v) for k, v in stats.items()}, adv.clone(),
                     [p.grad.clone() for p in tr.policy.parameters()])
    t.loss_head = "auto"
    return out


def assert_heads_agree(out: dict[str, Any], rtol: float = 1e-5) -> None:
    """Loss and statistics to float32 rounding; each gradient to ``rtol`` of its largest entry."""
    (loss_t, stats_t, adv_t, grads_t), (loss_c, stats_c, adv_c, grads_c) = \
        out["torch"], out["auto"]
    # the same Python code computes them, from ratios rounded by two exp implementations
    assert torch.allclose(adv_t, adv_c, rtol=1e-5, atol=1e-6)
    assert float(loss_c) == pytest.approx(float(loss_t), rel=1e-5, abs=1e-6)
    for key, value in stats_t.items():
        assert stats_c[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for g_t, g_c in zip(grads_t, grads_c):
        scale = float(g_t.abs().max()) + 1e-12
        assert float((g_t - g_c).abs().max()) <= rtol * scale + 1e-9
    assert any(float(g.abs().max()) > 0 for g in grads_c)


@pytest.mark.parametrize("mode", ["learner", "collector", "collector_later"])
@pytest.mark.parametrize("settings", [
    {},
    {"train.overlap_weight_cap": 1.0, "train.vf_clip_coef": 0.0},
    {"train.norm_adv": False, "train.clip_coef": 0.1},
])
def test_a_stale_batch_gives_the_torch_loss_and_gradients(tmp_path, mode, settings):
    tr = overlapped_trainer(tmp_path, **{"train.overlap_advantages": mode, **settings})
    with tr.process_state.active():
        # a spread of 1 puts many steps outside the clip windows on both sides
        _, mb = stale_minibatch(tr, seed=3, spread=1.0)
        mb.weights = torch.linspace(0.5, 1.5, mb.weights.numel())
        mb.masks[::3, 5:] = 0.0        # rows that must count for nothing
        mb.masks[1, :] = 0.0
        assert_heads_agree(both_heads(tr, mb))
    tr.close()


def test_a_fresh_batch_of_the_synchronous_path_gives_the_torch_loss(tmp_path):
    tr = overlapped_trainer(tmp_path, **{"train.rollout": "torch", "train.overlap": False})
    with tr.process_state.active():
        tr.run_epoch()
        tr.rollout()
        b = tr.storage
        mb = Minibatch(b, torch.tensor([0, 2, 5, 7]), torch.tensor([0.7, 1.0, 1.3, 0.9]))
        assert mb.collector_ratio is None
        # the policy moved since it acted: ratios away from 1, some clipped
        with torch.no_grad():
            for p in tr.policy.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
        out = both_heads(tr, mb)
        assert out["torch"][1]["clipfrac"] > 0
        # the moved policy is near-certain of some actions (p ~ 1 - 1e-4): the torch ops'
        # log_softmax backward forms their 1 - p as a difference of p from 1, the C head as
        # -expm1(log p); both carry log p's float32 rounding, and the two differ in the third
        # digit of such a 1 - p, which shows in the gradients at ~1e-4
        assert_heads_agree(out, rtol=1e-3)
    tr.close()


class Aim(gym.Env):
    """Observations a random vector; actions a MultiDiscrete (or any given space)."""

    def __init__(self, action_space: spaces.Space) -> None:
        self.observation_space = spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = action_space
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float(np.sum(np.asarray(action, dtype=np.float64)))
        obs = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return obs, reward, False, self.t >= 5, {}


def _gym_trainer(tmp_path, space: spaces.Space) -> Trainer:
    cfg = default_config()
    apply_overrides(cfg, {"train.total_steps": 4 * 8 * 8, "train.horizon": 8,
                          "train.minibatch_size": 32, "log.dashboard": "off",
                          "policy.hidden": 16})
    env = shoal.from_gymnasium(lambda: Aim(space), num_envs=4, seed=0)
    return Trainer(cfg, env=env, run_dir=str(tmp_path / "run"))


@pytest.mark.parametrize("space, expect_c", [
    (spaces.MultiDiscrete([3, 3]), True),        # even groups: one softmax group per dimension
    (spaces.Discrete(4, start=2), True),         # the stored actions start at 2
    (spaces.MultiDiscrete([3, 2]), False),       # uneven: torch ops
    (spaces.Box(-1, 1, (2,), np.float32), False),
])
def test_action_spaces_the_c_head_takes_and_those_it_leaves(tmp_path, space, expect_c):
    tr = _gym_trainer(tmp_path, space)
    with tr.process_state.active():
        tr.run_epoch()
        tr.rollout()
        with torch.no_grad():
            for p in tr.policy.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.3)
        mb = Minibatch(tr.storage, torch.arange(tr.S), torch.ones(tr.S))
        assert_heads_agree(both_heads(tr, mb, expect_c))
    tr.close()


def test_action_masks_give_the_torch_loss(tmp_path):
    """tetris writes action masks: masked logits enter the C head as ppo_loss masks them."""
    tr = Trainer(build_config("tetris", overrides={
        "env.num_envs": 4, "train.horizon": 8, "train.minibatch_size": 16,
        "train.total_steps": 10**5, "log.dashboard": "off", "policy.hidden": 16,
        "log.run_dir": str(tmp_path / "run")}))
    assert tr.config.train.action_masks in ("auto", "on")
    with tr.process_state.active():
        tr.run_epoch()
        tr.rollout()
        mb = Minibatch(tr.storage, torch.arange(tr.S), torch.ones(tr.S))
        assert not bool(mb.action_masks.all())      # some actions really are masked
        with torch.no_grad():
            for p in tr.policy.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(4)) * 0.3)
        assert_heads_agree(both_heads(tr, mb))
    tr.close()


def test_self_normalised_weights_keep_the_torch_ops(tmp_path):
    tr = overlapped_trainer(tmp_path, **{"train.overlap_weight_norm": True})
    with tr.process_state.active():
        _, mb = stale_minibatch(tr, seed=5, spread=0.5)
        assert_heads_agree(both_heads(tr, mb, expect_c=False))
    tr.close()


def test_training_runs_match_across_the_heads(tmp_path):
    """Two epochs of breakout's shipped path (overlap, collector_later) per head: the same
    episodes, losses equal to float32 rounding."""
    logs = {}
    for head in ("torch", "auto"):
        tr = overlapped_trainer(tmp_path / head, **{"train.loss_head": head,
                                                    "train.overlap_advantages":
                                                        "collector_later",
                                                    "train.total_steps": 2 * 8 * 16})
        logs[head] = []
        tr.callback = lambda trainer, metrics, into=logs[head]: into.append(dict(metrics)) \
            and False
        tr.train()
        tr.close()
    assert len(logs["torch"]) == len(logs["auto"]) == 2
    for a, b in zip(logs["torch"], logs["auto"]):
        for key in ("loss/policy", "loss/value", "loss/entropy", "loss/approx_kl"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


# ---- bad input: clear errors, never a fault ----

def _arrays(n: int = 6, groups: int = 1, choices: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"logits": rng.standard_normal((n, groups * choices)).astype(np.float32),
            "actions": rng.integers(0, choices, (n, groups)).astype(np.int64),
            "old": rng.standard_normal(n).astype(np.float32)}


def test_an_action_outside_the_space_is_named():
    a = _arrays()
    a["actions"][4, 0] = 3
    outs = [np.empty(6, np.float32) for _ in range(3)] + [np.empty(6, np.float32)]
    with pytest.raises(ValueError, match="row 4 holds action 3, outside"):
        c_ratios(a["logits"], a["actions"], a["old"], 1, 0, *outs)
    a["actions"][4, 0] = -1
    with pytest.raises(ValueError, match="row 4 holds action -1"):
        c_ratios(a["logits"], a["actions"], a["old"], 1, 0, *outs)


def test_wrong_sizes_and_types_are_refused():
    a = _arrays()
    outs = [np.empty(6, np.float32) for _ in range(3)] + [np.empty(6, np.float32)]
    with pytest.raises(ValueError, match="'actions' has 5 values but must have 6"):
        c_ratios(a["logits"], a["actions"][:5], a["old"], 1, 0, *outs)
    with pytest.raises(TypeError, match="'actions' must have dtype int64"):
        c_ratios(a["logits"], a["actions"].astype(np.int32), a["old"], 1, 0, *outs)
    with pytest.raises(ValueError, match="not a whole number"):
        c_ratios(a["logits"], a["actions"], a["old"], 4, 0, *outs)   # 18 logits, 6 x 4 groups
    with pytest.raises(TypeError, match="writable"):
        ro = np.empty(6, np.float32)
        ro.flags.writeable = False
        c_ratios(a["logits"], a["actions"], a["old"], 1, 0, ro, *outs[1:])
    with pytest.raises(TypeError, match="C-contiguous"):
        c_ratios(a["logits"], a["actions"], a["old"][::2], 1, 0, *outs)
    n, T = 6, 3
    f = lambda k: np.ones(k, np.float32)  # noqa: E731
    args = [a["logits"], a["actions"], 1, 0, f(n), f(n), f(n), f(n), f(n), f(2 * (T + 1)), T,
            f(n),
            f(n), f(n), f(2), None, 0.0, 1.0, 6.0, 0.2, 2.0, 2.0, 0.2, 0.5, 0.01,
            np.empty((n, 3), np.float32), np.empty(n, np.float32)]
    assert len(c_loss(*args)) == 6
    bad = list(args)
    bad[9] = f(2 * T)       # old values without their bootstrap column
    with pytest.raises(ValueError, match="'old_values' has 6 values but must have 8"):
        c_loss(*bad)
    bad = list(args)
    bad[10] = 4             # not whole segments
    with pytest.raises(ValueError, match="whole segments"):
        c_loss(*bad)
    bad = list(args)
    bad[18] = 0.0           # a count of 0
    with pytest.raises(ValueError, match="count=0"):
        c_loss(*bad)

