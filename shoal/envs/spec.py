"""What the Python side knows about a C env: its parameters, spaces and agent count.

Each env folder's ``__init__.py`` defines ``SPEC = EnvSpec(...)``; the registry
(:mod:`shoal.envs`) finds the folders, and :func:`shoal.make` validates parameters here
before any C code runs, so bad input is a clear Python error rather than a crash.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Param:
    """One env parameter: its default (which fixes its type), allowed range and meaning."""

    default: int | float | bool
    doc: str
    low: float | None = None
    high: float | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, env: str, name: str, value: Any) -> int | float | bool:
        kind = self.kind
        if kind is bool:
            if isinstance(value, (bool, np.bool_)) or value in (0, 1):
                return bool(value)
            raise TypeError(f"{env}: parameter '{name}' must be True or False, got {value!r}")
        if kind is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                if isinstance(value, (float, np.floating)) and float(value).is_integer():
                    value = int(value)
                else:
                    raise TypeError(f"{env}: parameter '{name}' must be an integer, got {value!r}")
            value = int(value)
        else:
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"{env}: parameter '{name}' must be a number, got {value!r}")
            value = float(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(
                f"{env}: parameter '{name}'={value!r} is out of range; "
                f"it must be in [{self.low}, {self.high}] ({self.doc})"
            )
        return value


@dataclass(frozen=True)
class EnvSpec:
    """A registered C env.

    ``observation_space``, ``action_space`` and ``agents_per_env`` take the resolved parameter
    dict, so spaces may depend on parameters (a maze's view window, breakout's action mode).
    ``action_dtype`` is the dtype of the C action buffer (``np.int32`` or ``np.float32``).
    ``action_mask``: the env writes an action mask with every observation (its binding defines
    ``ACTION_MASK``): one bool per logit of its discrete action space (``sum(nvec)`` per agent),
    True for a valid action; the vector env exposes it as ``env.action_masks``.
    """

    name: str
    doc: str
    module: str
    observation_space: Callable[[Mapping[str, Any]], Any]
    action_space: Callable[[Mapping[str, Any]], Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    agents_per_env: Callable[[Mapping[str, Any]], int] = lambda p: 1
    action_dtype: Any = np.int32
    action_mask: bool = False

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; unknown names and bad values raise with the fix."""
        resolved = {k: p.default for k, p in self.params.items()}
        for key, value in (overrides or {}).items():
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                close = difflib.get_close_matches(key, list(self.params), n=3)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"{self.name}: unknown parameter '{key}'.{hint} Its parameters are: {known}"
                )
            resolved[key] = self.params[key].check(self.name, key, value)
        return resolved

    def load(self) -> ModuleType:
        """Imports the compiled C module, with a hint when the build is missing."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(
                f"the C module of env '{self.name}' ({self.module}) is not built: "
                f"run `pip install -e .` (or `python setup.py build_ext --inplace`) in the shoal "
                f"checkout. ({exc})"
            ) from exc
