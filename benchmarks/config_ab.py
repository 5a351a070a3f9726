"""Two sets of `shoal train` flags on the same seeds: wall-clock and steps to a score.

    python benchmarks/config_ab.py --env breakout --seconds 95 --seeds 0,1,2 --target 4 \\
        --a "" --b "--train.minibatch-size 2048"

For each seed, A and B run in alternation (the first one alternates between seeds), each for
``--seconds`` of training. Printed per run: the time and steps at which the mean score of the
last 100 episodes first reached each target, and the score at the end; then per target the
median time of A and of B and their ratio (B / A, < 1 = B faster). For choosing shipped
settings: shoal runs are deterministic under a seed, so seeds are the spread that matters.
Both sides start from the env's shipped config (breakout's: the pipelined fused rollout with
minibatches in row ranges and ``train.precision = "auto"``; ``--train.rollout torch
--train.precision float32`` in both flag sets for the synchronous torch path).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from train_bench import run_shoal


def first_reach(records: list[dict], target: float) -> tuple[float, int] | None:
    for r in records:
        if r["score"] is not None and r["score"] >= target:
            return r["t"], r["steps"]
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="breakout")
    p.add_argument("--seconds", type=float, default=95.0)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--target", type=float, nargs="+", default=[4.0])
    p.add_argument("--a", default="", help="flags of A (one string; '' = the shipped config)")
    p.add_argument("--b", default="", help="flags of B (one string)")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    flags = {"A": a.a.split(), "B": a.b.split()}
    reach: dict[str, dict[float, list[float]]] = {k: {t: [] for t in a.target} for k in flags}
    ends: dict[str, list[float]] = {k: [] for k in flags}
    for i, seed in enumerate(seeds):
        for name in (("A", "B") if i % 2 == 0 else ("B", "A")):
            records = run_shoal(a.env, a.seconds, flags[name] + ["--train.seed", str(seed)])
            end = records[-1]
            parts = []
            for target in a.target:
                hit = first_reach(records, target)
                reach[name][target].append(hit[0] if hit else float("inf"))
                parts.append(f"score {target:g} at " + (f"{hit[0]:.0f}s/{hit[1] / 1e6:.1f}M"
                                                        if hit else "-"))
            ends[name].append(end["score"] if end["score"] is not None else float("nan"))
            print(f"seed {seed} {name} ({' '.join(flags[name]) or 'shipped'}): "
                  + ", ".join(parts) + f"; {end['score']} at {end['t']:.0f}s/"
                  f"{end['steps'] / 1e6:.1f}M", flush=True)
    result = {"env": a.env, "seconds": a.seconds, "seeds": seeds, "a": a.a, "b": a.b,
              "score_at_end": ends, "time_to": {}}
    for target in a.target:
        ta, tb = statistics.median(reach["A"][target]), statistics.median(reach["B"][target])
        result["time_to"][str(target)] = {"A": reach["A"][target], "B": reach["B"][target]}
        ratio = f"{tb / ta:.2f}" if math.isfinite(ta) and math.isfinite(tb) else "-"
        print(f"score {target:g}: median time A {ta:.0f}s, B {tb:.0f}s, B / A {ratio} "
              "(inf = not reached in the budget)")
    print(f"score at the end, median: A {statistics.median(ends['A']):.1f}, "
          f"B {statistics.median(ends['B']):.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
