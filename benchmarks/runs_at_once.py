"""Several ``shoal train`` runs at once on one machine against one alone: how a config's threads
share the cores with another run's (OpenMP's spin-waiting threads crowd out working ones when
there are more busy threads than cores).

    python benchmarks/runs_at_once.py --steps 3e6 --rounds 2
    python benchmarks/runs_at_once.py --steps 3e6 --rounds 2 --env GOMP_SPINCOUNT=300000   # libgomp's default
    python benchmarks/runs_at_once.py --steps 3e6 --rounds 2 -- --train.overlap true --train.torch-threads 1

Each round times one run alone, then ``--runs`` (default 2) started together, each the whole
``python -m shoal train ENV`` command (start-up included), alternating the order round by round.
Printed: the wall-clock of each, medians, and the slowdown of the runs together against one run
alone (2.0x for two runs means they shared the machine without loss; more is what they lost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_runs(n: int, env_name: str, steps: int, flags: list[str], extra_env: dict[str, str],
               workdir: str) -> float:
    """Seconds until ``n`` runs started together have all ended."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p), **extra_env)
    start = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "shoal", "train", env_name, "--train.total-steps", str(steps),
         "--train.schedule-steps", "20000000", "--log.dashboard", "off",
         "--log.checkpoint-interval", "1000000",
         "--run-dir", tempfile.mkdtemp(dir=workdir), *flags],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a run failed:\n{err.decode()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env-name", default="breakout")
    ap.add_argument("--steps", type=float, default=3e6)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE set in the runs' environment (repeatable)")
    ap.add_argument("flags", nargs="*", help="shoal train flags (after --)")
    args = ap.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    alone, together = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds):
            order = ("alone", "together") if r % 2 == 0 else ("together", "alone")
            for what in order:
                n = 1 if what == "alone" else args.runs
                t = timed_runs(n, args.env_name, int(args.steps), args.flags, extra, workdir)
                (alone if n == 1 else together).append(t)
                print(f"round {r} {what}: {t:.1f} s", flush=True)
    a, t = statistics.median(alone), statistics.median(together)
    print(f"\n{args.env_name} {' '.join(args.flags) or '(shipped)'} {extra or ''}: one run alone "
          f"{a:.1f} s, {args.runs} at once {t:.1f} s (medians of {args.rounds}): "
          f"{t / a:.2f}x one run's wall-clock")


if __name__ == "__main__":
    main()
