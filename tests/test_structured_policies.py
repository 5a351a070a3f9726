"""The built-in policies on Python envs with mixed-dtype Dict observations (stored as byte rows):
they decode each leaf (``StructuredObservationPreprocessor``) instead of scaling raw bytes by
1/255, and PPO learns a reward that depends on the float leaf's value.

``ThresholdEnv`` is module-level so ``gym:test_structured_policies:Threshold-v0`` resolves (this
file's folder is on sys.path).
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

import shoal
from shoal.emulation import unflatten
from shoal.emulation.features import StructuredObservationPreprocessor
from shoal.emulation.spaces import observation_layout
from shoal.trainer.config import build_config
from shoal.trainer.policies import (CNNPolicy, LSTMPolicy, MLPPolicy, ObservationPreprocessor,
                                    make_policy, make_preprocessor, policy_observation_space)
from shoal.trainer.ppo import Trainer

THRESHOLD = 0.3


def threshold_space() -> spaces.Dict:
    return spaces.Dict({
        "pos": spaces.Box(0.0, 1.0, (1,), np.float32),
        "flag": spaces.MultiBinary(1),          # int8: the Dict is stored as raw bytes
        "kind": spaces.Discrete(3),             # int64
    })


class ThresholdEnv(gymnasium.Env):
    """One-step episodes. Reward 1 when the action is ``pos > 0.3``, else 0: the policy must read
    the float value of ``pos``; ``flag`` (int8) and ``kind`` (int64) are noise that makes the
    Dict mixed-dtype. Always answering 1 scores 0.7."""

    def __init__(self) -> None:
        self.observation_space = threshold_space()
        self.action_space = spaces.Discrete(2)

    def _obs(self) -> dict:
        rng = self.np_random
        self.obs = {"pos": rng.uniform(0.0, 1.0, (1,)).astype(np.float32),
                    "flag": rng.integers(0, 2, (1,)).astype(np.int8),
                    "kind": np.int64(rng.integers(0, 3))}
        return self.obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        want = int(bool(self.obs["pos"][0] > THRESHOLD))
        reward = 1.0 if int(action) == want else 0.0
        return self._obs(), reward, True, False, {}


gymnasium.register("Threshold-v0", entry_point=ThresholdEnv)


@pytest.fixture
def env():
    env = shoal.from_gymnasium(ThresholdEnv, 8, seed=0)
    yield env
    env.close()


def test_the_threshold_env_is_stored_as_bytes(env):
    assert observation_layout(env.structured_observation_space).as_bytes
    assert env.single_observation_space.dtype == np.uint8


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_make_policy_decodes_mixed_dtype_rows(env, name):
    """The features the policy computes are the decoded leaf values, not bytes / 255."""
    policy = make_policy(env, name, hidden=16)
    pre = policy.encoder.preprocess
    assert isinstance(pre, StructuredObservationPreprocessor)
    obs, _ = env.reset()
    features = pre(torch.from_numpy(obs))
    leaves = unflatten(obs, env.structured_observation_space)
    # leaves in space order (Gymnasium sorts Dict keys): flag, kind (one-hot of 3), pos
    want = np.concatenate([leaves["flag"].astype(np.float32),
                           np.eye(3, dtype=np.float32)[leaves["kind"]],
                           leaves["pos"]], axis=1)
    assert features.shape == (8, 5)
    np.testing.assert_array_equal(features.numpy(), want)
    # the values are the env's own observations
    for i, e in enumerate(env.envs):
        assert features[i, 4].item() == e.unwrapped.obs["pos"][0]
    # and the policy runs on the rows as the trainer passes them ([B, L, row])
    params, values, _ = policy(torch.from_numpy(obs).unsqueeze(1), policy_state(policy, 8), None)
    assert params.shape == (8, 1, 2) and values.shape == (8, 1)


def policy_state(policy, batch):
    fn = getattr(policy, "initial_state", None)
    return None if fn is None else fn(batch)


def test_which_space_the_policy_gets(env):
    assert policy_observation_space(env) is env.structured_observation_space
    # custom callables keep getting the row space, as the trainer's policy= callables do
    seen = []
    make_policy(env, lambda o, a, **kw: seen.append(o) or MLPPolicy(o, a, hidden=8))
    assert seen == [env.single_observation_space]
    assert isinstance(make_policy(env, MLPPolicy, hidden=8).encoder.preprocess,
                      StructuredObservationPreprocessor)
    # same-dtype Dict rows are a Box of the leaves' values and bounds: read as they are
    same = shoal.from_gymnasium(lambda: SameDtypeEnv(), 2, seed=0)
    try:
        assert not observation_layout(same.structured_observation_space).as_bytes
        assert policy_observation_space(same) is same.single_observation_space
        assert isinstance(make_policy(same).encoder.preprocess, ObservationPreprocessor)
    finally:
        same.close()
    # a Box env is untouched
    cart = shoal.make("gym:CartPole-v1", 2)
    try:
        assert policy_observation_space(cart) is cart.single_observation_space
    finally:
        cart.close()


class SameDtypeEnv(ThresholdEnv):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Dict({"a": spaces.Box(0.0, 1.0, (2,), np.float32),
                                              "b": spaces.Box(-2.0, 2.0, (1,), np.float32)})

    def _obs(self) -> dict:
        self.obs = {"pos": np.zeros(1, np.float32), "flag": np.zeros(1, np.int8)}
        return {"a": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}


def test_structured_space_errors_name_the_fix():
    space = threshold_space()
    with pytest.raises(ValueError, match="structured space .*name='mlp'"):
        CNNPolicy(space, spaces.Discrete(2))
    with pytest.raises(TypeError, match="make_preprocessor"):
        ObservationPreprocessor(space)
    assert isinstance(make_preprocessor(space), StructuredObservationPreprocessor)
    assert LSTMPolicy(space, spaces.Discrete(2), hidden=8).obs_ndim == 1


def test_trainer_and_eval_use_the_structured_preprocessor(tmp_path):
    """PPO through a gym: name learns the threshold task (~2-4 s). Reading the row's bytes as
    numbers it stays near 0.7 (always 1: 0.3 and 0.25-0.5 share a float32 exponent byte); decoded
    it reaches ~0.99. `shoal eval`'s loader rebuilds the same policy from the checkpoint."""
    from shoal.trainer.eval_cli import evaluate

    name = "gym:test_structured_policies:Threshold-v0"
    cfg = build_config(name, overrides={
        "env.num_envs": 32, "train.horizon": 16, "train.total_steps": 30_000,
        "train.minibatch_size": 256, "train.update_epochs": 4, "train.learning_rate": 0.01,
        "train.ent_coef": 0.0, "train.torch_threads": 1, "train.seed": 1,
        "policy.hidden": 64, "log.dashboard": "off", "log.run_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    assert isinstance(trainer.policy.encoder.preprocess, StructuredObservationPreprocessor)
    summary = trainer.train()
    assert summary["score"] > 0.9, summary
    result = evaluate(str(tmp_path / "run"), episodes=500, greedy=True)
    assert result["score"] > 0.95, result
