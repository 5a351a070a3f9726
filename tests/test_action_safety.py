"""Actions reach the envs only as checked values, whatever way the caller hands them over.

- processes: a batch written straight into ``env.actions`` is refused before any worker steps;
- threads: the worker threads step the actions as they were when ``send()`` checked them, not
  what the caller writes into ``env.actions`` afterwards;
- integers of any dtype are range-checked before they are narrowed (no silent wrap-around);
- construction refuses what would fail later (too many buffers, too many envs for memory), and
  ``render()``/``state()`` wait for the env's group to finish stepping.

The ``template`` env is used throughout: its observation shows its position, so an env that
stepped (or stepped with other actions) is visible.
"""

from __future__ import annotations

import numpy as np
import pytest

import shoal


def _pair(backend: str, num_envs: int, **kw):
    env = shoal.make("template", num_envs=num_envs, seed=0, backend=backend, **kw)
    ref = shoal.make("template", num_envs=num_envs, seed=0)
    env.reset()
    ref.reset()
    return env, ref


# ---- processes: a direct write into env.actions is checked before any worker steps ----

def test_processes_refuse_a_direct_write_before_any_worker_steps():
    env, ref = _pair("processes", 4, num_workers=2)
    try:
        env.actions[:] = [1, 1, 1, 7]            # worker 0's shard is valid, worker 1's is not
        with pytest.raises(ValueError, match="action 7 for agent 3 .*outside the action space"):
            env.step(env.actions)
        rng = np.random.default_rng(0)
        for _ in range(12):                       # had worker 0 stepped, env 0 and 1 would lead
            a = rng.integers(0, 2, 4).astype(np.int32)
            np.testing.assert_array_equal(env.step(a)[0], ref.step(a)[0])
    finally:
        env.close()
        ref.close()


def test_processes_refuse_a_direct_write_at_send():
    env, ref = _pair("processes", 4, num_workers=2, num_buffers=2)
    try:
        *_, rows = env.recv()
        env.actions[rows] = [1, 9]
        with pytest.raises(ValueError, match="action 9 for agent 1 "):
            env.send(env.actions[rows])           # refused here, not by a worker later
        env.actions[rows] = [1, 0]
        env.send(env.actions[rows])
    finally:
        env.close()
        ref.close()


def test_processes_check_a_float_buffer_of_discrete_actions():
    env = shoal.make("breakout", num_envs=4, seed=0, backend="processes", num_workers=2)
    ref = shoal.make("breakout", num_envs=4, seed=0)
    env.reset()
    ref.reset()
    try:
        for bad in (-1.0, 1.5, np.nan, 3.0):
            env.actions[:] = [1, 1, 1, bad]           # only worker 1's shard is bad
            with pytest.raises(ValueError, match="for agent 3 .*outside the action space"):
                env.step(env.actions)
        a = np.array([1, 2, 0, 1], np.int32)
        np.testing.assert_array_equal(env.step(a)[0], ref.step(a)[0])   # nothing half-stepped
    finally:
        env.close()
        ref.close()


# ---- threads: workers step the actions checked at send(), never later writes ----

def test_threads_step_the_actions_of_send_not_later_writes():
    n = 1 << 15                                   # a group long enough to still be stepping
    env, ref = _pair("threads", n, num_workers=1)
    try:
        rng = np.random.default_rng(1)
        env.recv()
        for _ in range(8):
            a = rng.integers(0, 2, n).astype(np.int32)
            env.actions[:] = a
            env.send(env.actions)
            env.actions[:] = 1 - a                # too late: must not reach any env
            env.actions[-1] = 1 << 30             # nor may an unchecked value
            obs, *_ = env.recv()
            np.testing.assert_array_equal(obs, ref.step(a)[0])
    finally:
        env.close()
        ref.close()


# ---- integers of any dtype: no silent wrap-around ----

@pytest.mark.parametrize("backend,kw", [("serial", {}), ("threads", dict(num_workers=2)),
                                        ("processes", dict(num_workers=2))])
def test_wide_integers_are_range_checked_not_wrapped(backend, kw):
    env = shoal.make("template", num_envs=4, seed=0, backend=backend, **kw)
    env.reset()
    try:
        for value, dtype in ((2**32, np.int64), (2**32 + 1, np.int64), (-(2**32), np.int64),
                             (2**63, np.uint64), (2**31, np.uint32)):
            a = np.ones(4, dtype)
            a[2] = value
            with pytest.raises(ValueError, match=f"action {value} for agent 2 .*outside"):
                env.step(a)
        with pytest.raises(ValueError, match=f"action {2**40} for agent 0"):
            env.step([2**40, 0, 0, 0])           # a Python list of ints
        env.step(np.ones(4, np.int64))            # in-range int64 is fine
        for bad in (np.array([0.5, 1, 1, 1]), np.array([np.nan, 1, 1, 1])):
            with pytest.raises(TypeError, match="needs integers"):
                env.step(bad)
    finally:
        env.close()


def test_wide_integers_into_a_float_action_buffer_are_refused():
    env = shoal.make("breakout", num_envs=2, seed=0)   # Discrete(3) over a float32 buffer
    env.reset()
    try:
        for value, dtype in ((2**32, np.int64), (-(2**32), np.int64), (2**63, np.uint64)):
            a = np.zeros(2, dtype)
            a[1] = value
            with pytest.raises(ValueError, match="action .* for agent 1 .*outside the action space"):
                env.step(a)
        env.step(np.array([1, 2], np.int64))
    finally:
        env.close()


# ---- construction: limits checked up front ----

def test_too_many_buffers_for_threads_is_refused_at_construction():
    with pytest.raises(ValueError, match="num_buffers=16 .*num_buffers <= 15"):
        shoal.make("template", num_envs=32, backend="threads", num_workers=2, num_buffers=16)
    env = shoal.make("template", num_envs=30, backend="threads", num_workers=2, num_buffers=15)
    env.reset()
    for _ in range(40):                           # every group steps, several times over
        *_, rows = env.recv()
        env.send(np.ones(rows.stop - rows.start, np.int32))
    env.close()


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_num_envs_beyond_memory_is_refused_before_allocating(backend):
    with pytest.raises(ValueError, match=r"needs about [\d.]+ GiB .* available"):
        shoal.make("template", num_envs=2**30, length=1024, backend=backend, num_workers=1)
    with pytest.raises(ValueError, match="agent rows"):
        shoal.make("template", num_envs=2**31, backend=backend, num_workers=1)


def test_memory_estimate_counts_the_envs_own_arrays():
    from shoal.envs import get_spec
    from shoal.vector.native import NativeVecEnv

    spec = get_spec("maze")
    small, big = (NativeVecEnv._env_bytes(spec, spec.resolve(dict(size=s))) for s in (11, 127))
    assert big > small + 127 * 127                # the padded grid is allocated per env


def test_threads_render_and_state_wait_for_the_stepping_group():
    n = 1 << 17                                   # the last env steps ~1 ms after send()
    env, ref = _pair("threads", n, num_workers=1)
    try:
        rng = np.random.default_rng(2)
        for _ in range(10):
            a = rng.integers(0, 2, n).astype(np.int32)
            ref.step(a)
            env.recv()
            env.send(a)                           # render at once, while the worker steps
            assert env.render(mode="ansi", index=n - 1) == ref.render(mode="ansi", index=n - 1)
            assert env.state(n - 2) == ref.state(n - 2)
            np.testing.assert_array_equal(env.render(index=n - 3), ref.render(index=n - 3))
    finally:
        env.close()
        ref.close()
