"""Queue an env's current config as the first trial of a `shoal sweep` study.

    python benchmarks/sweep_enqueue_base.py g2048 --sweep benchmarks/sweep_spaces/g2048.toml \\
        --study g2048-masks --storage sqlite:///sweeps/g2048-masks/study.db
    python -m shoal sweep g2048 --sweep benchmarks/sweep_spaces/g2048.toml --study g2048-masks \\
        --storage sqlite:///sweeps/g2048-masks/study.db --trials 8 ...

The queued trial holds, for every searched key, the value of the base config (the shipped
config, then any ``--config`` files and ``--SECTION.KEY VALUE`` flags, as `shoal sweep` builds
it), so the study measures the config to beat with the same budget, seed and machine as the
searched ones, and its sampler starts from a known-good point. A value outside its search range
is an error naming the key. Run it once, before the sweep; the sweep runs queued trials first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from shoal.trainer.cli import parse_args as train_args
from shoal.sweep.study import SweepSettings, base_config, open_study, search_space


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("env")
    p.add_argument("--sweep", dest="sweep_file", required=True, help="the [sweep] TOML file")
    p.add_argument("--study", required=True)
    p.add_argument("--storage", required=True, help="Optuna storage URL, as given to the sweep")
    p.add_argument("--config", action="append", default=[], help="TOML config (repeatable)")
    args, rest = p.parse_known_args(argv)
    extra = train_args(rest)
    s = SweepSettings(env=args.env, storage=args.storage, study=args.study,
                      out_dir=os.path.abspath(os.path.join("sweeps", args.study)), trials=1,
                      files=[os.path.abspath(f) for f in args.config],
                      overrides=dict(extra["overrides"]),
                      sweep_file=os.path.abspath(args.sweep_file))
    base = base_config(s)
    space = search_space(s, base)
    params = {}
    for dim in space.dimensions:
        section, key = dim.key.split(".", 1)
        value = getattr(getattr(base, section), key)
        if dim.distribution == "categorical":
            ok = value in dim.choices
        else:
            ok = dim.low <= value <= dim.high
        if not ok:
            sys.exit(f"{dim.key} = {value!r} is outside its search range: widen the [sweep] "
                     f"entry to include it")
        params[dim.param_name] = int(math.log2(value)) if dim.distribution == "pow2" else value
    os.makedirs(s.out_dir, exist_ok=True)
    study = open_study(s, space)
    study.enqueue_trial(params, user_attrs={"base_config": True})
    print(f"queued in study '{s.study}': " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
