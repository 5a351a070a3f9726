"""``shoal sweep``: a cost-aware hyperparameter sweep of an env's training config.

    shoal sweep ENV [--trials N] [--workers K] [--storage URL] [--study NAME] [--max-cost S]
                    [--sweep FILE] [--config FILE.toml] [--out DIR] [--SECTION.KEY VALUE ...]

Runs ``--workers`` local worker processes on one Optuna study (see :mod:`shoal.sweep.study`)
until it holds ``--trials`` runs, then writes the report (:mod:`shoal.sweep.report`) into the
output directory. Running the same command again continues the study; ``--trials 0`` only
writes the report.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from typing import Any

USAGE = ("usage: shoal sweep ENV [--trials N] [--workers K] [--storage URL] [--study NAME] "
         "[--max-cost S] [--sweep FILE] [--config FILE.toml] [--out DIR] "
         "[--SECTION.KEY VALUE ...]")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal sweep", usage=USAGE.removeprefix("usage: "),
        description="Cost-aware hyperparameter sweep (score against training seconds) of ENV's "
                    "config. The search space is the [sweep] table of --sweep FILE, of the "
                    "--config file or of the env's shipped config, else a default space of the "
                    "trainer's keys (docs/train.md). Other --SECTION.KEY VALUE flags fix config "
                    "keys for every trial, as in `shoal train`.")
    p.add_argument("env", help="env to sweep (as in `shoal train ENV`)")
    p.add_argument("--trials", type=int, default=20, help="runs the study should hold (default "
                   "20; counts earlier runs of the same study)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite file "
                   "OUT/study.db; e.g. postgresql://user@host:5432/db for workers on several "
                   "machines)")
    p.add_argument("--study", default=None, help="study name (default: the env's name)")
    p.add_argument("--max-cost", type=float, default=None, help="stop any trial after this "
                   "many seconds of training (its score then is the one reached)")
    p.add_argument("--sweep", dest="sweep_file", default=None,
                   help="TOML file with the [sweep] table (the search space)")
    p.add_argument("--config", action="append", default=[], help="TOML config applied before "
                   "the searched values (repeatable; a bare NAME is a shipped config)")
    p.add_argument("--out", default=None, help="output directory (default sweeps/STUDY)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running "
                   "trial's heartbeats; a trial silent for 3 heartbeats is failed and retried")
    return p


def settings_from_args(argv: list[str]) -> Any:
    """Parses the command line into :class:`~shoal.sweep.study.SweepSettings`."""
    from ..trainer.cli import parse_args as train_args
    from ..trainer.config import ConfigError, config_file_path
    from .study import SweepSettings

    args, rest = _parser().parse_known_args(argv)
    extra = train_args(rest)
    if extra["env"] is not None or extra["resume"] or extra["files"]:
        raise ConfigError(f"unexpected arguments {' '.join(rest)!r}: config keys are "
                          f"--SECTION.KEY VALUE, config files --config FILE")
    if args.trials < 0:
        raise ConfigError(f"--trials must be >= 0, got {args.trials}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.max_cost is not None and not args.max_cost > 0:
        raise ConfigError(f"--max-cost must be > 0 seconds, got {args.max_cost}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    study = args.study or re.sub(r"[^A-Za-z0-9._-]+", "-", args.env).strip("-.") or "sweep"
    out = os.path.abspath(args.out or os.path.join("sweeps", study))
    storage = args.storage or f"sqlite:///{os.path.join(out, 'study.db')}"
    overrides = dict(extra["overrides"])
    return SweepSettings(env=args.env, storage=storage, study=study, out_dir=out,
                         trials=args.trials, files=[os.path.abspath(config_file_path(f))
                                                   for f in args.config],
                         overrides=overrides, sweep_file=args.sweep_file and
                         os.path.abspath(args.sweep_file), max_cost=args.max_cost,
                         heartbeat=args.heartbeat), args.workers


def run(settings: Any, workers: int) -> int:
    """Starts the workers, waits for them (Ctrl-C / SIGTERM stop them), writes the report."""
    from . import report, study as study_mod
    from .launch import launch_command

    base = study_mod.base_config(settings)
    space = study_mod.search_space(settings, base)
    os.makedirs(settings.out_dir, exist_ok=True)
    study = study_mod.open_study(settings, space)
    done = study_mod.trials_counted(study)
    print(f"shoal sweep {settings.env}: study '{settings.study}' in {settings.storage}: "
          f"{done} of {settings.trials} runs done; searching {', '.join(space.keys())}",
          flush=True)
    settings_path = os.path.join(settings.out_dir, f"settings-{os.getpid()}.json")
    settings.save(settings_path)
    procs: list[subprocess.Popen] = []
    stopped = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        stopped["signal"] = signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if done < settings.trials:
            for _ in range(workers):
                procs.append(subprocess.Popen(launch_command("shoal.sweep.study", settings_path),
                                              stdin=subprocess.DEVNULL))
            for p in procs:
                p.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.unlink(settings_path)
    study = study_mod.open_study(settings, space)
    print(report.format_table(study, space), flush=True)
    paths = report.write_report(settings, space, study)
    for name, path in paths.items():
        print(f"{name}: {path}")
    if stopped["signal"] is not None:
        print(f"stopped: run the same command again to continue the study", file=sys.stderr)
        return 130
    if any(p.returncode not in (0, None) for p in procs):
        print("shoal sweep: a worker exited with an error (see above)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal sweep``."""
    from ..trainer.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import optuna
    except ImportError:
        print("shoal sweep needs optuna: pip install 'shoal[sweep]'", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the command's own process
    try:
        settings, workers = settings_from_args(argv)
        return run(settings, workers)
    except ConfigError as exc:
        print(f"shoal sweep: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
