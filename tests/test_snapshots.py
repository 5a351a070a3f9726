"""Env snapshots (save_state/load_state): restoring one replays exactly the same future."""

import numpy as np
import pytest

import shoal
from shoal.envs import list_envs

from conftest import random_actions

BACKENDS = [("serial", {}), ("threads", dict(num_workers=2)), ("processes", dict(num_workers=2))]


def play(env, actions):
    out = []
    for a in actions:
        obs, rew, term, trunc, infos = env.step(a)
        out += [obs.copy(), rew.copy(), term.copy(), trunc.copy()]
    out.append(env.log())
    return out


@pytest.mark.parametrize("name,params", [(name, {}) for name in list_envs()]
                         + [("maze", {"prev_action": True})])
def test_snapshot_replays_the_same_future(name, params):
    env = shoal.make(name, num_envs=4, seed=5, **params)
    env.reset()
    rng = np.random.default_rng(0)
    acts = [random_actions(env.single_action_space, env.num_agents, rng) for _ in range(150)]
    play(env, acts[:50])
    snap = env.save_state()
    first = play(env, acts[50:])
    # a fresh env, another seed: all state restored
    other = shoal.make(name, num_envs=4, seed=99, **params)
    other.reset()
    other.load_state(snap)
    second = play(other, acts[50:])
    assert len(first) == len(second)
    for a, b in zip(first, second):
        if isinstance(a, dict):
            assert a == b
        else:
            assert np.array_equal(a, b)
    env.close()
    other.close()


@pytest.mark.parametrize("backend,kw", BACKENDS)
def test_snapshot_across_backends_of_same_layout(backend, kw):
    env = shoal.make("maze", num_envs=4, seed=1, backend=backend, **kw)
    env.reset()
    rng = np.random.default_rng(1)
    acts = [random_actions(env.single_action_space, env.num_agents, rng) for _ in range(60)]
    play(env, acts[:20])
    snap = env.save_state()
    first = play(env, acts[20:])
    env.load_state(snap)
    second = play(env, acts[20:])
    for a, b in zip(first, second):
        assert (a == b) if isinstance(a, dict) else np.array_equal(a, b)
    env.close()


def test_snapshot_mismatch_is_a_clear_error():
    env = shoal.make("maze", num_envs=4, seed=1)
    env.reset()
    snap = env.save_state()
    env.close()
    for params in (dict(size=21), dict(max_steps=7)):  # heap size differs / only a field differs
        other = shoal.make("maze", num_envs=4, seed=1, **params)
        other.reset()
        with pytest.raises(ValueError, match="other env parameters"):
            other.load_state(snap)
    headed = shoal.make("maze", num_envs=4, seed=1, prev_action=True)  # one more observation row
    headed.reset()
    with pytest.raises(ValueError, match="same num_envs and parameters"):
        headed.load_state(snap)
    bigger = shoal.make("maze", num_envs=8, seed=1)
    bigger.reset()
    with pytest.raises(ValueError, match="same num_envs"):
        bigger.load_state(snap)


def test_snapshot_refused_mid_cycle():
    env = shoal.make("template", num_envs=4, backend="threads", num_workers=2, num_buffers=2)
    env.reset()
    env.recv()
    with pytest.raises(RuntimeError, match="between recv"):
        env.save_state()


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_snapshot_while_groups_step_resumes_the_cycle(backend):
    """A snapshot taken while groups are stepping (what the trainer does at an epoch boundary)
    waits for them; a restored env hands their results out in the same order."""
    def cycle(env, rng, n):
        out = []
        for _ in range(n):
            obs, rew, term, trunc, _, rows = env.recv()
            out.append((rows.start, obs.copy(), rew.copy(), term.copy()))
            env.send(rng.integers(0, 2, rows.stop - rows.start).astype(np.int32))
        return out

    kw = dict(num_envs=8, seed=3, backend=backend, num_workers=2, num_buffers=2)
    env = shoal.make("template", **kw)
    env.reset()
    rng = np.random.default_rng(0)
    cycle(env, rng, 3)  # ends with group 1 handed out next, both groups stepping
    snap = env.save_state()
    rng_state = rng.bit_generator.state
    expected = cycle(env, rng, 6)
    env.close()

    again = shoal.make("template", **kw)
    again.reset()
    again.load_state(snap)
    rng.bit_generator.state = rng_state
    got = cycle(again, rng, 6)
    again.close()
    for (r0, *a), (r1, *b) in zip(expected, got):
        assert r0 == r1
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


# ---- untrusted snapshots: refused field by field, never loaded into a fault ----

def _field_offsets(env, act):
    """Offsets of the bytes of env 0's snapshot that one step with `act` changes."""
    before = env.save_state()["c_envs"]
    env.step(act)
    after = env.save_state()["c_envs"]
    return np.flatnonzero(before != after), after


def test_corrupt_snapshot_is_refused_naming_env_field_and_value():
    env = shoal.make("template", num_envs=2, seed=0)
    env.reset()
    changed, _ = _field_offsets(env, np.ones(2, np.int32))
    # template's step changes position, then tick (struct order), in both envs
    per_env = len(env.save_state()["c_envs"]) // 2
    position = int(changed[changed >= per_env].min())
    snap = env.save_state()
    good = snap["c_envs"].copy()
    bad = good.copy()
    bad[position:position + 4] = np.frombuffer(np.int32(1000).tobytes(), np.uint8)
    snap["c_envs"] = bad
    with pytest.raises(ValueError, match=r"template: env snapshot refused: env 1 has position = 1000 "
                                         r"is outside \[0, 7\]"):
        env.load_state(snap)
    assert np.array_equal(env.save_state()["c_envs"], good)   # nothing was loaded
    snap["c_envs"] = good
    env.load_state(snap)
    env.step(np.ones(2, np.int32))


@pytest.mark.parametrize("name", list_envs())
def test_random_corruptions_load_cleanly_or_are_refused(name):
    """A small in-process version of tests/support/fuzz_snapshots.py (which runs under
    AddressSanitizer in test_sanitizers.py): words of the snapshot set to boundary values."""
    env = shoal.make(name, num_envs=2, seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):
        env.step(random_actions(env.single_action_space, env.num_agents, rng))
    snap = env.save_state()
    blob = snap["c_envs"]
    words = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x7FC00000, 0x7F800000, 4096]
    refused = 0
    for k in range(200):
        bad = blob.copy()
        at = int(rng.integers(len(bad) // 4)) * 4
        bad[at:at + 4] = np.frombuffer(np.uint32(words[k % len(words)]).tobytes(), np.uint8)
        snap["c_envs"] = bad
        try:
            env.load_state(snap)
        except ValueError as exc:
            assert f"{name}: env snapshot refused: env " in str(exc)
            refused += 1
            continue
        for _ in range(8):
            _, rew, *_ = env.step(random_actions(env.single_action_space, env.num_agents, rng))
            assert np.isfinite(rew).all()
        env.render(mode="ansi", index=1)
        env.render(index=1)
    assert refused > 0
    env.close()
