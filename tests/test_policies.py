"""Action distributions and policies: shapes, exact log-probabilities and entropies against
torch.distributions, LSTM resets, gradients, and the custom-policy contract with Inference."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from shoal.trainer.distributions import ActionDistribution, make_distribution
from shoal.trainer.policies import (
    CNNPolicy,
    Inference,
    LSTMPolicy,
    MLPPolicy,
    ObservationPreprocessor,
    make_policy,
    policy_initial_state,
)

ACTION_SPACES = {
    "discrete": spaces.Discrete(5),
    "multidiscrete": spaces.MultiDiscrete([3, 3, 3]),
    "multidiscrete_mixed": spaces.MultiDiscrete([2, 5, 3]),
    "box": spaces.Box(-1.0, 1.0, (3,), np.float32),
}
OBS_SPACES = {
    "flat": spaces.Box(0.0, 1.0, (7,), np.float32),
    "grid": spaces.Box(0, 2, (9, 9), np.uint8),
    "image": spaces.Box(0, 255, (40, 36, 3), np.uint8),
}


def random_obs(space, *lead, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(space.dtype, np.integer):
        return torch.from_numpy(rng.integers(space.low, space.high.astype(np.int64) + 1,
                                             (*lead, *space.shape)).astype(space.dtype))
    return torch.from_numpy(rng.uniform(space.low, space.high, (*lead, *space.shape)).astype(space.dtype))


def random_params(dist, *lead, seed=0):
    """Random logits, or means and log-stds well inside the log-std clamp for Box."""
    params = torch.randn(*lead, dist.num_params, generator=torch.Generator().manual_seed(seed))
    if dist.kind == "box":
        params[..., dist.action_dim:] *= 0.5
    return params


def torch_reference(dist, params):
    """The same distribution built from torch.distributions (one per action dimension)."""
    if dist.kind == "box":
        mean, log_std = params.split(dist.action_dim, -1)
        return [torch.distributions.Normal(mean, log_std.exp())]
    return [torch.distributions.Categorical(logits=p) for p in params.split(dist.nvec, -1)]


# ---- distributions ----

@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_distribution_shapes(name):
    space = ACTION_SPACES[name]
    dist = make_distribution(space)
    params = random_params(dist, 4, 6)
    actions, logp = dist.sample_with_log_prob(params)
    assert actions.shape == (4, 6, *dist.action_shape) == (4, 6, *space.shape)
    assert actions.dtype == dist.action_dtype
    assert logp.shape == (4, 6)
    assert dist.entropy(params).shape == (4, 6)
    assert dist.mode(params).shape == actions.shape
    env = dist.to_env(actions)
    assert env.dtype == (torch.float32 if dist.kind == "box" else torch.int32)
    for a in env.reshape(-1, *space.shape).numpy() if space.shape else env.reshape(-1).numpy():
        assert space.contains(a.astype(space.dtype))


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_log_prob_and_entropy_match_torch_distributions(name):
    dist = make_distribution(ACTION_SPACES[name])
    params = random_params(dist, 64, 3, seed=1)
    actions, logp_sampled = dist.sample_with_log_prob(params, torch.Generator().manual_seed(2))
    refs = torch_reference(dist, params)
    if dist.kind == "box":
        ref_logp = refs[0].log_prob(actions).sum(-1)
        ref_entropy = refs[0].entropy().sum(-1)
    else:
        per_dim = actions.reshape(64, 3, -1)
        ref_logp = sum(r.log_prob(per_dim[..., i]) for i, r in enumerate(refs))
        ref_entropy = sum(r.entropy() for r in refs)
    torch.testing.assert_close(dist.log_prob(params, actions), ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logp_sampled, ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist.entropy(params), ref_entropy, rtol=1e-5, atol=1e-5)
    logp, ent = dist.log_prob_and_entropy(params, actions)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, ref_entropy, rtol=1e-5, atol=1e-5)
    # Actions in the env's dtype (int32) score the same.
    torch.testing.assert_close(dist.log_prob(params, dist.to_env(actions) if dist.kind != "box"
                                             else actions), ref_logp, rtol=1e-5, atol=1e-5)


def test_categorical_sampling_frequencies_follow_softmax():
    dist = make_distribution(spaces.Discrete(4))
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    n = 40000
    actions = dist.sample(logits.expand(n, 4), torch.Generator().manual_seed(3))
    counts = torch.bincount(actions, minlength=4).double()
    expect = torch.softmax(logits.double(), 0) * n
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 16.3, (counts, expect)  # 3 dof, 99.9% quantile


def test_gaussian_samples_have_the_given_mean_and_std():
    dist = make_distribution(spaces.Box(-1.0, 1.0, (2,), np.float32))
    params = torch.tensor([0.3, -2.0, np.log(0.5), np.log(2.0)], dtype=torch.float32)
    a = dist.sample(params.expand(50000, 4), torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.mean(0), torch.tensor([0.3, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(a.std(0), torch.tensor([0.5, 2.0]), atol=0.03, rtol=0)
    # Raw samples go beyond the bounds (that is what log_prob scores); the env copy is clipped.
    assert float(a.abs().max()) > 1.0
    env = dist.to_env(a)
    assert float(env.max()) <= 1.0 and float(env.min()) >= -1.0
    inside = (a.abs() <= 1.0)
    assert torch.equal(env[inside], a[inside])


def test_discrete_with_start_and_multidiscrete_2d():
    dist = make_distribution(spaces.Discrete(3, start=-1))
    params = random_params(dist, 200, seed=5)
    a = dist.sample(params)
    assert set(a.unique().tolist()) <= {-1, 0, 1}
    ref = torch.distributions.Categorical(logits=params).log_prob(a + 1)
    torch.testing.assert_close(dist.log_prob(params, a), ref)

    space = spaces.MultiDiscrete(np.array([[2, 3], [4, 2]]))
    dist = make_distribution(space)
    params = random_params(dist, 10, seed=6)
    a = dist.sample(params)
    assert a.shape == (10, 2, 2)
    assert all(space.contains(x) for x in a.numpy())
    flat = a.reshape(10, 4)
    ref = sum(torch.distributions.Categorical(logits=p).log_prob(flat[:, i])
              for i, p in enumerate(params.split(dist.nvec, -1)))
    torch.testing.assert_close(dist.log_prob(params, a), ref)


def test_box_log_std_is_clamped():
    from shoal.trainer.distributions import LOG_STD_MAX, LOG_STD_MIN

    dist = make_distribution(spaces.Box(-1.0, 1.0, (2,), np.float32))
    params = torch.tensor([[0.0, 0.0, 50.0, -50.0]])
    clamped = torch.tensor([[0.0, 0.0, LOG_STD_MAX, LOG_STD_MIN]])
    torch.testing.assert_close(dist.entropy(params), dist.entropy(clamped))
    a = torch.tensor([[0.3, 1e-9]])
    torch.testing.assert_close(dist.log_prob(params, a), dist.log_prob(clamped, a))


def test_distribution_errors():
    dist = make_distribution(spaces.Box(-1.0, 1.0, (3,), np.float32))
    with pytest.raises(ValueError, match="mean, log_std"):
        dist.log_prob(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="unsupported action space"):
        ActionDistribution(spaces.Text(5))


# ---- policies ----

def policy_cases():
    for obs_name, obs_space in OBS_SPACES.items():
        for act_name, act_space in ACTION_SPACES.items():
            for name in ("mlp", "lstm", "cnn"):
                if (name == "cnn" and obs_name == "flat") or (name != "cnn" and obs_name == "image"
                                                              and act_name != "discrete"):
                    continue  # the CNN needs images; MLP/LSTM on images once is enough
                yield pytest.param(name, obs_space, act_space, id=f"{name}-{obs_name}-{act_name}")


@pytest.mark.parametrize("name,obs_space,act_space", list(policy_cases()))
def test_policy_shapes(name, obs_space, act_space):
    policy = make_policy((obs_space, act_space), name, hidden=32)
    dist = policy.distribution
    B, L = 3, 5
    obs = random_obs(obs_space, B, L)
    state = policy.initial_state(B, "cpu")
    starts = torch.zeros(B, L, dtype=torch.bool)
    params, values, new_state = policy(obs, state, starts)
    assert params.shape == (B, L, dist.num_params)
    assert values.shape == (B, L)
    if name == "lstm":
        assert [s.shape for s in new_state] == [(B, 32), (B, 32)]
    else:
        assert state is None and new_state is None
    actions = dist.sample(params)
    assert actions.shape == (B, L, *act_space.shape)


def test_cnn_rejects_flat_observations_and_downsamples_images():
    with pytest.raises(ValueError, match="image-like"):
        CNNPolicy(OBS_SPACES["flat"], ACTION_SPACES["discrete"])
    big = spaces.Box(0, 255, (84, 84, 3), np.uint8)
    policy = CNNPolicy(big, ACTION_SPACES["discrete"], hidden=16, channels=8)
    strided = [m for m in policy.encoder.conv if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # 84 -> 42 -> 21 -> 11
    params, values, _ = policy(random_obs(big, 2, 1), None, None)
    assert params.shape == (2, 1, 5) and values.shape == (2, 1)


def test_observation_preprocessing():
    grid = ObservationPreprocessor(spaces.Box(0, 2, (3, 3), np.uint8))
    assert grid.levels == 3 and grid.out_shape == (3, 3, 3)
    x = torch.tensor([[[0, 1, 2], [2, 1, 0], [0, 0, 0]]], dtype=torch.uint8)
    y = grid(x)
    assert torch.equal(y.argmax(-1), x.long()) and torch.equal(y.sum(-1), torch.ones(1, 3, 3))
    high = np.array([2, 1, 255], np.uint8)
    mixed = ObservationPreprocessor(spaces.Box(np.zeros(3, np.uint8), high, dtype=np.uint8))
    assert mixed.levels == 0  # 256 levels is too many for one-hot: scaled instead
    torch.testing.assert_close(mixed(torch.tensor([[2, 1, 51]], dtype=torch.uint8)),
                               torch.tensor([[1.0, 1.0, 0.2]]))
    unbounded = ObservationPreprocessor(spaces.Box(-np.inf, np.inf, (2,), np.float32))
    torch.testing.assert_close(unbounded(torch.tensor([[5.0, -7.0]])), torch.tensor([[5.0, -7.0]]))
    off = ObservationPreprocessor(spaces.Box(0, 2, (3, 3), np.uint8), one_hot=False)
    torch.testing.assert_close(off(x), x.float() / 2)


def lstm_one_call_and_step_by_step(policy, obs, state, starts):
    """(one call over L with starts, step-by-step calls resetting rows by hand)."""
    with torch.no_grad():
        one_call = policy(obs, state, starts)
        h, c = state
        step_params, step_values = [], []
        for t in range(obs.shape[1]):
            reset = starts[:, t].unsqueeze(1)
            h = torch.where(reset, torch.zeros_like(h), h)
            c = torch.where(reset, torch.zeros_like(c), c)
            p, v, (h, c) = policy(obs[:, t:t + 1], (h, c), None)
            step_params.append(p)
            step_values.append(v)
    return one_call, (torch.cat(step_params, 1), torch.cat(step_values, 1), (h, c))


def test_lstm_one_call_equals_step_by_step_with_resets():
    torch.manual_seed(0)
    obs_space, act_space = OBS_SPACES["flat"], ACTION_SPACES["discrete"]
    policy = LSTMPolicy(obs_space, act_space, hidden=16)
    B, L = 6, 12
    obs = random_obs(obs_space, B, L, seed=1)
    g = torch.Generator().manual_seed(2)
    starts = torch.rand(B, L, generator=g) < 0.25
    starts[0, 0] = True
    starts[1, 7] = True
    # A nonzero incoming state, so resets visibly matter.
    state = tuple(torch.randn(B, 16, generator=g) for _ in range(2))
    # float64: the two orders of evaluation agree to rounding of the last bits (the layers
    # multiply B*L rows at once in one, B rows per call in the other, and BLAS may round the
    # two differently), so any reset on a wrong step would show as an O(1) difference.
    (params, values, final), (sp, sv, (h, c)) = lstm_one_call_and_step_by_step(
        policy.double(), obs.double(), tuple(s.double() for s in state), starts)
    for a, b in ((params, sp), (values, sv), (final[0], h), (final[1], c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # float32 too, within float32 rounding.
    policy.float()
    (params, values, final), (sp, sv, (h, c)) = lstm_one_call_and_step_by_step(
        policy, obs, state, starts)
    for a, b in ((params, sp), (values, sv), (final[0], h), (final[1], c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # And the resets do change the result.
    with torch.no_grad():
        no_reset, _, _ = policy(obs, state, torch.zeros(B, L))
    assert not torch.allclose(no_reset, params)

    # The rollout path: Inference.act with per-step starts gives the same values and
    # log-probabilities (of the actions it samples) as the training-time call.
    inference = Inference(policy, generator=torch.Generator().manual_seed(3))
    state_r = state
    logps, vals, acts = [], [], []
    for t in range(L):
        a, lp, v, state_r = inference.act(obs[:, t].numpy(), state_r, starts[:, t].numpy())
        acts.append(a.clone())
        logps.append(lp.clone())
        vals.append(v.clone())
    torch.testing.assert_close(torch.stack(vals, 1), values, rtol=1e-6, atol=1e-6)
    train_logp = policy.distribution.log_prob(params, torch.stack(acts, 1))
    torch.testing.assert_close(torch.stack(logps, 1), train_logp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,obs_name,act_name", [
    ("mlp", "flat", "discrete"), ("mlp", "grid", "box"), ("lstm", "flat", "multidiscrete_mixed"),
    ("cnn", "grid", "discrete"), ("lstm", "grid", "box"),
])
def test_gradients_reach_every_parameter(name, obs_name, act_name):
    torch.manual_seed(1)
    kw = {"encoder": "cnn"} if (name == "lstm" and obs_name == "grid") else {}
    policy = make_policy((OBS_SPACES[obs_name], ACTION_SPACES[act_name]), name, hidden=16, **kw)
    B, L = 4, 6
    obs = random_obs(OBS_SPACES[obs_name], B, L)
    starts = torch.zeros(B, L)
    starts[:, 3] = 1
    params, values, _ = policy(obs, policy_initial_state(policy, B, "cpu"), starts)
    dist = policy.distribution
    actions = dist.sample(params.detach())
    logp, entropy = dist.log_prob_and_entropy(params, actions)
    loss = -(logp * torch.randn(B, L)).mean() + values.square().mean() - 0.01 * entropy.mean()
    loss.backward()
    for pname, p in policy.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert float(p.grad.abs().sum()) > 0, pname


def test_initialisation_gives_a_near_uniform_policy():
    policy = MLPPolicy(OBS_SPACES["flat"], ACTION_SPACES["discrete"], hidden=64)
    with torch.no_grad():
        params, _, _ = policy(random_obs(OBS_SPACES["flat"], 8, 1), None, None)
    probs = torch.softmax(params, -1)
    assert float((probs - 0.2).abs().max()) < 0.05


def test_mlp_separate_critic_trunk():
    shared = MLPPolicy(OBS_SPACES["flat"], ACTION_SPACES["box"], hidden=16)
    separate = MLPPolicy(OBS_SPACES["flat"], ACTION_SPACES["box"], hidden=16, shared=False)
    n_shared = sum(p.numel() for p in shared.parameters())
    n_separate = sum(p.numel() for p in separate.parameters())
    assert n_separate > n_shared
    params, values, _ = separate(random_obs(OBS_SPACES["flat"], 2, 3), None, None)
    assert params.shape == (2, 3, 6) and values.shape == (2, 3)


def test_make_policy_from_a_shoal_env_and_errors():
    import shoal

    env = shoal.make("template", num_envs=4, seed=0)
    try:
        policy = make_policy(env)
        assert isinstance(policy, MLPPolicy)
        obs, _ = env.reset()
        inference = Inference(policy)
        actions, logp, values, _ = inference.act(obs, None, None)
        env.step(inference.env_actions(actions))
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy((OBS_SPACES["flat"], ACTION_SPACES["discrete"]), "transformer")
    with pytest.raises(TypeError, match="make_policy needs"):
        make_policy(42)
    policy = make_policy((OBS_SPACES["flat"], ACTION_SPACES["discrete"]))
    with pytest.raises(ValueError, match="obs.unsqueeze\\(1\\)"):
        policy(random_obs(OBS_SPACES["flat"], 3), None, None)


# ---- Inference and custom policies ----

class TinyCustom(nn.Module):
    """A user policy following the documented signature, with no `distribution` attribute and
    no initial_state (stateless)."""

    def __init__(self, obs_dim, n_actions):
        super().__init__()
        self.net = nn.Linear(obs_dim, n_actions + 1)

    def forward(self, obs, state, starts):
        out = self.net(obs.float())
        return out[..., :-1], out[..., -1], state


class CounterCustom(nn.Module):
    """A recurrent user policy: the state counts steps since the episode start."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(2))

    def initial_state(self, batch, device):
        return (torch.zeros(batch, device=device),)

    def forward(self, obs, state, starts):
        (count,) = state
        outs = []
        for t in range(obs.shape[1]):
            if starts is not None:
                count = count * (1 - starts[:, t].float())
            count = count + 1
            outs.append(count)
        counts = torch.stack(outs, 1)
        params = torch.stack([counts, -counts], -1) + self.bias
        return params, counts, (count,)


def test_custom_policy_with_inference():
    act_space = spaces.Discrete(3)
    policy = TinyCustom(7, 3)
    with pytest.raises(ValueError, match="pass action_space"):
        Inference(policy)
    inference = Inference(policy, act_space, generator=torch.Generator().manual_seed(0))
    assert inference.initial_state(5) is None
    obs = random_obs(OBS_SPACES["flat"], 5).numpy()
    actions, logp, values, state = inference.act(obs, None, None)
    assert actions.shape == (5,) and logp.shape == (5,) and values.shape == (5,) and state is None
    with torch.no_grad():
        out = policy.net(torch.from_numpy(obs))
    torch.testing.assert_close(values, out[:, -1])
    ref = torch.distributions.Categorical(logits=out[:, :-1]).log_prob(actions)
    torch.testing.assert_close(logp, ref)
    np_actions = inference.env_actions(actions)
    assert np_actions.dtype == np.int32 and np_actions.shape == (5,)

    counter = Inference(CounterCustom(), spaces.Discrete(2))
    state = counter.initial_state(3)
    for _ in range(3):
        _, _, values, state = counter.act(np.zeros((3, 1), np.float32), state, np.zeros(3, bool))
    torch.testing.assert_close(values, torch.full((3,), 3.0))
    _, _, values, state = counter.act(np.zeros((3, 1), np.float32), state,
                                      np.array([True, False, True]))
    torch.testing.assert_close(values, torch.tensor([1.0, 4.0, 1.0]))


def test_inference_rejects_bad_custom_outputs():
    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, obs, state, starts):
            return torch.zeros(obs.shape[0], 7) + self.w, torch.zeros(obs.shape[0]), state

    with pytest.raises(ValueError, match="num_params"):
        Inference(Wrong(), spaces.Discrete(3)).act(np.zeros((2, 4), np.float32))


def test_inference_reuses_staging_buffers_and_runs_without_autograd():
    policy = make_policy((OBS_SPACES["grid"], ACTION_SPACES["box"]), "lstm", hidden=8)
    inference = Inference(policy)
    state = inference.initial_state(4)
    obs = random_obs(OBS_SPACES["grid"], 4).numpy()
    starts = np.zeros(4, bool)
    inference.act(obs, state, starts)
    buffers = {k: v.data_ptr() for k, v in inference._staging.items()}
    for _ in range(3):
        actions, logp, values, state = inference.act(obs, state, starts)
    assert {k: v.data_ptr() for k, v in inference._staging.items()} == buffers
    assert not values.requires_grad and not logp.requires_grad
    out = np.zeros((4, 3), np.float32)
    assert inference.env_actions(actions, out=out) is out
    assert out.min() >= -1.0 and out.max() <= 1.0
    # Deterministic mode returns the mean (clipped only in env_actions).
    det = Inference(policy, deterministic=True)
    a1, _, _, _ = det.act(obs, inference.initial_state(4), starts)
    a2, _, _, _ = det.act(obs, inference.initial_state(4), starts)
    assert torch.equal(a1, a2)
