"""The search space of a sweep: a ``[sweep]`` table next to the config it varies.

Each entry names a config key (``section.key``, or a key inside a ``[sweep.SECTION]`` table) and
how to draw it::

    [sweep]
    "train.learning_rate" = { distribution = "log_uniform", low = 1e-4, high = 1e-2 }

    [sweep.train]
    update_epochs = { distribution = "int", low = 1, high = 4 }
    minibatch_size = { distribution = "pow2", low = 1024, high = 16384 }
    ent_coef = { distribution = "uniform", low = 0.0, high = 0.05 }
    optimizer = { distribution = "categorical", choices = ["adam", "muon"] }

Distributions: ``uniform`` and ``log_uniform`` (floats; log needs ``low > 0``), ``int`` (integers,
``log = true`` for a log scale), ``pow2`` (powers of two between ``low`` and ``high``, both powers
of two) and ``categorical`` (``choices``, a list of numbers, strings or bools). Every key must be a
key of the trainer's config (or of the env's parameters) and every value the sweep can draw must
pass that key's own checks, so a bad space fails before the first trial. ``defaults = true``
starts from the default space (then ``"train.gamma" = false`` removes a key from it).

Without a ``[sweep]`` table the sweep uses :func:`default_space`: the trainer's keys that matter
most on every env, with bounds that hold for any batch shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..trainer.config import (Config, ConfigError, apply_overrides, check_value, section_fields,
                              SECTIONS)

__all__ = ["Dimension", "SearchSpace", "SpaceError", "DISTRIBUTIONS", "default_space",
           "parse_space"]

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "pow2", "categorical")


class SpaceError(ConfigError):
    """A bad ``[sweep]`` entry; the message names the entry, the problem and the fix."""


@dataclass(frozen=True)
class Dimension:
    """One searched config key: ``key`` is ``section.key``, ``distribution`` one of
    :data:`DISTRIBUTIONS`, with ``low``/``high`` (numeric ones) or ``choices`` (categorical)."""

    key: str
    distribution: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_optuna(self) -> Any:
        """The matching ``optuna.distributions`` object."""
        from optuna import distributions as d

        if self.distribution == "uniform":
            return d.FloatDistribution(float(self.low), float(self.high))
        if self.distribution == "log_uniform":
            return d.FloatDistribution(float(self.low), float(self.high), log=True)
        if self.distribution == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.distribution == "pow2":
            # searched as the exponent, so 2**k is uniform in k (a log scale)
            return d.IntDistribution(int(math.log2(self.low)), int(math.log2(self.high)))
        return d.CategoricalDistribution(list(self.choices))

    @property
    def param_name(self) -> str:
        """The name of the parameter in the study (``pow2`` keys hold the exponent)."""
        return f"log2:{self.key}" if self.distribution == "pow2" else self.key

    def value(self, drawn: Any) -> Any:
        """The config value for a value drawn from :meth:`to_optuna`."""
        return 2 ** int(drawn) if self.distribution == "pow2" else drawn

    def extremes(self) -> list[Any]:
        """Config values at the edges of the space (every choice for categorical ones)."""
        if self.distribution == "categorical":
            return list(self.choices)
        if self.distribution in ("int", "pow2"):
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys, in a fixed order."""

    dimensions: tuple[Dimension, ...]

    def distributions(self) -> dict[str, Any]:
        """``{param_name: optuna distribution}``."""
        return {d.param_name: d.to_optuna() for d in self.dimensions}

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config overrides ``{section.key: value}`` for a trial's drawn ``params``."""
        return {d.key: d.value(params[d.param_name]) for d in self.dimensions
                if d.param_name in params}

    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]


def _is_pow2(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0 and x & (x - 1) == 0


def _number(entry: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"[sweep] {entry}: '{name}' must be a finite number, got {value!r}")
    return value


def _dimension(key: str, spec: Any) -> Dimension:
    entry = f"'{key}'"
    example = '{ distribution = "log_uniform", low = 1e-4, high = 1e-2 }'
    if not isinstance(spec, Mapping):
        raise SpaceError(f"[sweep] {entry} must be a table like {example}, got {spec!r}")
    dist = spec.get("distribution")
    if dist is None:
        raise SpaceError(f"[sweep] {entry} has no 'distribution': one of "
                         f"{', '.join(DISTRIBUTIONS)} (e.g. {example})")
    if dist not in DISTRIBUTIONS:
        import difflib

        close = difflib.get_close_matches(str(dist), DISTRIBUTIONS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpaceError(f"[sweep] {entry}: unknown distribution {dist!r}.{hint} Use one of "
                         f"{', '.join(DISTRIBUTIONS)}")
    allowed = {"distribution", "choices"} if dist == "categorical" else \
        {"distribution", "low", "high"} | ({"log"} if dist == "int" else set())
    extra = sorted(set(spec) - allowed)
    if extra:
        raise SpaceError(f"[sweep] {entry}: {', '.join(map(repr, extra))} "
                         f"{'is' if len(extra) == 1 else 'are'} not used by a {dist} "
                         f"distribution (it takes {', '.join(sorted(allowed - {'distribution'}))})")
    if dist == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"[sweep] {entry}: a categorical distribution needs a non-empty "
                             f"list 'choices = [...]', got {choices!r}")
        for c in choices:
            if not isinstance(c, (bool, int, float, str)):
                raise SpaceError(f"[sweep] {entry}: choice {c!r} must be a number, string or "
                                 f"bool")
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"[sweep] {entry}: 'choices' lists a value twice: {choices!r}")
        return Dimension(key, dist, choices=tuple(choices))
    for name in ("low", "high"):
        if name not in spec:
            raise SpaceError(f"[sweep] {entry}: a {dist} distribution needs '{name}' (and "
                             f"{'high' if name == 'low' else 'low'})")
    low, high = _number(entry, "low", spec["low"]), _number(entry, "high", spec["high"])
    if low > high:
        raise SpaceError(f"[sweep] {entry}: low={low!r} is above high={high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"[sweep] {entry}: 'log' must be true or false, got {log!r}")
    if dist in ("int", "pow2"):
        for name, v in (("low", low), ("high", high)):
            if not float(v).is_integer():
                raise SpaceError(f"[sweep] {entry}: {name}={v!r} must be an integer for a {dist} "
                                 f"distribution")
        low, high = int(low), int(high)
    if dist == "pow2":
        for name, v in (("low", low), ("high", high)):
            if not _is_pow2(v):
                near = 2 ** max(0, round(math.log2(v))) if v > 0 else 1
                raise SpaceError(f"[sweep] {entry}: {name}={v} is not a power of two (e.g. "
                                 f"{near})")
    if (dist == "log_uniform" or log) and low <= 0:
        raise SpaceError(f"[sweep] {entry}: a log scale needs low > 0, got low={low!r}")
    return Dimension(key, dist, low, high, log=bool(log))


def _check_against_config(dim: Dimension, base: Config) -> None:
    """Every value the dimension can produce passes the config key's own checks."""
    section, _, name = dim.key.partition(".")
    if section == "env" and name not in section_fields("env"):
        probe = base
        for value in dim.extremes():
            try:
                apply_overrides(_copy(probe), {dim.key: value}, "[sweep]")
            except ConfigError as exc:
                raise SpaceError(f"[sweep] '{dim.key}': {exc}") from None
        return
    field = section_fields(section)[name]
    kind = type(field.default)
    for value in dim.extremes():
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and dim.distribution in ("uniform", "log_uniform"):
            raise SpaceError(f"[sweep] '{dim.key}' is an integer key: use an int or pow2 "
                             f"distribution")
        try:
            check_value(field, value, dim.key)
        except ConfigError as exc:
            raise SpaceError(f"[sweep] '{dim.key}': the space reaches {value!r}, which the key "
                             f"refuses: {exc}") from None


def _copy(cfg: Config) -> Config:
    import copy

    return copy.deepcopy(cfg)


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": spec}`` and ``{"train": {"lr": spec}}`` -> ``{"train.lr": spec}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if "." in key:
            out[key] = value
        elif key in SECTIONS and isinstance(value, Mapping) and "distribution" not in value:
            for sub, spec in value.items():
                out[f"{key}.{sub}"] = spec
        else:
            raise SpaceError(f"[sweep] '{key}' is not a config key: write section.key (e.g. "
                             f"\"train.{key}\") or put it in a [sweep.train] table")
    return out


def _check_key(key: str, base: Config) -> str:
    from ..trainer.config import env_params_of, is_python_env, normalise_key

    norm = normalise_key(key)
    section, _, name = norm.partition(".")
    if section not in SECTIONS or not name:
        raise SpaceError(f"[sweep] '{key}': the section must be one of {', '.join(SECTIONS)}")
    if name in section_fields(section):
        if norm in ("env.name", "log.run_dir", "train.device", "train.seed"):
            raise SpaceError(f"[sweep] '{key}' cannot be searched (it is set per trial)")
        return norm
    if section == "env" and (is_python_env(base.env.name) or
                             name in env_params_of(base.env.name)):
        return norm
    import difflib

    known = [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]
    if section == "env":
        known += [f"env.{p}" for p in env_params_of(base.env.name)]
    close = difflib.get_close_matches(norm, known, n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise SpaceError(f"[sweep] '{key}' is not a config key.{hint} (`shoal train ENV --help` "
                     f"lists them)")


def default_space(base: Config) -> dict[str, Dimension]:
    """The default search: learning rate, entropy bonus, discount, GAE lambda, clip, value
    weight, gradient clip, update epochs, minibatch size (powers of two from 8 segments to the
    shipped value x 4, when the horizon is a power of two) and the training budget (1/8 to 1x the
    config's ``total_steps``, so cheap and expensive settings are both explored)."""
    t = base.train
    dims = [
        Dimension("train.learning_rate", "log_uniform", 1e-4, 1e-2),
        Dimension("train.ent_coef", "log_uniform", 1e-4, 5e-2),
        Dimension("train.gamma", "uniform", 0.95, 0.999),
        Dimension("train.gae_lambda", "uniform", 0.8, 0.99),
        Dimension("train.clip_coef", "uniform", 0.1, 0.3),
        Dimension("train.vf_coef", "uniform", 0.25, 2.0),
        Dimension("train.max_grad_norm", "uniform", 0.3, 3.0),
        Dimension("train.update_epochs", "int", 1, 4),
    ]
    if _is_pow2(t.horizon):
        low = t.horizon * 8
        high = max(low, 1 << (max(1, t.minibatch_size) - 1).bit_length()) * 4
        dims.append(Dimension("train.minibatch_size", "pow2", low, high))
    budget = int(t.total_steps)
    if budget >= 16:
        dims.append(Dimension("train.total_steps", "int", max(1, budget // 8), budget, log=True))
    return {d.key: d for d in dims}


def parse_space(table: Mapping[str, Any] | None, base: Config) -> SearchSpace:
    """The search space of a ``[sweep]`` table (None or {}: the default space), checked
    against ``base`` (the config trials start from). Raises :class:`SpaceError`."""
    if table is None or not table:
        dims = default_space(base)
    else:
        if not isinstance(table, Mapping):
            raise SpaceError(f"[sweep] must be a table of config keys, got {table!r}")
        table = dict(table)
        use_defaults = table.pop("defaults", False)
        if not isinstance(use_defaults, bool):
            raise SpaceError(f"[sweep] 'defaults' must be true or false, got {use_defaults!r}")
        entries = _flatten(table)
        dims = default_space(base) if use_defaults else {}
        for key, spec in entries.items():
            norm = _check_key(key, base)
            if spec is False:
                dims.pop(norm, None)
                continue
            dims[norm] = _dimension(norm, spec)
    if not dims:
        raise SpaceError("[sweep] searches no key: give at least one, e.g. "
                         "\"train.learning_rate\" = { distribution = \"log_uniform\", "
                         "low = 1e-4, high = 1e-2 }")
    for dim in dims.values():
        _check_against_config(dim, base)
    return SearchSpace(tuple(dims.values()))
