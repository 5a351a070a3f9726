"""Two configs of one env on the same seeds, compared at the same budget of agent steps.

    python benchmarks/config_steps_ab.py --env maze --steps 3e6 --seeds 100,101,102 \\
        --a "--env.size 15" --b "--config shoal/trainer/configs/maze.toml"

Each run is `shoal train ENV FLAGS --train.total-steps STEPS --train.seed SEED` to its end, so
both configs get the same budget in agent steps (their learning-rate schedules end with it) and
the score does not depend on how loaded the machine is, unlike a wall-clock budget. A and B of
each seed run side by side (``--parallel 2``, the default); ``--parallel N`` runs N at once. Printed per run:
the score (mean of the last 100 episodes) at 1/4, 1/2, 3/4 and all of the budget (and at each
``--score-at`` step count), the wall-clock
time and steps/s; then the median final score of A and of B and their ratio (B / A), and
``--target`` scores' median steps to first reach them; the mean final scores and B's ratio to
the others; each config's median steps/s (a config with more passes per batch costs more per
step: compare these from runs that went side by side). ``--c`` adds a third config C (e.g. an
older setting) on the same seeds. ``--runs A`` (or ``B``, ``AC``...) runs only those configs'
seeds, with exactly the commands a full run gives them, so the parts of a comparison can run
at different times. With ``--eval-episodes N`` each run's final
policy is also scored by `shoal eval` over N episodes (the same number from every env, so long
failing episodes weigh as much as quick successes; the trainer's last-100 mean favours the quick
ones until every env has finished a few episodes). ``--metrics-out DIR`` keeps each run's
metrics.jsonl as DIR/<config><seed>.jsonl (e.g. A100.jsonl) for learning curves
(`shoal plot DIR/A100.jsonl DIR/B100.jsonl`); run directories are removed otherwise. The last line is the
whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

from run_records import read_jsonl


def score_at(records: list[dict], steps: float) -> float | None:
    """score100 of the last epoch that ended at or before ``steps`` agent steps."""
    best = None
    for r in records:
        if r["agent_steps"] <= steps and r.get("score100") is not None:
            best = r["score100"]
    return best


def steps_to(records: list[dict], target: float) -> float:
    """Agent steps at the first epoch whose score100 reached ``target`` (inf if none)."""
    for r in records:
        if r.get("score100") is not None and r["score100"] >= target:
            return float(r["agent_steps"])
    return math.inf


def start(env: str, flags: list[str], steps: int, seed: int) -> tuple[subprocess.Popen, str]:
    run_dir = tempfile.mkdtemp(prefix="shoal-steps-ab-")
    cmd = [sys.executable, "-m", "shoal", "train", env, *flags, "--train.total-steps",
           str(steps), "--train.seed", str(seed), "--log.dashboard", "off",
           "--log.checkpoint-interval", "100000", "--log.run-dir", run_dir]
    with open(os.path.join(run_dir, "stderr.txt"), "wb") as err:  # a file: never a full pipe
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err), run_dir


def evaluate(env: str, run_dir: str, episodes: int, seed: int) -> float:
    """`shoal eval`'s mean score of the run's final checkpoint over ``episodes`` episodes."""
    out = subprocess.run([sys.executable, "-m", "shoal", "eval", env, "--checkpoint", run_dir,
                          "--episodes", str(episodes), "--seed", str(seed)],
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("score "))
    return float(line.split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=float, required=True, help="agent steps per run")
    p.add_argument("--seeds", default="100,101,102")
    p.add_argument("--a", default="", help="flags of A (one string; '' = the shipped config)")
    p.add_argument("--b", default="", help="flags of B (one string)")
    p.add_argument("--c", default=None, help="flags of an optional third config C (one string; "
                   "e.g. an older setting), run with the same seeds and reported against B")
    p.add_argument("--target", type=float, nargs="*", default=[])
    p.add_argument("--eval-episodes", type=int, default=0,
                   help="also score each final policy with `shoal eval` over this many episodes")
    p.add_argument("--runs", default=None,
                   help="which of the given configs to run (default all; e.g. A or B runs one part)")
    p.add_argument("--score-at", type=float, nargs="*", default=[],
                   help="also print each run's score at these agent steps (the last epoch "
                        "ending at or before each)")
    p.add_argument("--metrics-out", default=None,
                   help="directory to keep each run's metrics.jsonl in, as <config><seed>.jsonl")
    p.add_argument("--parallel", type=int, default=2,
                   help="runs at once, taken in the order A, B of the first seed, then the next")
    a = p.parse_args()
    steps = int(a.steps)
    seeds = [int(s) for s in a.seeds.split(",")]
    flags = {"A": shlex.split(a.a), "B": shlex.split(a.b)}
    if a.c is not None:
        flags["C"] = shlex.split(a.c)
    text = {"A": a.a, "B": a.b, "C": a.c}
    result: dict = {"env": a.env, "steps": steps, "seeds": seeds, "a": a.a, "b": a.b, "c": a.c,
                    "runs": {}}
    finals: dict[str, list[float]] = {k: [] for k in flags}
    evals: dict[str, list[float]] = {k: [] for k in flags}
    rates: dict[str, list[float]] = {k: [] for k in flags}
    reach: dict[str, dict[float, list[float]]] = {k: {t: [] for t in a.target} for k in flags}
    if a.parallel < 1:
        p.error("--parallel must be at least 1")
    if a.runs is None:
        a.runs = "".join(flags)
    if any(name not in flags for name in a.runs):
        p.error(f"--runs {a.runs!r}: each letter must name a given config ({''.join(flags)})")
    order = [(seed, name) for seed in seeds for name in flags if name in a.runs]
    for first in range(0, len(order), a.parallel):
        group = order[first:first + a.parallel]
        procs = {(seed, name): start(a.env, flags[name], steps, seed) for seed, name in group}
        for (seed, name), (proc, run_dir) in procs.items():
            proc.wait()
            records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"), missing_ok=True)
            if proc.returncode != 0 or not records:
                with open(os.path.join(run_dir, "stderr.txt")) as f:
                    err = f.read()
                raise RuntimeError(f"{name} seed {seed} failed ({proc.returncode}):\n{err[-2000:]}")
            evaluated = (evaluate(a.env, run_dir, a.eval_episodes, 10_000 + seed)
                         if a.eval_episodes else None)
            if a.metrics_out:
                os.makedirs(a.metrics_out, exist_ok=True)
                shutil.copyfile(os.path.join(run_dir, "metrics.jsonl"),
                                os.path.join(a.metrics_out, f"{name}{seed}.jsonl"))
            shutil.rmtree(run_dir, ignore_errors=True)
            if evaluated is not None:
                evals[name].append(evaluated)
            quarters = [score_at(records, steps * q / 4) for q in (1, 2, 3)]
            final = records[-1]["score100"]
            finals[name].append(final)
            for t in a.target:
                reach[name][t].append(steps_to(records, t))
            wall = records[-1]["elapsed"]
            at = {f"{x:g}": score_at(records, x) for x in a.score_at}
            result["runs"][f"{name}{seed}"] = {"quarters": quarters, "final": final,
                                                "steps": records[-1]["agent_steps"],
                                                "seconds": wall, "eval": evaluated,
                                                "score_at": at}
            q = " / ".join("-" if s is None else f"{s:.3g}" for s in quarters)
            rates[name].append(records[-1]["agent_steps"] / wall)
            print(f"seed {seed} {name} ({text[name] or 'shipped'}): "
                  f"score at 1/4, 1/2, 3/4 {q}; final {final:.4g} at "
                  f"{records[-1]['agent_steps'] / 1e6:.2f}M steps, {wall:.0f} s "
                  f"({records[-1]['agent_steps'] / wall:.0f} steps/s)"
                  + "".join(f"; at {x} steps {'-' if v is None else f'{v:.4g}'}"
                            for x, v in at.items())
                  + ("" if evaluated is None else
                     f"; shoal eval over {a.eval_episodes} episodes {evaluated:.4g}"),
                  flush=True)
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else math.nan

    for x in a.score_at:
        for name in flags:
            values = [r["score_at"][f"{x:g}"] for k, r in result["runs"].items()
                      if k.startswith(name)]
            if values and all(v is not None for v in values):
                print(f"{name}: score at {x:g} steps, mean of {len(values)} seeds "
                      f"{statistics.mean(values):.4g}")
    ma, mb = median(finals["A"]), median(finals["B"])
    print(f"final score, median of {len(seeds)} seeds: A {ma:.4g}, B {mb:.4g}, "
          f"B / A {mb / ma:.2f}" if ma else f"final score: A {ma}, B {mb}")
    means = {k: statistics.fmean(v) if v else math.nan for k, v in finals.items()}
    print("final score, mean of seeds: " + ", ".join(f"{k} {m:.4g}" for k, m in means.items())
          + "".join(f", B / {k} {means['B'] / means[k]:.2f}" for k in flags
                    if k != "B" and means[k] and math.isfinite(means[k])))
    # side by side in one run, so the same load: a config's cost per step (e.g. more passes)
    print("steps/s, median of the runs (same load only if they ran side by side): "
          + ", ".join(f"{k} {median(v):.0f}" for k, v in rates.items()))
    if a.eval_episodes:
        ea, eb = median(evals["A"]), median(evals["B"])
        print(f"shoal eval score, median: A {ea:.4g}, B {eb:.4g}"
              + (f", B / A {eb / ea:.2f}" if ea else ""))
    for t in a.target:
        med = {k: median(reach[k][t]) for k in flags}
        print(f"score {t:g}: median steps " + ", ".join(f"{k} {v / 1e6:.2f}M"
                                                        for k, v in med.items())
              + "".join(f", B / {k} {med['B'] / med[k]:.2f}" for k in flags
                        if k != "B" and math.isfinite(med[k]) and math.isfinite(med["B"])))
    result["final"] = finals
    result["steps_per_s"] = rates
    result["eval"] = evals
    result["steps_to"] = {k: {str(t): v for t, v in reach[k].items()} for k in reach}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
