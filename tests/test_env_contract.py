"""Checks every registered C env against the contract in docs/envs.md."""

import numpy as np
import pytest

import shoal
from shoal.envs import get_spec, list_envs

from conftest import random_actions

ENVS = list_envs()
RANDOM_STEPS = 1_000_000  # agent-steps per env in the long random run


def rollout(env, steps, seed):
    """Observations, rewards and flags of a random rollout, as copies."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs.copy()]
    for _ in range(steps):
        acts = random_actions(env.single_action_space, env.num_agents, rng)
        obs, rew, term, trunc, _ = env.step(acts)
        out += [obs.copy(), rew.copy(), term.copy(), trunc.copy()]
    return out


@pytest.mark.parametrize("name", ENVS)
def test_spaces_and_buffers(name):
    env = shoal.make(name, num_envs=3, seed=0)
    spec = get_spec(name)
    params = spec.resolve()
    assert env.num_agents == 3 * spec.agents_per_env(params)
    obs, infos = env.reset()
    assert obs.shape == (env.num_agents, *env.single_observation_space.shape)
    assert obs.dtype == env.single_observation_space.dtype
    assert "final_observation" in infos
    env.close()


@pytest.mark.parametrize("name", ENVS)
def test_random_run_stays_in_space(name):
    """Long random run: no crash, no NaN, observations inside the declared space."""
    num_envs = 64
    env = shoal.make(name, num_envs=num_envs, seed=1)
    space = env.single_observation_space
    rng = np.random.default_rng(1)
    obs, _ = env.reset()
    cache = [random_actions(env.single_action_space, env.num_agents, rng) for _ in range(16)]
    steps = max(1, RANDOM_STEPS // env.num_agents)
    episodes = 0
    for t in range(steps):
        obs, rew, term, trunc, infos = env.step(cache[t % 16])
        if t % 97 == 0 or t == steps - 1:
            assert np.all(np.isfinite(rew)), f"{name}: non-finite reward"
            if obs.dtype.kind == "f":
                assert np.all(np.isfinite(obs)), f"{name}: non-finite observation"
            assert space.contains(obs[0]), f"{name}: observation outside {space}"
            assert np.all(obs >= space.low) and np.all(obs <= space.high), f"{name}: obs out of bounds"
        done = term | trunc
        if done.any():
            fin = infos["final_observation"][done]
            assert np.all(fin >= space.low) and np.all(fin <= space.high)
        episodes += int(done.sum())
    stats = env.log()
    if episodes:
        assert stats["n"] > 0 and "episode_return" in stats and "episode_length" in stats
    env.close()


@pytest.mark.parametrize("name", ENVS)
def test_same_seed_same_stream(name):
    a = rollout(shoal.make(name, num_envs=4), 300, seed=7)
    b = rollout(shoal.make(name, num_envs=4), 300, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = rollout(shoal.make(name, num_envs=4), 300, seed=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c)), "the seed changes nothing"


@pytest.mark.parametrize("name", ENVS)
def test_backends_agree(name):
    ref = rollout(shoal.make(name, num_envs=6), 100, seed=3)
    for backend, kw in [("threads", dict(num_workers=2)), ("threads", dict(num_workers=3, num_buffers=2)),
                        ("processes", dict(num_workers=2, num_buffers=2))]:
        env = shoal.make(name, num_envs=6, backend=backend, **kw)
        got = rollout(env, 100, seed=3)
        env.close()
        assert all(np.array_equal(x, y) for x, y in zip(ref, got)), f"{backend} {kw} differs"


@pytest.mark.parametrize("name", ENVS)
def test_render(name):
    env = shoal.make(name, num_envs=2, seed=0)
    env.reset()
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert frame.max() > frame.min(), "blank frame"
    text = env.render(mode="ansi", index=1)
    assert isinstance(text, str) and text.strip()
    env.close()


@pytest.mark.parametrize("name", ENVS)
def test_bad_actions_are_clear_errors(name):
    env = shoal.make(name, num_envs=2, seed=0)
    env.reset()
    space = env.single_action_space
    good = random_actions(space, env.num_agents, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.concatenate([good, good]))
    if good.dtype.kind == "i":
        with pytest.raises(TypeError, match="integers"):
            env.step(good.astype(np.float64))
        bad = good.copy()
        bad.reshape(-1)[0] = 10**6
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(bad)
    else:
        bad = good.copy()
        bad.reshape(-1)[0] = np.nan
        with pytest.raises(ValueError, match="not finite"):
            env.step(bad)
    env.step(good)  # still usable after the errors
    env.close()
