"""Gymnasium and PettingZoo emulation: structured spaces, episode ends, masks, seeding, backends.

The envs below have known behaviour; they are module-level classes so that process workers can
import them (this file's folder is on sys.path, which spawned workers inherit).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import shoal
from shoal.emulation import (EnvError, flatten, flatten_action, from_gymnasium, from_pettingzoo,
                             make, unflatten, unflatten_action)
from shoal.emulation.spaces import UnsupportedSpaceError, observation_layout

try:
    from pettingzoo import ParallelEnv
except ImportError as exc:  # a test dependency, not an optional one
    raise ImportError("the emulation tests need pettingzoo[butterfly]: pip install -e '.[test]'") \
        from exc


def mixed_dict_space() -> spaces.Dict:
    """Nested Dict/Tuple of leaves with five different dtypes: stored as bytes."""
    return spaces.Dict({
        "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
        "grid": spaces.Box(0, 255, (3, 3), np.uint8),
        "kind": spaces.Discrete(4, start=1),
        "flags": spaces.MultiBinary(3),
        "inner": spaces.Tuple((spaces.Box(-5.0, 5.0, (2,), np.float64),
                               spaces.MultiDiscrete([3, 5]))),
    })


class DictObsEnv(gymnasium.Env):
    """Random structured observations drawn from np_random; episodes of ``length`` steps.

    ``returned`` records every observation handed out (by reset or step), in order.
    """

    def __init__(self, length: int = 4, space: spaces.Space | None = None) -> None:
        self.observation_space = space if space is not None else mixed_dict_space()
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.returned: list[Any] = []

    def _obs(self) -> Any:
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        obs = self.observation_space.sample()
        self.returned.append(obs)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.t >= self.length, False, {}


def dict_action_space() -> spaces.Dict:
    return spaces.Dict({
        "move": spaces.Discrete(3, start=-1),
        "aim": spaces.MultiDiscrete([2, 4]),
        "fire": spaces.MultiBinary(2),
    })


class DictActionEnv(gymnasium.Env):
    """Records each action it receives; observes a step counter."""

    def __init__(self, action_space: spaces.Space | None = None) -> None:
        self.observation_space = spaces.Box(0, 1000, (1,), np.float32)
        self.action_space = action_space if action_space is not None else dict_action_space()
        self.received: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.received.append(action)
        self.t += 1
        return np.array([self.t], np.float32), 0.0, False, False, {}


class CountEnv(gymnasium.Env):
    """obs = [episode, t]; action 1 ends the episode (terminated) once t reaches 3.

    Wrapped in TimeLimit(max_episode_steps=5) by :func:`count_env` for truncation.
    """

    observation_space = spaces.Box(0, 1000, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.episode = -1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t], np.float32)

    def step(self, action):
        self.t += 1
        terminated = bool(action == 1 and self.t >= 3)
        return self._obs(), float(self.t), terminated, False, {"score": 100.0 + self.t}


def count_env() -> gymnasium.Env:
    return gymnasium.wrappers.TimeLimit(CountEnv(), max_episode_steps=5)


class CrashEnv(CountEnv):
    """Raises in step() ``crash_at`` steps after the first reset (how it crashes is a parameter)."""

    def __init__(self, crash_at: int = 3, how: str = "raise") -> None:
        super().__init__()
        self.crash_at = crash_at
        self.how = how
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.crash_at:
            if self.how == "exit":
                os._exit(3)
            if self.how == "value":
                raise ValueError("a bug inside the env, not a rejected action")
            raise RuntimeError(f"boom at step {self.steps}")
        return super().step(action)


class Arena(ParallelEnv):
    """Three possible agents with a fixed script, for mask tests.

    - reset: agents a and b; c is not in the game yet.
    - t=2: b terminates; c joins.
    - t=4: c terminates.
    - t=5: a is truncated; no agent is left, so the episode is over.

    Observations are [agent index, t] (float32); each acting agent's reward is its action.
    ``received`` records the action dict of every step.
    """

    metadata = {"name": "arena_v0", "render_modes": []}

    def __init__(self) -> None:
        self.possible_agents = ["a", "b", "c"]
        self.received: list[dict] = []
        self._obs_space = spaces.Box(0, 100, (2,), np.float32)
        self._act_space = spaces.Discrete(3)

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.possible_agents.index(agent), self.t], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.t = 0
        self.agents = ["a", "b"]
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.received.append(dict(actions))
        self.t += 1
        acting = list(self.agents)
        rewards = {a: float(actions[a]) for a in acting}
        terms = {a: False for a in acting}
        truncs = {a: False for a in acting}
        if self.t == 2:
            terms["b"] = True
            self.agents = ["a", "c"]
            rewards["c"], terms["c"], truncs["c"] = 0.0, False, False
        elif self.t == 4:
            terms["c"] = True
            self.agents = ["a"]
        elif self.t == 5:
            truncs["a"] = True
            self.agents = []
        observed = set(acting) | set(self.agents)
        obs = {a: self._obs(a) for a in observed}
        infos = {a: {} for a in observed}
        return obs, rewards, terms, truncs, infos


class RandomArena(ParallelEnv):
    """Four agents that die at random (from the seeded RNG); respawns none until reset."""

    metadata = {"name": "random_arena_v0", "render_modes": []}

    def __init__(self) -> None:
        self.possible_agents = [f"p{i}" for i in range(4)]
        self._obs_space = spaces.Box(-10, 10, (3,), np.float32)
        self._act_space = spaces.Discrete(4)

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or not hasattr(self, "rng"):
            self.rng = np.random.default_rng(seed)   # without a seed the stream continues
        self.t = 0
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def _obs(self, agent: str) -> np.ndarray:
        return self.rng.uniform(-1, 1, 3).astype(np.float32)

    def step(self, actions):
        self.t += 1
        acting = list(self.agents)
        rewards = {a: float(actions[a]) * 0.5 for a in acting}
        terms = {a: bool(self.rng.random() < 0.15) for a in acting}
        truncs = {a: self.t >= 12 and not terms[a] for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        obs = {a: self._obs(a) for a in acting}
        return obs, rewards, terms, truncs, {a: {} for a in acting}




# ---- helpers ----

def assert_same(a: Any, b: Any) -> None:
    """Exact equality of nested dicts/tuples of arrays, dtypes included."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, (a.dtype, b.dtype)
        assert a.shape == b.shape, (a.shape, b.shape)
        assert np.array_equal(a, b), (a, b)


def squeeze_batch(value: Any) -> Any:
    """A batch-of-1 structured value without its batch dimension."""
    if isinstance(value, dict):
        return {k: squeeze_batch(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(squeeze_batch(v) for v in value)
    return value[0]


def rollout(env, steps: int, seed: int, rng_seed: int = 0) -> list[np.ndarray]:
    """Copies of every buffer over a random rollout (random actions from a fixed stream)."""
    rng = np.random.default_rng(rng_seed)
    obs, infos = env.reset(seed=seed)
    out = [obs.copy(), env.masks.copy()]
    space = env.single_action_space
    for _ in range(steps):
        if isinstance(space, spaces.Discrete):
            act = rng.integers(0, space.n, env.num_agents).astype(np.int32)
        else:
            act = rng.uniform(-1, 1, (env.num_agents, *space.shape)).astype(np.float32)
        obs, rew, term, trunc, infos = env.step(act)
        out += [obs.copy(), rew.copy(), term.copy(), trunc.copy(), env.masks.copy()]
        done = term | trunc
        out.append(infos["final_observation"][done].copy())
    return out


# ---- structured observations ----

SPACES = {
    "mixed dict": mixed_dict_space(),
    "float dict": spaces.Dict({"a": spaces.Box(-1, 1, (2,), np.float32),
                               "b": spaces.Box(0, 5, (2, 3), np.float32)}),
    "int tuple": spaces.Tuple((spaces.Discrete(5), spaces.MultiDiscrete([2, 3]),
                               spaces.Dict({"x": spaces.Discrete(2, start=-1)}))),
    "discrete": spaces.Discrete(7, start=3),
    "image box": spaces.Box(0, 255, (4, 5, 3), np.uint8),
    "bool and float64": spaces.Tuple((spaces.Box(0, 1, (3,), np.bool_),
                                      spaces.Box(-1, 1, (1,), np.float64))),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_flatten_unflatten_round_trip(name):
    space = SPACES[name]
    space.seed(1)
    layout = observation_layout(space)
    for _ in range(20):
        value = space.sample()
        row = flatten(value, space)
        assert row.shape == layout.row_shape and row.dtype == layout.dtype
        back = squeeze_batch(unflatten(row[None], space))
        if isinstance(space, spaces.Discrete):
            assert back.shape == () and int(back) == int(value)   # leaf shape (): (batch,)
        else:
            assert_same(back, value)


def test_layout_dtypes():
    assert observation_layout(SPACES["float dict"]).dtype == np.float32       # leaves agree
    assert observation_layout(SPACES["float dict"]).row_shape == (8,)
    assert observation_layout(SPACES["int tuple"]).dtype == np.int64
    mixed = observation_layout(SPACES["mixed dict"])
    assert mixed.as_bytes and mixed.dtype == np.uint8                        # leaves differ
    assert mixed.row_shape[0] % 8 == 0                                       # aligned rows
    for leaf in mixed.leaves:
        assert leaf.offset % leaf.dtype.itemsize == 0
    box = SPACES["image box"]
    assert observation_layout(box).flat_space is box                         # stored as it is
    flat = observation_layout(SPACES["float dict"]).flat_space
    assert np.array_equal(flat.low, np.r_[[-1, -1], np.zeros(6)]) and flat.high[-1] == 5


def test_unflatten_torch_keeps_dtypes_and_shapes():
    torch = pytest.importorskip("torch")
    space = mixed_dict_space()
    space.seed(3)
    values = [space.sample() for _ in range(5)]
    rows = np.stack([flatten(v, space) for v in values])
    out = unflatten(torch.from_numpy(rows), space)
    assert out["pos"].dtype == torch.float32 and out["pos"].shape == (5, 2)
    assert out["grid"].dtype == torch.uint8 and out["grid"].shape == (5, 3, 3)
    assert out["kind"].dtype == torch.int64 and out["kind"].shape == (5,)
    assert out["inner"][0].dtype == torch.float64
    for k, v in enumerate(values):
        assert_same(out["inner"][0][k].numpy(), v["inner"][0])
        assert_same(out["inner"][1][k].numpy(), v["inner"][1])
        assert int(out["kind"][k]) == int(v["kind"])
    # a minibatch gathered from the rows (not a contiguous slice) works too
    picked = unflatten(torch.from_numpy(rows)[[4, 1]], space)
    assert_same(picked["flags"].numpy(), np.stack([values[4]["flags"], values[1]["flags"]]))


def test_dict_observation_env_round_trips_exactly():
    env = from_gymnasium(DictObsEnv, 3, seed=0)
    space = env.structured_observation_space
    assert env.single_observation_space.dtype == np.uint8
    obs, _ = env.reset()
    envs = env.envs
    for i in range(3):
        assert_same(squeeze_batch(unflatten(obs[i:i + 1], space)), envs[i].returned[-1])
    for _ in range(9):
        obs, rew, term, trunc, infos = env.step(np.zeros(3, np.int32))
        batch = unflatten(obs, space)
        for i in range(3):
            assert_same(squeeze_batch(unflatten(obs[i:i + 1], space)), envs[i].returned[-1])
            assert_same(batch["pos"][i], envs[i].returned[-1]["pos"])
            if term[i]:
                final = unflatten(infos["final_observation"][i:i + 1], space)
                assert_same(squeeze_batch(final), envs[i].returned[-2])
    assert env.log()["n"] == 6  # episodes of 4 steps: each env finished two in 9 steps
    env.close()


def test_unsupported_space_names_the_fix():
    space = spaces.Dict({"ok": spaces.Discrete(2), "text": spaces.Text(5)})
    with pytest.raises(UnsupportedSpaceError, match=r"\['text'\] is Text.*Fix"):
        observation_layout(space)


# ---- structured actions ----

def test_dict_action_env_round_trips_exactly():
    env = from_gymnasium(DictActionEnv, 2, seed=0)
    flat = env.single_action_space
    assert isinstance(flat, spaces.MultiDiscrete)
    assert list(flat.nvec) == [2, 4, 2, 2, 3]   # aim (2, 4), fire (2, 2), move 3: Dict keys sorted
    space = env.structured_action_space
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        act = np.stack([rng.integers(0, n, 2) for n in flat.nvec], -1).astype(np.int32)
        env.step(act)
        for i in range(2):
            got = env.envs[i].received[-1]
            assert space.contains(got)
            assert_same(got, unflatten_action(act[i], space))
            assert np.array_equal(flatten_action(got, space), act[i])
    # and from the structured side: every sampled action survives the trip
    space.seed(0)
    for _ in range(50):
        a = space.sample()
        assert_same(unflatten_action(flatten_action(a, space), space), a)
    env.close()


def test_hybrid_and_box_actions():
    hybrid = spaces.Tuple((spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32)))
    env = from_gymnasium(lambda: DictActionEnv(hybrid), 1, seed=0)
    flat = env.single_action_space
    assert isinstance(flat, spaces.Box) and flat.shape == (3,)
    assert np.array_equal(flat.low, [0, -1, -1]) and np.array_equal(flat.high, [2, 1, 1])
    env.reset()
    env.step(np.array([[1.7, 0.5, 3.0]], np.float32))
    move, aim = env.envs[0].received[-1]
    assert int(move) == 2 and np.array_equal(aim, np.array([0.5, 1.0], np.float32))  # rounded, clipped
    env.step(np.array([[-4.0, 0.0, 0.0]], np.float32))
    assert int(env.envs[0].received[-1][0]) == 0
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([[0.0, np.nan, 0.0]], np.float32))
    env.close()


def test_discrete_start_and_invalid_actions():
    env = from_gymnasium(lambda: DictActionEnv(spaces.Discrete(4, start=10)), 3, seed=0)
    assert env.single_action_space == spaces.Discrete(4)
    env.reset()
    env.step(np.array([0, 3, 1]))
    assert [int(e.received[-1]) for e in env.envs] == [10, 13, 11]
    with pytest.raises(ValueError, match=r"action 4 for agent 2 .* \[0, 4\)"):
        env.step(np.array([0, 0, 4]))
    assert [len(e.received) for e in env.envs] == [1, 1, 1]   # rejected before any env moved
    env.step(np.array([2, 2, 2]))                             # and the vector is still usable
    env.close()


# ---- Gymnasium semantics ----

def test_terminated_truncated_and_final_observation():
    env = from_gymnasium(count_env, 2, seed=0)
    env.reset()
    act = np.array([1, 0])   # env 0 terminates at t=3; env 1 is truncated at t=5 by TimeLimit
    for t in range(1, 6):
        obs, rew, term, trunc, infos = env.step(act)
        assert list(rew) == [float(t if t <= 3 else t - 3), float(t)]
        if t == 3:
            assert term[0] and not trunc[0]
            assert np.array_equal(infos["final_observation"][0], [0, 3])   # last obs of episode 0
            assert np.array_equal(obs[0], [1, 0])                          # first obs of episode 1
        elif t == 5:
            assert trunc[1] and not term[1]
            assert np.array_equal(infos["final_observation"][1], [0, 5])
            assert np.array_equal(obs[1], [1, 0])
        else:
            assert not term[1] and not trunc[1]
    stats = env.log()
    assert stats["n"] == 2
    assert stats["episode_length"] == 4.0           # (3 + 5) / 2
    assert stats["score"] == (103.0 + 105.0) / 2    # info["score"] of the last step, when given
    env.close()


def test_seeding_env_i_gets_seed_plus_i():
    env = make("gym:CartPole-v1", 3, seed=11)
    obs, _ = env.reset()
    for i in range(3):
        ref, _ = gymnasium.make("CartPole-v1").reset(seed=11 + i)
        assert np.array_equal(obs[i], ref)
    a = rollout(env, 120, seed=11)
    b = rollout(make("gym:CartPole-v1", 3), 120, seed=11)
    c = rollout(make("gym:CartPole-v1", 3), 120, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    env.close()


def test_module_colon_id_form(tmp_path, monkeypatch):
    (tmp_path / "shoal_register_probe.py").write_text(
        "import gymnasium\n"
        "gymnasium.register(id='ShoalProbe-v0', entry_point='test_emulation:count_env')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make("gym:shoal_register_probe:ShoalProbe-v0", 2, seed=0)
    env.reset()
    _, _, term, _, _ = env.step(np.ones(2, np.int32))
    assert env.name == "gym:shoal_register_probe:ShoalProbe-v0"
    env.close()


def test_render_text_and_a_clear_error_for_frames():
    env = make("gym:CartPole-v1", 2, seed=0)
    env.reset()
    text = env.render("ansi", index=1)
    assert "env 1" in text and "obs" in text
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        env.render("rgb_array")
    env.close()


def test_threads_backend_matches_serial():
    a = rollout(make("gym:CartPole-v1", 4), 80, seed=3)
    env = make("gym:CartPole-v1", 4, backend="threads", num_workers=2, num_buffers=2)
    b = rollout(env, 80, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    env.close()


def test_snapshot_resumes_exactly():
    a, b = make("gym:CartPole-v1", 3, seed=0), make("gym:CartPole-v1", 3, seed=9)
    a.reset()
    b.reset()
    rng = np.random.default_rng(0)
    for _ in range(40):
        a.step(rng.integers(0, 2, 3).astype(np.int32))
    b.load_state(a.save_state(), allow_pickle=True)
    for _ in range(60):
        act = rng.integers(0, 2, 3).astype(np.int32)
        ra, rb = a.step(act), b.step(act)
        assert all(np.array_equal(x, y) for x, y in zip(ra[:4], rb[:4]))
    assert a.log() == b.log()
    with pytest.raises(ValueError, match="other envs"):
        from_gymnasium(lambda: gymnasium.make("CartPole-v1"), 3, name="other").load_state(
            a.save_state(), allow_pickle=True)
    for e in (a, b):
        e.close()


# ---- PettingZoo ----

def test_arena_is_a_valid_pettingzoo_env():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(Arena(), num_cycles=20)
    parallel_api_test(RandomArena(), num_cycles=50)


def test_pettingzoo_masks_deaths_and_arrivals():
    env = from_pettingzoo(Arena, 2, seed=0)
    assert env.agents_per_env == 3 and env.num_agents == 6
    obs, infos = env.reset()
    arena = env.envs[0]
    assert list(env.masks) == [True, True, False] * 2
    assert np.array_equal(obs[0:3], [[0, 0], [1, 0], [0, 0]])    # c absent: zero row
    masks_seen, obs_seen = [], []
    for t in range(1, 7):
        # Absent agents get out-of-range actions: they must be ignored, not rejected.
        act = np.where(env.masks, 1 + t % 2, 99).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(act)
        masks_seen.append(list(env.masks[:3]))
        obs_seen.append(obs[:3].copy())
        if t == 2:
            assert set(arena.received[-1]) == {"a", "b"}
            assert term[1] and rew[1] == 1 + t % 2                    # b's last reward
            assert np.array_equal(infos["final_observation"][1], [1, 2])
            assert np.array_equal(obs[1], [0, 0])                      # b's row zeroed
            assert np.array_equal(obs[2], [2, 2])                      # c arrived
        if t == 3:
            assert set(arena.received[-1]) == {"a", "c"}               # b's action ignored
        if t == 4:
            assert term[2] and np.array_equal(infos["final_observation"][2], [2, 4])
        if t == 5:
            assert set(arena.received[-1]) == {"a"}
            assert trunc[0] and not term[0]
            assert np.array_equal(infos["final_observation"][0], [0, 5])
            assert np.array_equal(obs[0:2], [[0, 0], [1, 0]])          # reset at once
    assert masks_seen == [[True, True, False], [True, False, True], [True, False, True],
                          [True, False, False], [True, True, False], [True, True, False]]
    stats = env.log()
    assert stats["n"] == 2 * 3     # per env: b, c and a each finished one episode
    env.close()


def test_pettingzoo_random_deaths_processes_match_serial():
    a = rollout(from_pettingzoo(RandomArena, 4, seed=0), 60, seed=5)
    env = from_pettingzoo(RandomArena, 4, backend="processes", num_workers=2)
    b = rollout(env, 60, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    masks = np.array(a[5::6])
    assert not masks.all() and masks.any()        # agents did die
    env.close()


def test_pettingzoo_snapshot_keeps_who_is_alive():
    a, b = from_pettingzoo(RandomArena, 2, seed=0), from_pettingzoo(RandomArena, 2, seed=1)
    a.reset()
    b.reset()
    for _ in range(5):
        a.step(np.ones(8, np.int32))
    b.load_state(a.save_state(), allow_pickle=True)
    for _ in range(20):
        ra, rb = a.step(np.full(8, 2, np.int32)), b.step(np.full(8, 2, np.int32))
        assert all(np.array_equal(x, y) for x, y in zip(ra[:4], rb[:4]))
        assert np.array_equal(a.masks, b.masks)


def test_pettingzoo_package_env_by_path():
    env = make("pz:pettingzoo.butterfly.pistonball_v6", 2, seed=0, n_pistons=4, max_cycles=30)
    assert env.agents_per_env == 4
    rollout(env, 40, seed=0)
    env.close()


def test_pz_path_with_missing_dependency_names_the_fix():
    with pytest.raises(ModuleNotFoundError, match="check the path"):
        make("pz:no_such_package_here.some_env_v0", 1)


# ---- the processes backend ----

def test_processes_match_serial_with_double_buffering():
    a = rollout(make("gym:CartPole-v1", 4), 150, seed=2)
    env = make("gym:CartPole-v1", 4, backend="processes", num_workers=2)
    b = rollout(env, 150, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert env.structured_observation_space == gymnasium.make("CartPole-v1").observation_space
    env.close()
    # recv/send over two groups, each stepped by its own worker
    env = from_gymnasium(lambda: DictObsEnv(length=3), 4, seed=0, backend="processes",
                         num_workers=2, num_buffers=2)
    ref = from_gymnasium(lambda: DictObsEnv(length=3), 4, seed=0, num_buffers=2)
    for e in (env, ref):
        e.reset()
    for _ in range(8):
        got = [env.recv(), ref.recv()]
        assert np.array_equal(got[0][0], got[1][0]) and got[0][5] == got[1][5]
        env.send(np.zeros(2, np.int32))
        ref.send(np.zeros(2, np.int32))
    env.close()
    ref.close()


def test_processes_invalid_action_names_the_global_agent():
    env = make("gym:CartPole-v1", 4, backend="processes", num_workers=2, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="for agent 3"):
        env.step(np.array([0, 1, 0, 7]))
    env.step(np.array([0, 1, 0, 1]))  # still usable
    env.close()


def test_worker_exception_shows_its_traceback():
    env = from_gymnasium(CrashEnv, 2, backend="processes", num_workers=2, seed=0)
    env.reset()
    env.step(np.zeros(2, np.int32))
    env.step(np.zeros(2, np.int32))
    with pytest.raises(RuntimeError) as info:
        env.step(np.zeros(2, np.int32))
    text = str(info.value)
    assert "boom at step 3" in text and "Worker traceback" in text and "in step" in text
    assert env._closed


def test_env_value_error_is_a_crash_not_a_rejected_action():
    env = from_gymnasium(lambda: CrashEnv(crash_at=1, how="value"), 2, backend="processes",
                         num_workers=2, seed=0)
    env.reset()
    with pytest.raises(RuntimeError, match="a bug inside the env"):
        env.step(np.zeros(2, np.int32))
    serial = from_gymnasium(lambda: CrashEnv(crash_at=1, how="value"), 2, seed=0)
    serial.reset()
    with pytest.raises(EnvError, match=r"env 0 raised in step\(\).*shoal check") as info:
        serial.step(np.zeros(2, np.int32))
    assert isinstance(info.value.__cause__, ValueError)


def test_worker_os_exit_is_reported():
    env = from_gymnasium(lambda: CrashEnv(crash_at=2, how="exit"), 2, backend="processes",
                         num_workers=2, seed=0)
    env.reset()
    env.step(np.zeros(2, np.int32))
    with pytest.raises(RuntimeError, match="died with exit code 3"):
        env.step(np.zeros(2, np.int32))


def test_shoal_make_routes_python_envs():
    env = shoal.make("gym:CartPole-v1", num_envs=2, seed=0)
    assert env.num_agents == 2 and env.name == "gym:CartPole-v1"
    obs, _ = env.reset()
    ref, _ = gymnasium.make("CartPole-v1").reset(seed=1)
    assert np.array_equal(obs[1], ref)                       # env 1 got seed 0 + 1
    env.close()
    env = shoal.make("gym:CartPole-v1", 2, backend="processes", num_workers=2, seed=0,
                     max_episode_steps=7)                     # a gymnasium.make kwarg
    env.reset()
    for _ in range(7):
        _, _, term, trunc, _ = env.step(np.zeros(2, np.int32))
    assert trunc.all() or term.all()                          # no episode outlives 7 steps
    env.close()
    pz = shoal.from_pettingzoo(Arena, 1, seed=0)
    assert pz.num_agents == 3
    pz.close()
    env = shoal.from_gymnasium(lambda: DictObsEnv(length=2), 2, seed=0)
    assert env.structured_observation_space == mixed_dict_space()
    env.close()


def test_names_that_do_not_resolve_say_how_to_fix_them():
    with pytest.raises(ValueError, match=r"no env 'CartPol-v1' .*Did you mean.*Fix: .*pprint_registry"):
        shoal.make("gym:CartPol-v1", 1)
    with pytest.raises(TypeError, match=r"keyword arguments \{'no_such_arg': 1\}.*--env.KEY"):
        shoal.make("gym:CartPole-v1", 1, no_such_arg=1)
    with pytest.raises(ValueError, match="names no env: write gym:ID"):
        shoal.make("gym:", 1)
    with pytest.raises(ValueError, match="registry has no parallel env.*pprint_registry"):
        shoal.make("pz:butterfly/no_such_env-v1", 1)
    with pytest.raises(ModuleNotFoundError, match="cannot import 'no_such_module_xyz'"):
        shoal.make("gym:no_such_module_xyz:Thing-v0", 1)


# ---- Gymnasium vector envs and autoreset ----

@pytest.mark.parametrize("vector, mode", [("sync", "NextStep"), ("sync", "SameStep"),
                                          ("sync", "Disabled"), ("async", "NextStep")])
def test_gymnasium_vector_env_in_every_autoreset_mode(vector, mode):
    """A built Gymnasium vector env behaves exactly like shoal's own vectorisation of the same
    envs: same observations, rewards, terminated/truncated, final observations and stats."""
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

    cls = SyncVectorEnv if vector == "sync" else AsyncVectorEnv
    ref = shoal.from_gymnasium(count_env, 3, seed=0)
    env = shoal.from_gymnasium(cls([count_env] * 3, autoreset_mode=AutoresetMode(mode)))
    assert env.autoreset_mode == mode and env.num_envs == 3
    rng = np.random.default_rng(0)
    env.reset(seed=4)
    ref.reset(seed=4)
    terminated = truncated = 0
    for _ in range(40):
        act = rng.integers(0, 2, 3).astype(np.int32)
        got, want = env.step(act), ref.step(act)
        for x, y in zip(got[:4], want[:4]):
            assert np.array_equal(x, y)
        done = got[2] | got[3]
        assert np.array_equal(got[4]["final_observation"][done], want[4]["final_observation"][done])
        terminated += int(got[2].sum())
        truncated += int(got[3].sum())
    assert terminated > 3 and truncated > 3    # both kinds of episode end happened
    assert env.log() == ref.log()
    env.close()
    ref.close()


def test_gymnasium_vector_env_with_dict_observations():
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    vec = SyncVectorEnv([lambda: DictObsEnv(length=3)] * 2, autoreset_mode=AutoresetMode.NEXT_STEP)
    env = shoal.from_gymnasium(vec, seed=0)
    space = env.structured_observation_space
    obs, _ = env.reset()
    inner = [e.unwrapped for e in vec.envs]
    for _ in range(7):
        obs, _, term, trunc, infos = env.step(np.zeros(2, np.int32))
        for i in range(2):
            assert_same(squeeze_batch(unflatten(obs[i:i + 1], space)), inner[i].returned[-1])
            if term[i]:
                assert_same(squeeze_batch(unflatten(infos["final_observation"][i:i + 1], space)),
                            inner[i].returned[-2])
    env.close()


def test_gymnasium_vector_env_arguments_are_checked():
    vec = gymnasium.make_vec("CartPole-v1", 2)
    with pytest.raises(ValueError, match=r"num_envs=3 .*backend='processes'.*Fix: drop"):
        shoal.from_gymnasium(vec, 3, backend="processes")
    with pytest.raises(TypeError, match=r"returned a Gymnasium vector env.*from_gymnasium\(vector_env\)"):
        shoal.from_gymnasium(lambda: gymnasium.make_vec("CartPole-v1", 2), 2)
    vec.close()


def test_env_wrapped_in_gymnasium_autoreset_is_reset_by_shoal():
    """Gymnasium's single-env Autoreset wrapper (next-step autoreset) changes nothing: shoal
    resets on the step an episode ends, which clears the wrapper's pending reset."""
    plain = shoal.from_gymnasium(count_env, 2, seed=0)
    wrapped = shoal.from_gymnasium(lambda: gymnasium.wrappers.Autoreset(count_env()), 2, seed=0)
    a, b = rollout(plain, 30, seed=1), rollout(wrapped, 30, seed=1)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sum(int(t.sum()) for t in a[4::6]) > 0   # episodes did end (terminals)
    plain.close()
    wrapped.close()


# ---- a PettingZoo package env whose agents die at different times ----

KAZ = "pz:pettingzoo.butterfly.knights_archers_zombies_v11"
KAZ_KWARGS = dict(spawn_delay=5, max_cycles=300)   # zombies come fast: agents die


def test_pettingzoo_package_env_agents_die_at_different_times():
    env = make(KAZ, 2, seed=0, **KAZ_KWARGS)
    a = env.agents_per_env
    assert a == 4 and env.possible_agents == ["archer_0", "archer_1", "knight_0", "knight_1"]
    env.reset()
    rng = np.random.default_rng(0)
    lone_deaths = 0     # an agent died while others of its env played on
    absent_steps = 0    # steps an absent agent's row sat masked and zeroed
    resets = 0
    for _ in range(300):
        before = env.masks.copy()
        # absent agents get out-of-range actions: they must be ignored, not rejected
        act = np.where(before, rng.integers(0, 6, env.num_agents), 99).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(act)
        ended = term | trunc
        for e in range(2):
            rows = slice(e * a, (e + 1) * a)
            assert not (ended[rows] & ~before[rows]).any()      # only present agents end
            if ended[rows].any() and env.masks[rows].any() and not env.masks[rows].all():
                lone_deaths += 1
            if (before[rows] & ~ended[rows]).sum() == 0 and before[rows].any():
                resets += 1                                     # all gone: reset at once
                assert env.masks[rows].all()
        for r in np.flatnonzero(ended):
            assert infos["final_observation"][r].any()         # its last observation
        absent = ~env.masks
        assert not obs[absent].any()
        absent_steps += int(absent.sum())
    assert lone_deaths >= 2 and absent_steps > 50 and resets >= 2
    stats = env.log()
    assert stats["n"] > 8 and 0 < stats["episode_length"] < 300
    env.close()


def test_pettingzoo_package_env_processes_match_serial_and_registry_id():
    a = rollout(make(KAZ, 2, **KAZ_KWARGS), 160, seed=3)
    env = make(KAZ, 2, backend="processes", num_workers=2, **KAZ_KWARGS)
    b = rollout(env, 160, seed=3)
    env.close()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    masks = np.array(a[6::6])
    assert not masks.all() and masks.any()       # agents did die
    c = rollout(make("pz:butterfly/knights_archers_zombies-v11", 2, **KAZ_KWARGS), 160, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, c))
