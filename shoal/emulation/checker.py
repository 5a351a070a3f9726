"""An env checker that says what is wrong with a Python env and how to fix it.

    from shoal.emulation.checker import check_env
    report = check_env("gym:CartPole-v1")      # or a creator, "pz:...", "pkg.module:make_env"
    print(report)                              # every check, each problem with its fix
    report.ok                                  # False if any error was found

It checks, for Gymnasium envs (Gymnasium 1.x API) and PettingZoo parallel envs:

- the env can be built and has the API's methods and spaces, and shoal can lay the spaces out in
  buffer rows;
- ``reset`` accepts ``seed``/``options`` and returns ``(observation, info)``;
- ``step`` returns ``(observation, reward, terminated, truncated, info)`` with a finite number for
  the reward and booleans for the flags;
- every observation over a random run (with resets) is inside its space: container structure,
  dtype, shape, bounds, no NaN;
- two fresh envs reset with the same seed and given the same actions produce the same
  observations, rewards and flags;
- shoal can vectorise it (two envs, a few steps).

``shoal check ENV_OR_CREATOR`` runs it from the command line.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import math
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from .factory import GYMNASIUM, PETTINGZOO, resolve_callable, resolve_pettingzoo

__all__ = ["Problem", "Report", "check_env", "resolve_target"]

RUN_STEPS = 300          # random steps checked for observations inside their space
DETERMINISM_STEPS = 50   # steps compared between two seeded runs


@dataclass
class Problem:
    """One thing wrong with the env: what, where, and the fix."""

    what: str
    fix: str
    where: str = ""
    severity: str = "error"   # "error" (shoal cannot use the env correctly) or "warning"

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{where}{self.what}\n    fix: {self.fix}"


@dataclass
class Report:
    """What :func:`check_env` found."""

    target: str
    kind: str = ""
    description: str = ""
    passed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, what: str, fix: str, where: str = "", severity: str = "error") -> None:
        self.problems.append(Problem(what, fix, where, severity))

    def __str__(self) -> str:
        lines = [f"shoal check {self.target}" + (f": {self.description}" if self.description else "")]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  ok    {p}" for p in self.passed]
        for p in self.problems:
            tag = "ERROR" if p.severity == "error" else "warn "
            lines.append(f"  {tag} " + str(p).replace("\n", "\n      "))
        if self.errors:
            lines.append(f"{len(self.errors)} problem(s) to fix" +
                         (f", {len(self.warnings)} warning(s)" if self.warnings else ""))
        else:
            lines.append("no problems found" +
                         (f" ({len(self.warnings)} warning(s))" if self.warnings else ""))
        return "\n".join(lines)


class _Stop(Exception):
    """Ends the checks: a problem was found that later checks depend on."""


# ---- resolving what the user named ----

def resolve_target(target: Any, env_kwargs: dict[str, Any] | None = None
                   ) -> tuple[str | None, Callable[[], Any], str]:
    """(kind or None if unknown yet, a zero-argument env builder, a label) for ``target``.

    ``target`` is ``gym:ID``, ``pz:PATH``, ``package.module:callable``, a Gymnasium id (also
    ``module:ID``), a callable returning an env, or an env instance (checked as it is: the
    determinism check then needs a creator and is skipped).
    """
    kwargs = dict(env_kwargs or {})
    if not isinstance(target, str):
        if callable(target) and not _is_instance(target):
            label = getattr(target, "__qualname__", None) or repr(target)
            return None, lambda: target(**kwargs), label
        return None, lambda: target, type(target).__name__
    if target.startswith("gym:"):
        return GYMNASIUM, _gym_builder(target[4:], kwargs), target
    if target.startswith("pz:"):
        path = target[3:]
        return PETTINGZOO, lambda: resolve_pettingzoo(path)(**kwargs), target
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        if module is not None and attr and callable(getattr(module, attr.split(".")[0], None)):
            creator = resolve_callable(target)
            return None, lambda: creator(**kwargs), target
    return GYMNASIUM, _gym_builder(target, kwargs), target


def _gym_builder(env_id: str, kwargs: dict[str, Any]) -> Callable[[], Any]:
    def build() -> Any:
        import gymnasium

        # gymnasium's own passive checker would stop at the first problem with an assert.
        return gymnasium.make(env_id, disable_env_checker=True, **kwargs)

    return build


# ---- checking values against spaces ----

def _kind_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a numpy array of dtype {value.dtype} and shape {value.shape}"
    name = f"{type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_value(value: Any, space: spaces.Space, where: str, path: str = "") -> list[Problem]:
    """Problems with ``value`` as a member of ``space`` (structure, dtype, shape, bounds, NaN)."""
    at = f"{where}{path}"
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict):
            return [Problem(f"the observation{path} is {_kind_of(value)}, but its space is a Dict",
                            "return a dict with the space's keys", at)]
        problems = []
        missing = [k for k in space.spaces if k not in value]
        extra = [k for k in value if k not in space.spaces]
        if missing or extra:
            problems.append(Problem(
                f"the observation{path} has keys {sorted(map(str, value))} but its Dict space has "
                f"{sorted(map(str, space.spaces))}" + (f" (missing {missing})" if missing else "")
                + (f" (not in the space: {extra})" if extra else ""),
                "return exactly the keys the observation space declares, or declare the "
                "missing ones in observation_space", at))
        for key, sub in space.spaces.items():
            if key in value:
                problems += check_value(value[key], sub, where, f"{path}[{key!r}]")
        return problems
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(space.spaces):
            return [Problem(f"the observation{path} is {_kind_of(value)}"
                            + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
                            + f", but its space is a Tuple of {len(space.spaces)}",
                            f"return a tuple of {len(space.spaces)} values, one per sub-space", at)]
        problems = []
        for i, sub in enumerate(space.spaces):
            problems += check_value(value[i], sub, where, f"{path}[{i}]")
        return problems
    if isinstance(space, spaces.Discrete):
        if isinstance(value, (bool, np.bool_)) or not (
                isinstance(value, (int, np.integer)) or
                (isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu")):
            return [Problem(f"the observation{path} is {_kind_of(value)}, but {space} holds one "
                            f"integer", "return an int (or np.int64) for a Discrete observation", at)]
        lo, n = int(space.start), int(space.n)
        if not lo <= int(value) < lo + n:
            return [Problem(f"the observation{path} is {int(value)}, outside {space} "
                            f"(integers {lo}..{lo + n - 1})",
                            "keep it in range, or widen the space (n, start)", at)]
        return []
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        return _check_array(value, space, at, path)
    return []


def _check_array(value: Any, space: spaces.Space, at: str, path: str) -> list[Problem]:
    dtype = np.dtype(space.dtype)
    shape = tuple(space.shape)
    if not isinstance(value, np.ndarray):
        return [Problem(
            f"the observation{path} is {_kind_of(value)}, not a numpy array",
            f"return np.asarray(obs, dtype=np.{dtype.name}) with shape {shape}", at)]
    problems = []
    if value.dtype != dtype:
        lossy = not np.can_cast(value.dtype, dtype, casting="same_kind") or \
            value.dtype.itemsize > dtype.itemsize
        problems.append(Problem(
            f"the observation{path} has dtype {value.dtype} but its space {space} declares "
            f"{dtype}" + (" (shoal would cast it, losing precision or range)" if lossy else ""),
            f"return obs.astype(np.{dtype.name}), or declare dtype=np.{value.dtype.name} in the "
            f"space if that is what the env computes", at))
    if value.shape != shape:
        problems.append(Problem(
            f"the observation{path} has shape {value.shape} but its space declares {shape}",
            "return arrays of the declared shape (reshape, or fix the space's shape)", at))
        return problems
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0]
        problems.append(Problem(
            f"the observation{path} holds NaN or inf (first at index {tuple(int(i) for i in bad)})",
            "find where the env divides by zero or overflows; a policy cannot learn from NaN", at))
        return problems
    if isinstance(space, spaces.Box):
        low, high = np.broadcast_to(space.low, shape), np.broadcast_to(space.high, shape)
        outside = (value < low) | (value > high)
    elif isinstance(space, spaces.MultiDiscrete):
        start = np.broadcast_to(space.start, shape)
        outside = (value < start) | (value >= start + space.nvec)
        low, high = start, start + space.nvec - 1
    else:
        outside = (value != 0) & (value != 1)
        low, high = np.zeros(shape), np.ones(shape)
    if outside.any():
        idx = tuple(int(i) for i in np.argwhere(outside)[0])
        v = value[idx] if value.ndim else value
        problems.append(Problem(
            f"the observation{path} is outside its space: element {idx} is {v}, bounds "
            f"[{low[idx] if low.ndim else low}, {high[idx] if high.ndim else high}] "
            f"({int(outside.sum())} element(s) out of bounds)",
            "clip the observation (np.clip(obs, low, high)) or declare bounds that hold every "
            "value the env can produce (np.inf where unbounded)", at))
    return problems


def _is_number(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, (int, float, np.integer, np.floating)):
        return True
    return isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "iuf"


def _is_flag(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


# ---- the checks ----

def check_env(target: Any, *, env_kwargs: dict[str, Any] | None = None, seed: int = 0,
              steps: int = RUN_STEPS) -> Report:
    """Checks the env ``target`` names (see :func:`resolve_target`); returns a :class:`Report`."""
    label = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
    report = Report(str(label))
    try:
        kind, build, label = resolve_target(target, env_kwargs)
    except Exception as exc:
        report.add(f"cannot find {target!r}: {type(exc).__name__}: {exc}",
                   "name a Gymnasium id (CartPole-v1, gym:ID, gym:module:ID), a PettingZoo env "
                   "(pz:package.module) or a creator (package.module:callable)")
        return report
    report.target = label
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            env = _build(build, report)
            if kind is None:
                kind = PETTINGZOO if hasattr(env, "possible_agents") or hasattr(env, "agent_selection") \
                    else GYMNASIUM
            report.kind = kind
            if kind == GYMNASIUM:
                _check_gymnasium(env, build, report, seed, steps, reusable=not _is_instance(target))
            else:
                _check_pettingzoo(env, build, report, seed, steps, reusable=not _is_instance(target))
        except _Stop:
            pass
    return report


def _is_instance(target: Any) -> bool:
    """True for an env object (as opposed to a name, a class or a creator function)."""
    return not isinstance(target, (str, type)) and hasattr(target, "step")


def _build(build: Callable[[], Any], report: Report) -> Any:
    try:
        return build()
    except ModuleNotFoundError as exc:
        report.add(f"building the env failed: {exc}",
                   f"install the module {exc.name!r} (pip install ...), or fix the import path",
                   "creating the env")
    except Exception as exc:
        if type(exc).__module__.startswith("gymnasium.error"):
            report.add(f"gymnasium cannot make it: {type(exc).__name__}: {exc}",
                       "check the id (gymnasium.pprint_registry() lists the registered ones), or "
                       "name the module that registers it: gym:module:ID", "creating the env")
            raise _Stop from None
        report.add(f"building the env raised {type(exc).__name__}: {exc}\n{_short_tb(exc)}",
                   "fix the env's constructor (the traceback above shows where it failed); for an "
                   "id, check it is registered (gymnasium.pprint_registry())", "creating the env")
    raise _Stop


def _short_tb(exc: BaseException) -> str:
    lines = traceback.format_exception(exc)
    return "".join(lines[-6:]).rstrip()


def _call(report: Report, where: str, fn: Callable[[], Any], fix: str) -> Any:
    try:
        return fn()
    except Exception as exc:
        report.add(f"raised {type(exc).__name__}: {exc}\n{_short_tb(exc)}", fix, where)
        raise _Stop from None


def _check_space_attr(report: Report, owner: str, space: Any, role: str) -> None:
    if not isinstance(space, spaces.Space):
        report.add(f"{owner} is {space!r} ({type(space).__name__}), not a gymnasium.spaces.Space",
                   "set it to a gymnasium space, e.g. spaces.Box(-1.0, 1.0, (4,), np.float32)"
                   + (" (spaces from the old `gym` package are not accepted: import them from "
                      "gymnasium)" if type(space).__module__.startswith("gym.") else ""), owner)
        raise _Stop
    from .spaces import UnsupportedSpaceError, action_layout, observation_layout

    try:
        layout = observation_layout(space) if role == "observation" else action_layout(space)
    except UnsupportedSpaceError as exc:
        report.add(str(exc).split(": shoal stores")[0].split(". Fix:")[0],
                   str(exc).split("Fix: ")[-1] if "Fix: " in str(exc) else
                   "use Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple", owner)
        raise _Stop from None
    stored = "stored as it is" if layout.flat_space is space else f"buffer row {layout.flat_space}"
    report.notes.append(f"{role} space {space}: {stored}")
    if role == "observation" and isinstance(space, spaces.Box) and space.dtype == np.float64:
        report.add(f"{owner} is float64: shoal keeps it (doubling buffer memory), and policies "
                   f"compute in float32 anyway", "declare dtype=np.float32 and return float32 "
                   "observations", owner, "warning")


def _check_reset_signature(report: Report, reset: Any, what: str) -> None:
    try:
        params = inspect.signature(reset).parameters
    except (TypeError, ValueError):
        return
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    missing = [n for n in ("seed", "options") if n not in params and not has_kwargs]
    if missing:
        report.add(f"{what} takes no {' or '.join(missing)} argument (signature {what}"
                   f"{inspect.signature(reset)})",
                   "define `def reset(self, *, seed=None, options=None):` and call "
                   "`super().reset(seed=seed)` first (it seeds self.np_random)", what)
        raise _Stop


def _check_gymnasium(env: Any, build: Callable[[], Any], report: Report, seed: int, steps: int,
                     reusable: bool) -> None:
    report.description = f"Gymnasium env {type(getattr(env, 'unwrapped', env)).__name__}"
    try:
        from gymnasium.vector import VectorEnv
    except ImportError:  # pragma: no cover
        VectorEnv = ()
    if isinstance(env, VectorEnv):
        report.add("the creator returned a Gymnasium vector env", "return one env: shoal "
                   "vectorises it itself (shoal.from_gymnasium(creator, num_envs=...)); a built "
                   "vector env can be adapted as it is with shoal.from_gymnasium(vector_env)")
        raise _Stop
    missing = [a for a in ("reset", "step", "observation_space", "action_space") if not hasattr(env, a)]
    if missing:
        report.add(f"the env ({type(env).__name__}) has no {', '.join(missing)}",
                   "subclass gymnasium.Env: define reset() and step(), and set "
                   "self.observation_space and self.action_space in __init__")
        raise _Stop
    import gymnasium

    if not isinstance(env, gymnasium.Env):
        report.add(f"{type(env).__name__} does not subclass gymnasium.Env",
                   "subclass gymnasium.Env (it provides np_random seeding via super().reset(seed))",
                   severity="warning")
    obs_space, act_space = env.observation_space, env.action_space
    _check_space_attr(report, "observation_space", obs_space, "observation")
    _check_space_attr(report, "action_space", act_space, "action")
    report.passed.append("spaces are gymnasium spaces shoal can lay out")
    _check_action_mask(report, obs_space, act_space, "observation_space")

    _check_reset_signature(report, env.reset, "reset()")
    out = _call(report, f"reset(seed={seed})", lambda: env.reset(seed=seed),
                "fix the error in reset() (the traceback shows where)")
    seen: set[str] = set()
    errors = len(report.errors)
    _check_reset_result(report, out, obs_space, seen)
    if len(report.errors) == errors:
        report.passed.append("reset(seed=...) returns (observation, info)")

    act_space.seed(seed)
    action = act_space.sample()
    out = _call(report, "step()", lambda: env.step(action),
                "fix the error in step() (the traceback shows where)")
    errors = len(report.errors)
    _check_step_result(report, out, obs_space, seen)
    if len(report.errors) == errors:
        report.passed.append("step() returns (observation, reward, terminated, truncated, info)")

    # A random run with resets: observations stay in the space, rewards finite.
    env.reset(seed=seed)
    episodes = 0
    for t in range(steps):
        out = _call(report, f"step() at step {t + 1}", lambda: env.step(act_space.sample()),
                    "fix the error in step() (the traceback shows where)")
        if not (isinstance(out, tuple) and len(out) == 5):
            break
        obs, reward, terminated, truncated, info = out
        _report_obs(report, check_value(obs, obs_space, "step()"), seen)
        if _is_number(reward) and not math.isfinite(float(reward)) and "reward" not in seen:
            seen.add("reward")
            report.add(f"step {t + 1} returned reward {reward}",
                       "find the NaN/inf in the reward computation", "step()")
        if terminated or truncated:
            episodes += 1
            out = _call(report, "reset() after an episode", lambda: env.reset(),
                        "fix the error in reset() (the traceback shows where)")
            if isinstance(out, tuple) and len(out) == 2:
                _report_obs(report, check_value(out[0], obs_space, "reset()"), seen)
    if not any(p.what.startswith("the observation") for p in report.problems):
        report.passed.append(f"observations inside their space over {steps} random steps "
                             f"({episodes} episode(s) ended)")
    if episodes == 0:
        report.notes.append(f"no episode ended in {steps} random steps (fine for long episodes; "
                            f"a TimeLimit or max_episode_steps bounds them)")
    try:
        env.close()
    except Exception as exc:
        report.add(f"close() raised {type(exc).__name__}: {exc}", "make close() safe to call",
                   "close()", "warning")

    if reusable:
        _check_determinism(report, build, seed, lambda e: e.action_space, _gym_rollout)
        _check_vectorised(report, build, GYMNASIUM)


def _check_action_mask(report: Report, obs_space: Any, act_space: Any, where: str) -> None:
    """A Dict observation's "action_mask" (shoal.emulation.masks): one entry per action choice,
    of an integer or bool dtype."""
    from .masks import MASK_KEY, split_action_mask

    if not (isinstance(obs_space, spaces.Dict) and MASK_KEY in obs_space.spaces):
        return
    try:
        _, width = split_action_mask(obs_space, act_space, "the env")
    except ValueError as exc:
        report.add(str(exc).removeprefix("the env: "),
                   "give 'action_mask' one 0/1 entry per choice of the action space, e.g. "
                   "spaces.Box(0, 1, (n,), np.int8) for Discrete(n)", where)
        raise _Stop from None
    mask_space = obs_space.spaces[MASK_KEY]
    dtype = np.dtype(getattr(mask_space, "dtype", None) or np.int8)
    if dtype.kind not in "biu":
        report.add(f"the 'action_mask' has dtype {dtype}; masks are 0/1 flags",
                   "use an integer or bool dtype (np.int8, as PettingZoo's classic envs do)",
                   where, "warning")
    report.passed.append(f"the observation's 'action_mask' fits the action space ({width} "
                         f"entries): shoal keeps the policy off the actions it marks 0")


def _report_obs(report: Report, problems: list[Problem], seen: set[str]) -> None:
    """Adds each kind of problem once (a bad observation usually repeats every step)."""
    for p in problems:
        key = "obs:" + p.fix
        if key not in seen:
            seen.add(key)
            report.problems.append(p)


def _check_reset_result(report: Report, out: Any, obs_space: spaces.Space, seen: set[str]) -> None:
    if not isinstance(out, tuple) or len(out) != 2:
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else _kind_of(out)
        report.add(f"returned {got}, not (observation, info)",
                   "return `obs, {}` (Gymnasium 1.x: reset returns the first observation and an "
                   "info dict)", "reset()")
        raise _Stop
    obs, info = out
    if not isinstance(info, dict):
        report.add(f"returned {_kind_of(info)} as its info, not a dict",
                   "return `obs, {}` (the second value is an info dict)", "reset()")
    _report_obs(report, check_value(obs, obs_space, "reset()"), seen)


def _check_step_result(report: Report, out: Any, obs_space: spaces.Space, seen: set[str]) -> None:
    if isinstance(out, tuple) and len(out) == 4:
        report.add("returned 4 values (the old Gym API: obs, reward, done, info)",
                   "return 5 values: `obs, reward, terminated, truncated, info`, where terminated "
                   "means the episode ended by the env's rules and truncated that it was cut short "
                   "(e.g. a time limit), so a trainer can bootstrap truncated episodes",
                   "step()")
        raise _Stop
    if not isinstance(out, tuple) or len(out) != 5:
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else _kind_of(out)
        report.add(f"returned {got}",
                   "return `obs, reward, terminated, truncated, info` (Gymnasium 1.x)", "step()")
        raise _Stop
    obs, reward, terminated, truncated, info = out
    _report_obs(report, check_value(obs, obs_space, "step()"), seen)
    if not _is_number(reward):
        report.add(f"returned reward {reward!r} ({_kind_of(reward)})",
                   "return the reward as a Python float (float(reward))", "step()")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not _is_flag(flag):
            report.add(f"returned {name}={flag!r} ({_kind_of(flag)}), not a bool",
                       f"return bool({name})", "step()")
    if not isinstance(info, dict):
        report.add(f"returned {_kind_of(info)} as its info, not a dict",
                   "return a dict (may be empty) as the fifth value", "step()")


def _gym_rollout(env: Any, seed: int, actions: list[Any]) -> list[Any]:
    obs, _ = env.reset(seed=seed)
    out: list[Any] = [("reset", _snapshot(obs))]
    for t, a in enumerate(actions):
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((t + 1, _snapshot(obs), _snapshot(reward), _snapshot(terminated),
                    _snapshot(truncated)))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(("reset", _snapshot(obs)))
    return out


def _snapshot(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_snapshot(v) for v in value]
    return np.array(value, copy=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _check_determinism(report: Report, build: Callable[[], Any], seed: int,
                       action_space_of: Callable[[Any], Any], rollout: Callable[..., list]) -> None:
    where = "determinism"
    first = _call(report, where, build, "fix the env's constructor")
    second = _call(report, where, build, "fix the env's constructor")
    try:
        space = action_space_of(first)
        actions = _action_sequence(first, space, seed, DETERMINISM_STEPS)
        a = rollout(first, seed, actions)
        b = rollout(second, seed, actions)
    except _Stop:
        raise
    except Exception as exc:
        report.add(f"a seeded run raised {type(exc).__name__}: {exc}\n{_short_tb(exc)}",
                   "fix the error (the traceback shows where)", where)
        raise _Stop from None
    finally:
        for e in (first, second):
            try:
                e.close()
            except Exception:
                pass
    for x, y in zip(a, b):
        if not _same(x, y):
            step = x[0]
            part = _first_difference(x, y)
            when = "right after reset(seed)" if step == "reset" and x is a[0] else \
                "after an automatic reset" if step == "reset" else f"at step {step}"
            report.add(
                f"not deterministic under a seed: two fresh envs reset with seed={seed} and given "
                f"the same actions differ {when} ({part})",
                "draw every random number from self.np_random, which `super().reset(seed=seed)` "
                "seeds (not np.random.*, random.*, time or uninitialised state); sub-components "
                "with their own RNG must be seeded from it in reset()", where)
            return
    if len(a) != len(b):
        report.add(f"not deterministic under a seed: two runs with seed={seed} ended episodes at "
                   f"different steps", "draw every random number from self.np_random", where)
        return
    report.passed.append(f"deterministic under a seed ({DETERMINISM_STEPS} steps, two fresh envs)")


def _first_difference(x: Any, y: Any) -> str:
    names = ["", "observation", "reward", "terminated", "truncated"]
    if x[0] == "reset":
        return "the observation"
    for i in range(1, min(len(x), len(y))):
        if not _same(x[i], y[i]):
            return f"{names[i]}: {_brief(x[i])} vs {_brief(y[i])}"
    return "the step's result"


def _brief(v: Any) -> str:
    with np.printoptions(precision=4, threshold=8):
        s = str(v)
    return s if len(s) < 80 else s[:77] + "..."


def _action_sequence(env: Any, space: Any, seed: int, n: int) -> list[Any]:
    if isinstance(space, dict):  # PettingZoo: agent -> space
        out = []
        for k, sp in enumerate(space.values()):
            sp.seed(seed + k)
        for _ in range(n):
            out.append({agent: sp.sample() for agent, sp in space.items()})
        return out
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _check_vectorised(report: Report, build: Callable[[], Any], kind: str) -> None:
    from . import from_gymnasium, from_pettingzoo

    if report.errors:
        report.notes.append("the shoal vectorisation check runs once the errors below are fixed")
        return
    make = from_gymnasium if kind == GYMNASIUM else from_pettingzoo
    try:
        vec = make(lambda: build(), 2, seed=0, name="check")
        try:
            vec.reset()
            rng = np.random.default_rng(0)
            space = vec.single_action_space
            for _ in range(20):
                if isinstance(space, spaces.Box):
                    act = rng.uniform(-1, 1, (vec.num_agents, *space.shape)).astype(np.float32)
                elif isinstance(space, spaces.Discrete):
                    act = rng.integers(0, space.n, vec.num_agents).astype(np.int32)
                else:
                    act = np.stack([rng.integers(0, n, vec.num_agents)
                                    for n in np.ravel(space.nvec)], -1).astype(np.int32)
                vec.step(act)
        finally:
            vec.close()
    except Exception as exc:
        cause = exc.__cause__ or exc
        report.add(f"shoal could not vectorise it: {type(exc).__name__}: {exc}\n{_short_tb(cause)}",
                   "fix the problems above first; if none, the traceback shows where it fails",
                   "shoal vector env")
        return
    report.passed.append("shoal vectorises it (2 envs, 20 steps)")


# ---- PettingZoo ----

def _check_pettingzoo(env: Any, build: Callable[[], Any], report: Report, seed: int, steps: int,
                      reusable: bool) -> None:
    report.description = f"PettingZoo env {type(getattr(env, 'unwrapped', env)).__name__}"
    if hasattr(env, "agent_selection") and hasattr(env, "last"):
        report.notes.append("an AEC env: shoal converts it with pettingzoo's aec_to_parallel")
        from pettingzoo.utils.conversions import aec_to_parallel

        env = _call(report, "aec_to_parallel", lambda: aec_to_parallel(env),
                    "give a ParallelEnv (e.g. the module's parallel_env())")
    missing = [a for a in ("reset", "step", "possible_agents", "observation_space", "action_space")
               if not hasattr(env, a)]
    if missing:
        report.add(f"the env ({type(env).__name__}) has no {', '.join(missing)}",
                   "subclass pettingzoo.ParallelEnv: set possible_agents, define "
                   "observation_space(agent), action_space(agent), reset() and step()")
        raise _Stop
    agents = list(env.possible_agents)
    if not agents:
        report.add("possible_agents is empty", "list every agent that can ever appear in "
                   "self.possible_agents (shoal gives each a fixed buffer row)", "possible_agents")
        raise _Stop
    obs_spaces = {a: _call(report, f"observation_space({a!r})", lambda a=a: env.observation_space(a),
                           "define observation_space(self, agent) returning a gymnasium space")
                  for a in agents}
    act_spaces = {a: _call(report, f"action_space({a!r})", lambda a=a: env.action_space(a),
                           "define action_space(self, agent) returning a gymnasium space")
                  for a in agents}
    for role, found in (("observation", obs_spaces), ("action", act_spaces)):
        for a, sp in found.items():
            _check_space_attr(report, f"{role}_space({a!r})", sp, role) if a == agents[0] else None
            if a != agents[0] and sp != found[agents[0]]:
                report.add(f"agent {a!r} has {role} space {sp} but agent {agents[0]!r} has "
                           f"{found[agents[0]]}",
                           f"give every agent the same {role} space (pad smaller ones to a common "
                           f"Box), since shoal stores all agents in rows of one layout",
                           f"{role}_space")
                raise _Stop
    obs_space = obs_spaces[agents[0]]
    _check_action_mask(report, obs_space, act_spaces[agents[0]], f"observation_space({agents[0]!r})")
    report.notes.append(f"{len(agents)} possible agents -> {len(agents)} buffer rows per env")
    report.passed.append("possible_agents and per-agent spaces are usable")

    _check_reset_signature(report, env.reset, "reset()")
    out = _call(report, f"reset(seed={seed})", lambda: env.reset(seed=seed),
                "fix the error in reset() (the traceback shows where)")
    if not isinstance(out, tuple) or len(out) != 2 or not isinstance(out[0], dict):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else _kind_of(out)
        report.add(f"reset() returned {got}, not (observations, infos) dicts keyed by agent",
                   "return `{agent: obs for agent in self.agents}, {agent: {} for agent in "
                   "self.agents}`", "reset()")
        raise _Stop
    _check_pz_agents(report, env, agents, "reset()")
    seen: set[str] = set()
    for a, o in out[0].items():
        _report_obs(report, check_value(o, obs_space, f"reset() for {a!r}"), seen)
    missing_obs = [a for a in env.agents if a not in out[0]]
    if missing_obs:
        report.add(f"reset() gave no observation for agents {missing_obs} in env.agents",
                   "return an observation for every agent in self.agents", "reset()")
    report.passed.append("reset(seed=...) returns (observations, infos)")

    episodes = 0
    for a_idx, sp in enumerate(act_spaces.values()):
        sp.seed(seed + a_idx)
    for t in range(steps):
        live = list(env.agents)
        actions = {a: act_spaces[a].sample() for a in live}
        out = _call(report, f"step() at step {t + 1}", lambda: env.step(actions),
                    "fix the error in step() (the traceback shows where)")
        if isinstance(out, tuple) and len(out) == 4:
            report.add("step() returned 4 values (the old API with dones)",
                       "return 5 dicts: observations, rewards, terminations, truncations, infos",
                       "step()")
            raise _Stop
        if not isinstance(out, tuple) or len(out) != 5 or not all(isinstance(d, dict) for d in out):
            report.add(f"step() returned {_kind_of(out)}, not 5 dicts keyed by agent",
                       "return observations, rewards, terminations, truncations, infos (dicts)",
                       "step()")
            raise _Stop
        obs, rewards, terms, truncs, _ = out
        _check_pz_agents(report, env, agents, "step()")
        for a, o in obs.items():
            _report_obs(report, check_value(o, obs_space, f"step() for {a!r}"), seen)
        for a, r in rewards.items():
            if (not _is_number(r) or not math.isfinite(float(r))) and "reward" not in seen:
                seen.add("reward")
                report.add(f"step() returned reward {r!r} for {a!r}",
                           "return a finite float reward per agent", "step()")
        for name, flags in (("terminations", terms), ("truncations", truncs)):
            for a, f in flags.items():
                if not _is_flag(f) and name not in seen:
                    seen.add(name)
                    report.add(f"step() returned {name}[{a!r}]={f!r}, not a bool",
                               f"return bool values in {name}", "step()")
        vanished = [a for a in live if a not in env.agents and not (terms.get(a) or truncs.get(a))]
        if vanished and "vanished" not in seen:
            seen.add("vanished")
            report.add(f"agents {vanished} left env.agents at step {t + 1} without terminated or "
                       f"truncated set", "set terminations[agent] (or truncations[agent]) to True "
                       "on the step an agent leaves; shoal counts it as terminated meanwhile",
                       "step()", "warning")
        if not env.agents:
            episodes += 1
            env.reset()
    report.passed.append(f"random run of {steps} steps ({episodes} episode(s) ended)")
    if reusable:
        _check_determinism(report, build, seed, _pz_action_spaces, _pz_rollout)
        _check_vectorised(report, build, PETTINGZOO)


def _check_pz_agents(report: Report, env: Any, agents: list[Any], where: str) -> None:
    unknown = [a for a in env.agents if a not in agents]
    if unknown:
        report.add(f"env.agents holds {unknown}, which are not in possible_agents",
                   "list every agent that can ever appear in self.possible_agents", where)
        raise _Stop


def _pz_action_spaces(env: Any) -> dict[Any, Any]:
    return {a: env.action_space(a) for a in env.possible_agents}


def _pz_rollout(env: Any, seed: int, actions: list[dict]) -> list[Any]:
    obs, _ = env.reset(seed=seed)
    out: list[Any] = [("reset", _snapshot(obs))]
    for t, acts in enumerate(actions):
        live = {a: v for a, v in acts.items() if a in env.agents}
        obs, rewards, terms, truncs, _ = env.step(live)
        out.append((t + 1, _snapshot(obs), _snapshot(rewards), _snapshot(terms), _snapshot(truncs)))
        if not env.agents:
            obs, _ = env.reset()
            out.append(("reset", _snapshot(obs)))
    return out
