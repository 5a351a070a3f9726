"""Invalid-action masks: an env's mask keeps sampling off invalid actions, and the loss scores the
masked distribution the actor sampled from (shoal/trainer/action_masks.py). Checked against hand
computations, on g2048 (whose mask is "the move changes the board"), and on Gymnasium and
PettingZoo envs whose Dict observations carry an "action_mask"."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import shoal
from shoal.trainer.action_masks import MASKED_LOGIT, effective_mask, mask_logits
from shoal.trainer.config import ConfigError, apply_overrides, build_config, default_config
from shoal.trainer.distributions import make_distribution
from shoal.trainer.ppo import Minibatch, Trainer, replay
from support.training_runs import metric_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the masked distribution against hand computations ----

def _softmax_entropy(logits, valid):
    """log-probs and entropy of softmax over the valid logits only, computed by hand."""
    z = [math.exp(x) for x, v in zip(logits, valid) if v]
    total = sum(z)
    logp = [x - math.log(total) if v else -math.inf for x, v in zip(logits, valid)]
    entropy = -sum(math.exp(lp) * lp for lp in logp if lp != -math.inf)
    return logp, entropy


def test_masked_log_prob_and_entropy_equal_a_hand_computation():
    dist = make_distribution(spaces.MultiDiscrete([3, 2, 4]))
    logits = [0.3, -1.2, 2.0, 0.5, 0.1, -0.7, 1.5, 0.0, 3.0]
    valid = [True, False, True, False, True, True, False, True, True]
    params = torch.tensor([logits])
    masks = torch.tensor([valid])
    masked = mask_logits(params, masks, dist.nvec)
    actions = torch.tensor([[2, 1, 3]])
    logp, ent = dist.log_prob_and_entropy(masked, actions)
    want_logp, want_ent = 0.0, 0.0
    for (lo, hi), a in zip(((0, 3), (3, 5), (5, 9)), actions[0].tolist()):
        lp, e = _softmax_entropy(logits[lo:hi], valid[lo:hi])
        want_logp += lp[a]
        want_ent += e
    assert float(logp) == pytest.approx(want_logp, abs=1e-5)
    assert float(ent) == pytest.approx(want_ent, abs=1e-5)
    # an invalid action scores a probability of exactly 0 (in float32), not NaN
    bad = dist.log_prob(masked, torch.tensor([[1, 1, 3]]))
    assert float(bad) < -1e8 and math.isfinite(float(bad))


def test_a_dimension_with_no_valid_action_is_treated_as_all_valid():
    dist = make_distribution(spaces.MultiDiscrete([3, 2]))
    params = torch.tensor([[0.3, -1.2, 2.0, 0.5, 0.1], [1.0, 2.0, 3.0, 4.0, 5.0]])
    masks = torch.tensor([[False, False, False, True, False],     # dimension 0 all invalid
                          [False, False, False, False, False]])   # everything invalid
    assert effective_mask(masks, dist.nvec).tolist() == [[True, True, True, True, False],
                                                         [True] * 5]
    masked = mask_logits(params, masks, dist.nvec)
    assert torch.equal(masked[1], params[1])
    assert torch.equal(masked[0, :3], params[0, :3]) and float(masked[0, 4]) == MASKED_LOGIT
    ent = dist.entropy(masked)
    _, e0 = _softmax_entropy(params[0, :3].tolist(), [True] * 3)
    assert float(ent[0]) == pytest.approx(e0, abs=1e-5)   # dimension 1 has one choice: entropy 0


def test_gradients_are_finite_and_skip_masked_logits():
    dist = make_distribution(spaces.Discrete(5))
    params = torch.randn(6, 5, requires_grad=True)
    masks = torch.rand(6, 5) < 0.5
    masks[0] = False
    masked = mask_logits(params, masks, dist.nvec)
    actions = dist.mode(masked)
    logp, ent = dist.log_prob_and_entropy(masked, actions)
    (logp.sum() + ent.sum()).backward()
    assert torch.isfinite(params.grad).all()
    keep = effective_mask(masks, dist.nvec)
    assert (params.grad[~keep] == 0).all()


def test_torch_sampling_never_takes_a_masked_action_and_greedy_takes_the_best_valid_one():
    dist = make_distribution(spaces.Discrete(4))
    B = 20000
    params = torch.tensor([[4.0, 1.0, 0.0, 6.0]]).repeat(B, 1)   # masked ones are the likeliest
    masks = torch.tensor([[False, True, True, False]]).repeat(B, 1)
    masked = mask_logits(params, masks, dist.nvec)
    gen = torch.Generator().manual_seed(0)
    actions, logp = dist.sample_with_log_prob(masked, gen)
    assert set(actions.unique().tolist()) == {1, 2}
    freq = float((actions == 1).float().mean())
    assert freq == pytest.approx(math.exp(1) / (math.exp(1) + 1), abs=0.015)
    assert torch.isfinite(logp).all()
    assert dist.mode(masked)[0].item() == 1


# ---- g2048's mask ----

def test_g2048_mask_is_the_moves_that_change_the_board():
    """Each step, every move is tried from a snapshot: the mask says valid exactly when the move
    is not refused (an invalid move gives -invalid_penalty and leaves the board as it was)."""
    env = shoal.make("g2048", 3, seed=5, invalid_penalty=1.0, reward_scale=0.01)
    try:
        env.reset()
        assert env.action_masks.shape == (3, 4) and env.action_masks.dtype == np.bool_
        rng = np.random.default_rng(0)
        seen_invalid = 0
        for _ in range(60):
            snap = env.save_state()
            mask = env.action_masks.copy()
            boards = [env.state(i)["board"] for i in range(3)]
            for a in range(4):
                env.load_state(snap)
                env.step(np.full(3, a, np.int32))
                for i in range(3):
                    refused = env.rewards[i] == -1.0 and not (env.terminals[i] or env.truncations[i])
                    assert mask[i, a] == (not refused), (boards[i], a)
                    if refused:
                        assert env.state(i)["board"] == boards[i]
            seen_invalid += int((~mask).sum())
            env.load_state(snap)
            env.step(np.array([rng.choice(np.flatnonzero(m)) for m in mask], np.int32))
        assert seen_invalid > 0
    finally:
        env.close()


def test_tetris_mask_is_the_actions_that_do_something():
    """From a snapshot, each action's step is compared with a noop's: a masked action does
    exactly what a noop does (same observation and reward), a valid one does something else;
    noop and hard drop are always valid. (Without gravity, so that no piece locks on its own: a
    rotated O piece that locks looks like an unrotated one.)"""
    env = shoal.make("tetris", 4, seed=2, gravity_ticks=10_000)
    try:
        env.reset()
        assert env.action_masks.shape == (4, 8)
        rng = np.random.default_rng(0)
        seen_invalid = set()
        for _ in range(120):
            snap = env.save_state()
            mask = env.action_masks.copy()
            results = []
            for a in range(8):
                env.load_state(snap)
                env.step(np.full(4, a, np.int32))
                # on an episode end the observation is the next episode's first: compare the last
                results.append((np.where((env.terminals | env.truncations)[:, None],
                                         env.final_observations, env.observations),
                                env.rewards.copy(), env.terminals.copy()))
            for i in range(4):
                assert mask[i, 0] and mask[i, 6]
                for a in (1, 2, 3, 4, 5, 7):
                    same = (np.array_equal(results[a][0][i], results[0][0][i])
                            and results[a][1][i] == results[0][1][i]
                            and results[a][2][i] == results[0][2][i])
                    assert mask[i, a] == (not same), (i, a)
                    if not mask[i, a]:
                        seen_invalid.add(a)
            env.load_state(snap)
            env.step(np.array([rng.choice(np.flatnonzero(m)) for m in mask], np.int32))
        assert seen_invalid >= {1, 2, 7}
    finally:
        env.close()


def test_envs_without_masks_have_an_empty_mask_buffer_and_train_unmasked(tmp_path):
    env = shoal.make("breakout", 2)
    try:
        assert env.action_masks.shape == (2, 0)
    finally:
        env.close()
    over = {"train.total_steps": 64, "env.num_envs": 4, "train.horizon": 8,
            "train.minibatch_size": 32, "log.dashboard": "off", "log.run_dir": str(tmp_path / "b")}
    tr = Trainer(build_config("breakout", overrides=over))
    try:
        assert tr.env_action_masks is None and tr.storage.action_masks.shape[-1] == 0
    finally:
        tr.close()
    with pytest.raises(ConfigError, match="provides no action masks"):
        Trainer(build_config("breakout", overrides={**over, "train.action_masks": "on",
                                                    "log.run_dir": str(tmp_path / "c")}))


def _g2048_trainer(tmp_path, name, **over):
    base = {"train.total_steps": 10**6, "env.num_envs": 8, "train.horizon": 32,
            "train.minibatch_size": 128, "log.dashboard": "off", "policy.hidden": 32,
            "log.run_dir": str(tmp_path / name), "env.invalid_penalty": 1.0}
    base.update(over)
    return Trainer(build_config("g2048", overrides=base))


def test_the_loss_scores_the_distribution_the_actor_sampled_from(tmp_path):
    """Replaying a freshly collected batch with unchanged weights gives back the stored
    log-probs (ratio 1): the loss masks the same logits the actor masked. Without the stored
    masks the log-probs differ."""
    tr = _g2048_trainer(tmp_path, "r")
    try:
        tr.rollout()
        b = tr.storage
        assert not bool(b.action_masks[:, :tr.T].all())     # some moves were invalid
        taken = b.action_masks.gather(-1, b.actions.unsqueeze(-1))
        assert bool(taken.all())
        mb = Minibatch(b, torch.arange(tr.S), torch.ones(tr.S))
        with torch.no_grad():
            logp, ent, _ = replay(tr.policy, tr.distribution, mb)
            np.testing.assert_allclose(logp.numpy(), mb.logprobs.numpy(), atol=1e-5)
            assert torch.isfinite(ent).all()
            mb.action_masks = mb.action_masks[..., :0]       # the loss without masks
            unmasked, _, _ = replay(tr.policy, tr.distribution, mb)
        assert float((unmasked - mb.logprobs).abs().max()) > 1e-3
    finally:
        tr.close()


def test_g2048_training_with_masks_never_takes_an_invalid_move(tmp_path):
    """A short learning check that masks never break training: every step of every batch takes
    a valid move (no invalid-move penalty is ever paid), and the losses stay finite."""
    tr = _g2048_trainer(tmp_path, "m", **{"train.total_steps": 6 * 8 * 32})
    penalties = []
    try:
        for _ in range(6):
            tr.rollout()
            b = tr.storage
            assert bool(b.action_masks.gather(-1, b.actions.unsqueeze(-1)).all())
            penalties.append(int((b.rewards == -1.0).sum()))
            losses = tr.update()
            assert all(math.isfinite(v) for v in losses.values())
            b.shift()
    finally:
        tr.close()
    assert sum(penalties) == 0
    off = _g2048_trainer(tmp_path, "o", **{"train.action_masks": "off"})
    try:
        off.rollout()
        assert off.storage.action_masks.shape[-1] == 0
        assert int((off.storage.rewards == -1.0).sum()) > 0   # unmasked, invalid moves happen
    finally:
        off.close()


# ---- Gymnasium and PettingZoo envs with a Dict {"observation", "action_mask"} ----

class PickValid(gym.Env):
    """Each step a random nonempty subset of 4 actions is valid (and shown); reward 1 for taking
    a valid one, 0 otherwise. Counts the invalid actions it was given."""

    def __init__(self, length: int = 16):
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(0, 1, (4,), np.float32),
            "action_mask": spaces.Box(0, 1, (4,), np.int8)})
        self.action_space = spaces.Discrete(4)
        self.length = length
        self.invalid_taken = 0
        self.steps = 0

    def _obs(self):
        m = (self.np_random.random(4) < 0.4).astype(np.int8)
        if not m.any():
            m[self.np_random.integers(4)] = 1
        self.mask = m
        return {"observation": m.astype(np.float32), "action_mask": m}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        valid = bool(self.mask[action])
        self.invalid_taken += not valid
        self.steps += 1
        self.t += 1
        return self._obs(), float(valid), False, self.t >= self.length, {}


def _gym_trainer(tmp_path, name, env, **over):
    base = {"train.total_steps": 4 * 8 * 16, "train.horizon": 16, "train.minibatch_size": 64,
            "log.dashboard": "off", "policy.hidden": 16}
    base.update(over)
    cfg = default_config()
    apply_overrides(cfg, base)
    return Trainer(cfg, env=env, run_dir=str(tmp_path / name))


def test_a_gymnasium_dict_observation_mask_is_applied_through_emulation(tmp_path):
    env = shoal.from_gymnasium(PickValid, num_envs=8, seed=0)
    assert env.single_observation_space == spaces.Box(0, 1, (4,), np.float32)
    assert env.action_masks.shape == (8, 4)
    tr = _gym_trainer(tmp_path, "g", env)
    try:
        summary = tr.train()
        steps = sum(e.steps for e in env.envs)
        assert steps >= 4 * 8 * 16
        assert sum(e.invalid_taken for e in env.envs) == 0
        assert tr.episodes_total > 0 and summary["agent_steps"] >= 4 * 8 * 16
        # rows hold the observation part; the mask buffer its "action_mask"
        np.testing.assert_array_equal(env.observations != 0, env.action_masks)
    finally:
        tr.close()
    env = shoal.from_gymnasium(PickValid, num_envs=8, seed=0)
    tr = _gym_trainer(tmp_path, "u", env, **{"train.action_masks": "off",
                                             "train.total_steps": 8 * 16})
    try:
        tr.train()
        assert sum(e.invalid_taken for e in env.envs) > 0    # the mask is what prevented them
    finally:
        tr.close()


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_c_env_masks_are_the_same_on_every_backend(backend):
    ref = shoal.make("g2048", 4, seed=7)
    env = shoal.make("g2048", 4, seed=7, backend=backend, num_workers=2)
    try:
        ref.reset()
        env.reset()
        rng = np.random.default_rng(2)
        for _ in range(40):
            np.testing.assert_array_equal(env.action_masks, ref.action_masks)
            a = rng.integers(0, 4, 4).astype(np.int32)
            env.step(a)
            ref.step(a)
        state = env.save_state()
        assert state["buffer.action_masks"].shape == (4, 4)
    finally:
        env.close()
        ref.close()


def test_masks_come_through_the_processes_backend(tmp_path):
    env = shoal.from_gymnasium(PickValid, num_envs=4, seed=3, backend="processes", num_workers=2)
    ref = shoal.from_gymnasium(PickValid, num_envs=4, seed=3)
    try:
        env.reset()
        ref.reset()
        rng = np.random.default_rng(1)
        for _ in range(20):
            np.testing.assert_array_equal(env.action_masks, ref.action_masks)
            np.testing.assert_array_equal(env.observations, ref.observations)
            a = rng.integers(0, 4, 4).astype(np.int32)
            env.step(a)
            ref.step(a)
    finally:
        env.close()
        ref.close()


def test_a_pettingzoo_dict_observation_mask_fills_each_agents_row():
    from pettingzoo import ParallelEnv

    class TwoPickers(ParallelEnv):
        metadata = {"name": "two_pickers"}

        def __init__(self):
            self.possible_agents = ["a", "b"]
            self._obs_space = spaces.Dict({"observation": spaces.Box(0, 1, (3,), np.float32),
                                           "action_mask": spaces.MultiBinary(3)})

        def observation_space(self, agent):
            return self._obs_space

        def action_space(self, agent):
            return spaces.Discrete(3)

        def _obs(self):
            self.masks = {a: (np.arange(3) != (self.t + k) % 3).astype(np.int8)
                          for k, a in enumerate(self.agents)}
            return {a: {"observation": m.astype(np.float32), "action_mask": m}
                    for a, m in self.masks.items()}

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            self.t = 0
            return self._obs(), {a: {} for a in self.agents}

        def step(self, actions):
            rewards = {a: float(self.masks[a][actions[a]]) for a in self.agents}
            self.t += 1
            done = self.t >= 5
            return (self._obs(), rewards, {a: False for a in self.agents},
                    {a: done for a in self.agents}, {a: {} for a in self.agents})

    env = shoal.from_pettingzoo(TwoPickers, num_envs=2, seed=0)
    try:
        env.reset()
        assert env.action_masks.shape == (4, 3)
        for _ in range(7):
            np.testing.assert_array_equal(env.observations != 0, env.action_masks)
            assert (env.action_masks.sum(1) == 2).all()
            env.step(np.zeros(4, np.int32))
    finally:
        env.close()


def test_a_mask_that_does_not_fit_the_action_space_is_a_clear_error():
    class Bad(PickValid):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Dict({
                "observation": spaces.Box(0, 1, (4,), np.float32),
                "action_mask": spaces.Box(0, 1, (3,), np.int8)})

    with pytest.raises(ValueError, match="needs one entry per"):
        shoal.from_gymnasium(Bad, num_envs=1)


def test_a_mask_in_the_info_dict_is_read_through_the_wrapper():
    from shoal.emulation.masks import InfoActionMask

    class InfoMasked(PickValid):
        """PickValid with a plain Box observation and the mask in info["action_mask"]."""

        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(0, 1, (4,), np.float32)

        def reset(self, seed=None, options=None):
            obs, _ = super().reset(seed=seed)
            return obs["observation"], {"action_mask": obs["action_mask"]}

        def step(self, action):
            obs, reward, term, trunc, _ = super().step(action)
            return obs["observation"], reward, term, trunc, {"action_mask": obs["action_mask"]}

    env = shoal.from_gymnasium(lambda: InfoActionMask(InfoMasked()), num_envs=3, seed=2)
    try:
        env.reset()
        assert env.single_observation_space == spaces.Box(0, 1, (4,), np.float32)
        for _ in range(10):
            np.testing.assert_array_equal(env.observations != 0, env.action_masks)
            env.step(np.zeros(3, np.int32))
    finally:
        env.close()


def test_greedy_evaluation_takes_only_valid_moves(tmp_path):
    """`shoal eval` applies the env's mask as the run trained with it: a peaky untrained policy
    never pays g2048's invalid-move penalty with masks; with train.action_masks='off' in the
    run's config it is evaluated unmasked and does."""
    from shoal.trainer.checkpoint import load_checkpoint, save_checkpoint
    from shoal.trainer.eval_cli import evaluate
    from tools_runs import write_run

    params = {"max_steps": 60, "invalid_penalty": 1.0, "reward_scale": 0.0}
    run = write_run(str(tmp_path / "run"), "g2048", hidden=16, actor_gain=100.0, **params)
    masked = evaluate(run, episodes=8, seed=3, greedy=True)
    assert masked["episode_return"] == 0.0          # merges pay 0 here: only penalties count
    ckpt = load_checkpoint(run)
    ckpt["config"]["train"]["action_masks"] = "off"
    save_checkpoint(str(tmp_path / "off.pt"), ckpt)
    unmasked = evaluate(str(tmp_path / "off.pt"), episodes=8, seed=3, greedy=True)
    assert unmasked["episode_return"] < 0.0


@pytest.mark.parametrize("rollout", ["torch", "fused"])
def test_masked_training_resumes_exactly(tmp_path, rollout):
    """The stored masks are part of the carried slot and the checkpoint: a run stopped and
    resumed logs what the uninterrupted run logs."""
    over = {"train.total_steps": 4 * 8 * 16, "env.num_envs": 8, "train.horizon": 16,
            "train.minibatch_size": 64, "log.dashboard": "off", "policy.hidden": 16,
            "train.rollout": rollout, "env.max_steps": 30, "env.invalid_penalty": 1.0}

    Trainer(build_config("g2048", overrides={**over, "log.run_dir": str(tmp_path / "a")})).train()
    part = build_config("g2048", overrides={**over, "log.run_dir": str(tmp_path / "b")})
    Trainer(part, callback=lambda tr, m: tr.epoch == 2).train()
    resumed = Trainer.resume(str(tmp_path / "b"))
    assert resumed.exact_resume and resumed.storage.action_masks.shape[-1] == 4
    resumed.train()
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
