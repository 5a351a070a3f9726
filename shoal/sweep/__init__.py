"""Cost-aware hyperparameter sweeps on Optuna: ``shoal sweep ENV`` (:mod:`.cli`).

- :mod:`.space`: the ``[sweep]`` table (distributions per config key) and the default space;
- :mod:`.study`: the study (score and cost objectives), trials as ``shoal train`` subprocesses,
  their curves, pruning, heartbeats and retries;
- :mod:`.report`: best trials, Pareto front, importances, best config.

Needs the ``sweep`` extra (``pip install 'shoal[sweep]'``); nothing here imports Optuna until a
sweep runs.
"""

from .space import DISTRIBUTIONS, Dimension, SearchSpace, SpaceError, default_space, parse_space

__all__ = ["DISTRIBUTIONS", "Dimension", "SearchSpace", "SpaceError", "default_space",
           "parse_space"]
