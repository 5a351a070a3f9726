"""Queue a sweep's base config as its study's next trial, so the search starts from a known point.

    python benchmarks/sweep_enqueue_base.py breakout \\
        --config benchmarks/sweep_spaces/breakout_pufferlib_shape.toml \\
        --study breakout-pufferlib-shape --out sweeps/breakout-pufferlib-shape
    python -m shoal sweep breakout --config ... --study ... --out ...   # runs it first
    python benchmarks/sweep_enqueue_base.py g2048 --sweep benchmarks/sweep_spaces/g2048.toml \\
        --study g2048-masks --storage sqlite:///sweeps/g2048-masks/study.db

Takes the same arguments as ``shoal sweep`` (only the study, storage, config files and
overrides matter). The values that the base config (env defaults, ``--config`` files,
``--SECTION.KEY VALUE`` overrides) gives the searched keys are queued with Optuna's
``enqueue_trial``; the sweep's workers run queued trials before sampling new ones, and the
trial counts as one of ``--trials``. A value outside the search space is refused.
"""

from __future__ import annotations

import math
import sys

from shoal.sweep import study as study_mod
from shoal.sweep.cli import settings_from_args


def main(argv: list[str]) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings, _ = settings_from_args(argv)
    base = study_mod.base_config(settings)
    space = study_mod.search_space(settings, base)
    params = {}
    for dim in space.dimensions:
        section, key = dim.key.split(".", 1)
        value = getattr(getattr(base, section), key)
        given = value
        if dim.distribution == "pow2":
            value = int(math.log2(value))
        if not dim.to_optuna()._contains(dim.to_optuna().to_internal_repr(value)):
            raise SystemExit(f"{dim.key} = {given!r} is outside its search range: widen the "
                             f"[sweep] entry to include it")
        params[dim.param_name] = value
    import os
    os.makedirs(settings.out_dir, exist_ok=True)
    study = study_mod.open_study(settings, space)
    study.enqueue_trial(params, user_attrs={"base_config": True}, skip_if_exists=True)
    print(f"queued in study '{settings.study}': {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
