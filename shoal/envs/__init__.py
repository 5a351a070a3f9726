"""The registry of C environments: one folder per env, found by listing this package.

An env folder holds ``<name>.h`` (the env), ``binding.c`` (about 30 lines) and ``__init__.py``
with ``SPEC = EnvSpec(...)``. Adding an env is copying ``template/`` and renaming; nothing else
needs editing (``setup.py`` compiles every ``shoal/envs/*/binding.c``).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import lru_cache

from .spec import EnvSpec, Param

__all__ = ["EnvSpec", "Param", "get_spec", "list_envs"]


@lru_cache(maxsize=None)
def _specs() -> dict[str, EnvSpec]:
    specs: dict[str, EnvSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, EnvSpec):
            specs[spec.name] = spec
    return dict(sorted(specs.items()))


def list_envs() -> list[str]:
    """Names of every registered C env, sorted."""
    return list(_specs())


def get_spec(name: str) -> EnvSpec:
    """The spec of env ``name``; an unknown name raises ValueError naming close matches."""
    specs = _specs()
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(name, list(specs), n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown env '{name}'.{hint} Available: {', '.join(specs)} "
        f"(`shoal envs` lists them with their spaces)"
    )
