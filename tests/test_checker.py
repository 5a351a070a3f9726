"""The env checker (``shoal check``): each broken env gets a message naming the problem and its fix."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
from gymnasium import spaces

from shoal.emulation.checker import check_env
from shoal.tools.check_cmd import main as check_main


class _Base(gymnasium.Env):
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, self.t >= 10, False, {}


class WrongDtypeEnv(_Base):
    """Returns float64 observations for a float32 space."""

    def _obs(self):
        return self.np_random.uniform(-1, 1, 3)


class OutOfSpaceEnv(_Base):
    """Observations reach 2.0 in a space bounded by [-1, 1]."""

    def _obs(self):
        return (self.np_random.uniform(-1, 1, 3) * 2).astype(np.float32)


class ResetReturnsObsEnv(_Base):
    """The old Gym API: reset returns the observation alone."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs()


class FourTupleStepEnv(_Base):
    """The old Gym API: step returns (obs, reward, done, info)."""

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, self.t >= 10, {}


class UnseededEnv(_Base):
    """Draws from the global numpy RNG, so a seed does not fix its stream."""

    def _obs(self):
        return np.random.uniform(-1, 1, 3).astype(np.float32)


class NoSeedArgEnv(_Base):
    """reset() without seed/options parameters."""

    def reset(self):  # type: ignore[override]
        self.t = 0
        return self._obs(), {}


class ListObsEnv(_Base):
    """Returns Python lists instead of arrays."""

    def _obs(self):
        return [0.0, 0.5, -0.5]


class BadRewardEnv(_Base):
    """Returns the reward as a 1-element array, and flags as ints."""

    def step(self, action):
        self.t += 1
        return self._obs(), np.array([1.0]), int(self.t >= 10), 0, {}


def make_wrong_dtype() -> gymnasium.Env:
    return WrongDtypeEnv()


class DictObsWrongKeysEnv(_Base):
    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,), np.float32),
                                     "b": spaces.Discrete(3)})

    def _obs(self):
        return {"a": np.zeros(2, np.float32), "c": 1}


from pettingzoo import ParallelEnv  # a test dependency: pip install -e '.[test]'


def problems(report) -> str:
    return "\n".join(str(p) for p in report.errors)


def only_error(report, *needles: str) -> str:
    """The text of the report's errors; asserts each needle appears in it."""
    assert not report.ok, str(report)
    text = problems(report)
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{report}"
    return text


def test_a_good_env_passes():
    report = check_env("gym:CartPole-v1")
    assert report.ok, str(report)
    assert any("deterministic" in p for p in report.passed)
    assert any("vectorises" in p for p in report.passed)


def test_wrong_dtype_observation():
    text = only_error(check_env(WrongDtypeEnv), "dtype float64", "declares float32",
                      "obs.astype(np.float32)")
    assert "reset()" in text


def test_observation_outside_its_space():
    only_error(check_env(OutOfSpaceEnv), "outside its space", "bounds [-1.0, 1.0]", "np.clip")


def test_reset_returning_the_observation_alone():
    only_error(check_env(ResetReturnsObsEnv), "reset(): returned a numpy array",
               "not (observation, info)", "return `obs, {}`")


def test_step_returning_four_values():
    only_error(check_env(FourTupleStepEnv), "step(): returned 4 values",
               "terminated, truncated, info", "bootstrap")


def test_non_deterministic_under_a_seed():
    only_error(check_env(UnseededEnv), "not deterministic under a seed", "self.np_random",
               "super().reset(seed=seed)")


def test_reset_without_seed_parameter():
    only_error(check_env(NoSeedArgEnv), "takes no seed or options argument",
               "def reset(self, *, seed=None, options=None)")


def test_list_observation_and_bad_step_types():
    only_error(check_env(ListObsEnv), "not a numpy array", "np.asarray(obs, dtype=np.float32)")
    only_error(check_env(BadRewardEnv), "reward array([1.])", "float(reward)",
               "terminated=0", "bool(terminated)")


def test_dict_observation_with_wrong_keys():
    only_error(check_env(DictObsWrongKeysEnv), "missing ['b']", "not in the space: ['c']")


def test_unsupported_space():
    class TextEnv(_Base):
        observation_space = spaces.Text(8)

    only_error(check_env(TextEnv), "Text", "fixed size")


def test_unknown_names():
    only_error(check_env("gym:NoSuchEnv-v0"), "gymnasium cannot make it", "pprint_registry")
    only_error(check_env("pz:no_such_module_xyz"), "no_such_module_xyz")


def test_pettingzoo_checks():
    class Mixed(ParallelEnv):
        metadata = {"name": "mixed"}
        possible_agents = ["x", "y"]

        def observation_space(self, agent):
            return spaces.Box(0, 1, (2 if agent == "x" else 3,), np.float32)

        def action_space(self, agent):
            return spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            return {a: self.observation_space(a).sample() for a in self.agents}, {}

        def step(self, actions):
            raise AssertionError("not reached")

    only_error(check_env(Mixed), "agent 'y' has observation space", "same observation space")


def test_cli_exit_status_and_json(capsys):
    assert check_main(["tests.test_checker:make_wrong_dtype"]) == 1
    out = capsys.readouterr().out
    assert "dtype float64" in out and "fix:" in out
    assert check_main(["gym:CartPole-v1", "--json", "--steps", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["kind"] == "gymnasium"
    assert check_main(["maze"]) == 0 and "C envs" in capsys.readouterr().out


class _Squad(ParallelEnv):
    """Two agents; ``mode`` picks the bug: "vanish" (y leaves env.agents without a flag at step 2),
    "stranger" (an agent outside possible_agents appears), "random" (the global RNG)."""

    metadata = {"name": "squad"}
    possible_agents = ["x", "y"]

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode

    def observation_space(self, agent):
        return spaces.Box(0.0, 10.0, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def _obs(self):
        value = np.random.uniform(0, 1) if self.mode == "random" else self.t
        return np.array([value, 1.0], np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        return {a: self._obs() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        acting = list(self.agents)
        terms = {a: False for a in acting}
        truncs = {a: self.t >= 5 for a in acting}
        if self.t == 2 and "y" in self.agents:
            self.agents = ["x", "z"] if self.mode == "stranger" else ["x"]
            terms["y"] = self.mode == "ok"
        if self.t >= 5:
            self.agents = []
        obs = {a: self._obs() for a in acting}
        return obs, {a: 1.0 for a in acting}, terms, truncs, {a: {} for a in acting}


def test_a_good_pettingzoo_env_passes():
    report = check_env(lambda: _Squad("ok"))
    assert report.ok and not report.warnings, str(report)
    assert any("vectorises" in p for p in report.passed)


def test_pettingzoo_agent_leaving_without_a_flag_is_a_warning():
    report = check_env(lambda: _Squad("vanish"))
    assert report.ok, str(report)   # shoal copes: it counts the agent as terminated
    assert any("left env.agents at step 2 without terminated or truncated" in p.what
               for p in report.warnings), str(report)


def test_pettingzoo_agent_outside_possible_agents():
    only_error(check_env(lambda: _Squad("stranger")), "env.agents holds ['z']",
               "list every agent that can ever appear in self.possible_agents")


def test_pettingzoo_non_deterministic():
    only_error(check_env(lambda: _Squad("random")), "not deterministic under a seed")


def test_a_pettingzoo_package_env_passes():
    report = check_env("pz:butterfly/knights_archers_zombies-v11", env_kwargs={"spawn_delay": 5},
                       steps=200)
    assert report.ok, str(report)
    assert report.kind == "pettingzoo" and any("episode(s) ended" in p for p in report.passed)


class _MaskedEnv(gymnasium.Env):
    """Dict observation with an "action_mask" of ``mask_size`` entries of ``mask_dtype``."""

    mask_size, mask_dtype = 3, np.int8

    def __init__(self):
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "action_mask": spaces.Box(0, 1, (self.mask_size,), self.mask_dtype)})
        self.action_space = spaces.Discrete(3)

    def _obs(self):
        return {"observation": np.zeros(2, np.float32),
                "action_mask": np.ones(self.mask_size, self.mask_dtype)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 0.0, False, False, {}


def test_an_action_mask_that_fits_passes():
    report = check_env(_MaskedEnv)
    assert report.ok, str(report)
    assert any("'action_mask' fits the action space (3 entries)" in p for p in report.passed)


def test_an_action_mask_of_the_wrong_size_is_an_error():
    class WrongSize(_MaskedEnv):
        mask_size = 4

    only_error(check_env(WrongSize), "'action_mask' is Box", "has 3 choices",
               "one 0/1 entry per choice")


def test_a_float_action_mask_is_a_warning():
    class FloatMask(_MaskedEnv):
        mask_dtype = np.float32

    report = check_env(FloatMask)
    assert report.ok
    assert any("dtype float32" in p.what for p in report.warnings), str(report)
