"""Fuzzes every C env: random stepping at default and extreme parameters, every backend that
lives in this process, renders, logs and bad inputs. Run by tests/test_sanitizers.py against an
AddressSanitizer/UBSan build; exits non-zero (or the sanitizer aborts) on any fault."""

import sys

import numpy as np
from gymnasium import spaces

import shoal
from shoal.envs import get_spec, list_envs

LONG_RUN = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000  # agent-steps at default params
AGENT_STEPS = 100_000  # agent-steps for each extreme-parameter and backend run


def actions_for(space, n, rng):
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, n).astype(np.int32)
    if isinstance(space, spaces.MultiDiscrete):
        return np.stack([rng.integers(0, k, n) for k in space.nvec.ravel()], -1).astype(np.int32)
    # continuous: include values far outside the bounds, the env must clip them
    return rng.uniform(-3.0, 3.0, (n, *space.shape)).astype(np.float32)


def param_sets(spec):
    """Defaults, then every numeric parameter at its low and its high bound (one at a time)."""
    yield {}
    for key, p in spec.params.items():
        if isinstance(p.default, bool):
            yield {key: not p.default}
            continue
        for bound in (p.low, p.high):
            if bound is None:
                continue
            value = type(p.default)(bound)
            if isinstance(value, int) and abs(value) > 4096:
                continue  # huge sizes only cost time here
            yield {key: value}


def long_run(name, rng):
    """LONG_RUN random agent-steps at default parameters: no fault, no NaN, obs in bounds."""
    env = shoal.make(name, num_envs=256, seed=int(rng.integers(1 << 30)))
    env.reset()
    cache = [actions_for(env.single_action_space, env.num_agents, rng) for _ in range(16)]
    space = env.single_observation_space
    for t in range(max(1, LONG_RUN // env.num_agents)):
        obs, rew, _, _, _ = env.step(cache[t % 16])
        if t % 64 == 0:
            if not (np.isfinite(rew).all() and (obs >= space.low).all() and (obs <= space.high).all()):
                raise AssertionError(f"{name}: NaN reward or observation out of bounds at step {t}")
    env.close()


def fuzz(name, rng):
    long_run(name, rng)
    spec = get_spec(name)
    for params in param_sets(spec):
        try:
            env = shoal.make(name, num_envs=4, seed=int(rng.integers(1 << 30)), **params)
        except ValueError:
            continue  # an extreme that the env rejects with a clear error is fine
        env.reset()
        steps = max(50, AGENT_STEPS // (20 * env.num_agents))
        for _ in range(steps):
            env.step(actions_for(env.single_action_space, env.num_agents, rng))
        env.render()
        env.render(mode="ansi")
        env.log()
        env.load_state(env.save_state())
        env.step(actions_for(env.single_action_space, env.num_agents, rng))
        env.close()
    for backend, kw in (("serial", {}), ("threads", dict(num_workers=2, num_buffers=2))):
        env = shoal.make(name, num_envs=8, seed=1, backend=backend, **kw)
        env.reset()
        rows = env.num_agents // env.num_buffers
        for _ in range(max(50, AGENT_STEPS // env.num_agents)):
            env.recv()
            env.send(actions_for(env.single_action_space, rows, rng))
        env.log()
        env.close()
    env = shoal.make(name, num_envs=2, seed=2)
    env.reset()
    good = actions_for(env.single_action_space, env.num_agents, rng)
    bad_inputs = [good[:1], np.zeros((3, 3, 3)), good.astype(np.float64) * 1e12, "nope"]
    if good.dtype.kind == "i":
        bad_inputs.append(np.full_like(good, -1))
    else:
        bad_inputs.append(np.full_like(good, np.nan))
    for bad in bad_inputs:
        try:
            env.step(bad)
        except (TypeError, ValueError):
            pass
    env.step(good)
    env.close()


def main():
    rng = np.random.default_rng(0)
    for name in list_envs():
        fuzz(name, rng)
        print(f"fuzzed {name}", flush=True)
    print("fuzz ok")


if __name__ == "__main__":
    main()
