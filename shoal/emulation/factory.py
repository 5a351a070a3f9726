"""Building Python envs from what a user names, in the parent or in a worker process.

:class:`PythonEnvFactory` is the shard factory of the ``processes`` backend for Python envs
(the protocol is in :mod:`shoal.vector.processes`): ``describe()`` builds one probe env in the
parent to learn its spaces, and ``__call__(num_envs, env_offset, buffers)`` builds a worker's
envs as a serial :class:`~shoal.emulation.base.PythonVecEnv` over its rows of shared memory.

The factory pickles its creator with cloudpickle, so lambdas, closures and classes defined in a
script work across processes. A ``gym:ID`` env is rebuilt in workers from the ``EnvSpec`` of the
parent's probe env, so ids registered by the parent script (even under
``if __name__ == "__main__":``) work too.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any, Callable

from gymnasium import spaces

from ..vector.base import Buffers, VecEnv
from .base import close_all

__all__ = ["PythonEnvFactory", "check_gym_id", "resolve_pettingzoo", "resolve_callable"]

GYMNASIUM = "gymnasium"
PETTINGZOO = "pettingzoo"


def resolve_callable(path: str) -> Callable[..., Any]:
    """``"pkg.module:attr"`` or ``"pkg.module.attr"`` -> the object it names (ImportError if none)."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} does not name a callable: write it as 'package.module:callable'")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ImportError(f"{path!r} names {type(obj).__name__} {obj!r}, which is not callable")
    return obj


def check_gym_id(env_id: str) -> None:
    """Checks that ``gymnasium.make(env_id)`` will find the id, without building the env.

    ``module:ID`` imports ``module`` first (as ``gymnasium.make`` does). Raises ValueError (or
    ModuleNotFoundError) naming the problem and the fix.
    """
    import gymnasium
    from gymnasium.envs.registration import find_highest_version, parse_env_id, registry

    module, sep, env_name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"gym:{env_id}: cannot import {module!r}, the module that should register "
                f"{env_name!r} ({exc}). Fix: check the module name, install its package, or make "
                f"it importable (on sys.path)", name=exc.name) from exc
    if env_name in registry:
        return
    try:
        ns, name, version = parse_env_id(env_name)
        if version is None and find_highest_version(ns, name) is not None:
            return  # gymnasium.make picks the latest version (with a warning)
        gymnasium.spec(env_name)
    except gymnasium.error.Error as exc:
        where = f" after importing {module!r}" if sep else ""
        raise ValueError(
            f"gym:{env_id}: Gymnasium has no env {env_name!r}{where} ({exc}). Fix: check the id "
            f"(gymnasium.pprint_registry() lists the registered ones), or name the module that "
            f"registers it: gym:module:{env_name}") from None


_PZ_REGISTRY_ID = re.compile(r"^(?:[\w.-]+/)?[\w.]+-v\d+$")


def resolve_pettingzoo(path: str) -> Callable[..., Any]:
    """The env creator named by a ``pz:`` path.

    ``package.module`` (a PettingZoo env module such as ``pettingzoo.butterfly.pistonball_v6``)
    gives its ``parallel_env`` (or its AEC ``env``, converted); ``package.module.attr`` or
    ``package.module:attr`` gives that callable; ``family/name-vN`` (an id of PettingZoo's
    registry, e.g. ``butterfly/pistonball-v6``) gives ``pettingzoo.make("parallel", id, ...)``.
    """
    if _PZ_REGISTRY_ID.match(path) and ":" not in path:
        return _pz_registry_creator(path)
    if ":" in path:
        return _pz_attr(path)
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name != path:
            raise _missing_module(path, exc) from exc
        return _pz_attr(path)  # "package.module.callable": the last part is an attribute
    for attr in ("parallel_env", "env"):
        creator = getattr(module, attr, None)
        if callable(creator):
            return creator
    raise ImportError(f"module {path!r} has neither parallel_env() nor env(): name the creator "
                      f"as pz:{path}.<callable> or pz:{path}:<callable>")


def _pz_registry_creator(env_id: str) -> Callable[..., Any]:
    try:
        import pettingzoo
    except ImportError as exc:
        raise ModuleNotFoundError(f"pz:{env_id} needs pettingzoo: pip install pettingzoo",
                                  name="pettingzoo") from exc
    make = getattr(pettingzoo, "make", None)
    if make is None:
        raise ImportError(f"pz:{env_id} is a registry id, but this pettingzoo "
                          f"({getattr(pettingzoo, '__version__', '?')}) has no registry. Fix: "
                          f"pip install 'pettingzoo>=1.27', or name the env's module, e.g. "
                          f"pz:pettingzoo.butterfly.pistonball_v6")
    try:
        pettingzoo.spec("parallel", env_id)
    except Exception as exc:
        raise ValueError(f"pz:{env_id}: PettingZoo's registry has no parallel env {env_id!r} "
                         f"({type(exc).__name__}: {exc}). Fix: check the id "
                         f"(pettingzoo.pprint_registry() lists them), or name the env's module "
                         f"(pz:package.module)") from None
    return functools.partial(make, "parallel", env_id)


def _pz_attr(path: str) -> Callable[..., Any]:
    try:
        return resolve_callable(path)
    except ModuleNotFoundError as exc:
        raise _missing_module(path, exc) from exc


def _missing_module(path: str, exc: ModuleNotFoundError) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"cannot import {exc.name!r} for pz:{path} ({exc}). Fix: check the path, or install the "
        f"package that provides it (PettingZoo's env families need extras, e.g. "
        f"pip install 'pettingzoo[butterfly]' for pistonball)", name=exc.name)


class PythonEnvFactory:
    """Makes Python envs and vectors of them, here or in a worker process.

    Args:
        kind: ``"gymnasium"`` or ``"pettingzoo"``.
        creator: for Gymnasium an env id (any id ``gymnasium.make`` accepts, including
            ``module:ID``), an ``EnvSpec`` or a callable returning an env; for PettingZoo an
            import path (see :func:`resolve_pettingzoo`) or a callable returning a parallel env.
        env_kwargs: keyword arguments for the creator (for ids: ``gymnasium.make``'s).
        name: the vector env's name.
    """

    def __init__(self, kind: str, creator: Any, env_kwargs: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        if kind not in (GYMNASIUM, PETTINGZOO):
            raise ValueError(f"kind must be {GYMNASIUM!r} or {PETTINGZOO!r}, got {kind!r}")
        if not (isinstance(creator, str) or callable(creator) or _is_env_spec(creator)):
            raise TypeError(f"the env creator must be an env id, an import path or a callable "
                            f"returning an env, got {creator!r}")
        self.kind = kind
        self.creator = creator
        self.env_kwargs = dict(env_kwargs or {})
        self.name = name or _default_name(kind, creator)
        self._gym_spec = None
        self._described: tuple | None = None

    # ---- envs ----

    def make_env(self) -> Any:
        """One env, built from the creator.

        An unknown id, a keyword argument the env does not take, or one its own asserts reject
        raises ValueError / TypeError naming the env and the fix (the original exception is the
        cause)."""
        try:
            return self._make_env()
        except TypeError as exc:
            if "keyword argument" not in str(exc) or not self.env_kwargs:
                raise
            raise TypeError(
                f"{self.name}: making the env with keyword arguments {self.env_kwargs} raised "
                f"TypeError: {exc}. Fix: pass only arguments the env takes (on the command line "
                f"they are --env.KEY VALUE flags; in shoal.train, env_KEY=VALUE)") from exc
        except AssertionError as exc:
            # PettingZoo envs check their arguments with assert (pistonball: n_pistons > 1)
            if not self.env_kwargs:
                raise
            raise ValueError(
                f"{self.name}: the env rejected the keyword arguments {self.env_kwargs}: "
                f"{exc or 'an assertion failed'}. Fix: change those values (on the command line "
                f"they are --env.KEY VALUE flags; in shoal.train, env_KEY=VALUE)") from exc
        except Exception as exc:
            if not type(exc).__module__.startswith("gymnasium.error"):
                raise
            raise ValueError(
                f"{self.name}: gymnasium cannot make it ({type(exc).__name__}: {exc}). Fix: check "
                f"the id (gymnasium.pprint_registry() lists the registered ones), or name the "
                f"module that registers it: gym:module:ID") from exc

    def _make_env(self) -> Any:
        if self.kind == GYMNASIUM:
            import gymnasium

            if self._gym_spec is not None:
                return gymnasium.make(self._gym_spec)
            if isinstance(self.creator, str) or _is_env_spec(self.creator):
                env = gymnasium.make(self.creator, **self.env_kwargs)
                self._gym_spec = getattr(env, "spec", None)
                return env
            return self.creator(**self.env_kwargs)
        creator = resolve_pettingzoo(self.creator) if isinstance(self.creator, str) else self.creator
        return creator(**self.env_kwargs)

    def make_envs(self, num_envs: int) -> list[Any]:
        envs: list[Any] = []
        try:
            for _ in range(num_envs):
                envs.append(self.make_env())
        except BaseException:
            close_all(envs)
            raise
        return envs

    # ---- the shard-factory protocol ----

    def describe(self) -> tuple[str, spaces.Space, spaces.Space, int, Any]:
        """(name, flat observation space, flat action space, agents per env, action dtype)."""
        if self._described is None:
            from .spaces import action_layout, observation_layout

            env = self.make_env()
            try:
                if self.kind == GYMNASIUM:
                    from .gymnasium import check_gymnasium_env

                    check_gymnasium_env(env, self.name)
                    obs_space, act_space, agents = env.observation_space, env.action_space, 1
                else:
                    from .pettingzoo import agent_spaces, as_parallel_env

                    env = as_parallel_env(env, self.name)
                    names, obs_space, act_space = agent_spaces(env, self.name)
                    agents = len(names)
            finally:
                try:
                    env.close()
                except Exception:
                    pass
            from .masks import split_action_mask

            self.observation_space, self.action_space = obs_space, act_space
            row_space, self._mask_width = split_action_mask(obs_space, act_space, self.name)
            #: what buffer rows hold: the observation space less a Dict's "action_mask"
            self.row_observation_space = row_space
            obs_layout, act_layout = observation_layout(row_space), action_layout(act_space)
            self._described = (self.name, obs_layout.flat_space, act_layout.flat_space, agents,
                               act_layout.dtype)
        return self._described

    def action_mask_width(self) -> int:
        """Action-mask entries per agent (0: the env's observations carry no action mask)."""
        self.describe()
        return self._mask_width

    def build(self, num_envs: int, *, seed: int | None = None, num_buffers: int = 1,
              num_threads: int = 0, buffers: Buffers | None = None, env_offset: int = 0) -> VecEnv:
        """A vector of ``num_envs`` new envs (serial when ``num_threads`` is 0)."""
        self.describe()
        envs = self.make_envs(num_envs)
        try:
            if self.kind == GYMNASIUM:
                from .gymnasium import GymnasiumVecEnv

                return GymnasiumVecEnv(envs, name=self.name, seed=seed, num_buffers=num_buffers,
                                       num_threads=num_threads, buffers=buffers,
                                       env_offset=env_offset,
                                       observation_space=self.observation_space,
                                       action_space=self.action_space)
            from .pettingzoo import PettingZooVecEnv

            return PettingZooVecEnv(envs, name=self.name, seed=seed, num_buffers=num_buffers,
                                    num_threads=num_threads, buffers=buffers,
                                    env_offset=env_offset)
        except BaseException:
            close_all(envs)
            raise

    def __call__(self, num_envs: int, env_offset: int, buffers: Buffers) -> VecEnv:
        """A worker's shard: a serial vector over ``buffers`` whose env i is env_offset + i."""
        return self.build(num_envs, seed=0, buffers=buffers, env_offset=env_offset)

    # ---- pickling (to worker processes) ----

    def __getstate__(self) -> dict[str, Any]:
        import cloudpickle

        state = dict(self.__dict__)
        # By value: lambdas, closures and classes defined in the user's script reach workers.
        state["creator"] = cloudpickle.dumps(self.creator)
        state["_gym_spec"] = cloudpickle.dumps(self._gym_spec)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import pickle

        state = dict(state)
        state["creator"] = pickle.loads(state["creator"])
        state["_gym_spec"] = pickle.loads(state["_gym_spec"])
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"PythonEnvFactory({self.kind!r}, {self.creator!r}, {self.env_kwargs!r})"


def _is_env_spec(obj: Any) -> bool:
    try:
        from gymnasium.envs.registration import EnvSpec
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, EnvSpec)


def _default_name(kind: str, creator: Any) -> str:
    prefix = "gym" if kind == GYMNASIUM else "pz"
    if isinstance(creator, str):
        return f"{prefix}:{creator}"
    if _is_env_spec(creator):
        return f"{prefix}:{creator.id}"
    label = getattr(creator, "__qualname__", None) or type(creator).__name__
    return f"{prefix}:{label}"
