"""bfloat16 vs float32 policy precision: speed and the learning curve, in the same run.

For each seed the two precisions alternate (same config, same seed, same step budget); printed:
the median training steps/s of each (second half of each run), their ratio, and the mean score
of the last 100 episodes at 25/50/75/100% of the budget, median over seeds — the curve that must
not change for bfloat16 to be worth its speed.

    python benchmarks/precision_bench.py [--env breakout] [--steps 20e6] [--seeds 0,1,2] \\
        [--shoal-flags "--policy.name lstm --env.num-envs 8192 --train.minibatch-size 32768"]

The runs take the env's shipped rollout path (breakout's: the fused rollout with overlap, where
bfloat16 is the learner's only); add ``--shoal-flags "--train.rollout torch --train.overlap
false"`` for the synchronous torch path, where rollout inference runs in bfloat16 too.
"""

from __future__ import annotations

import argparse
import json
import statistics

from train_bench import run_shoal, second_half_sps

PRECISIONS = ("float32", "bfloat16")
MARKS = (0.25, 0.5, 0.75, 1.0)


def score_at(records: list[dict], steps: float) -> float | None:
    """Score of the last epoch that ended at or before ``steps``."""
    best = None
    for r in records:
        if r["steps"] <= steps * 1.0001 and r["score"] is not None:
            best = r["score"]
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="breakout")
    p.add_argument("--steps", type=float, default=20e6)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shoal-flags", default="")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    runs: dict[str, list[list[dict]]] = {k: [] for k in PRECISIONS}
    for i, seed in enumerate(seeds):
        order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]
        for prec in order:
            flags = ["--train.total-steps", str(int(a.steps)), "--train.seed", str(seed),
                     "--train.precision", prec, *a.shoal_flags.split()]
            rec = run_shoal(a.env, float("inf"), flags)
            runs[prec].append(rec)
            print(f"seed {seed} {prec:<8} sps {second_half_sps(rec) / 1e3:6.1f}k  "
                  + "  ".join(f"{m:.0%}: {score_at(rec, m * a.steps)}" for m in MARKS),
                  flush=True)
    result: dict = {"env": a.env, "steps": a.steps, "seeds": seeds, "flags": a.shoal_flags}
    for prec, recs in runs.items():
        curve = {}
        for m in MARKS:
            vals = [v for v in (score_at(r, m * a.steps) for r in recs) if v is not None]
            curve[f"{m:.0%}"] = statistics.median(vals) if vals else None
        result[prec] = {"sps_median": statistics.median(second_half_sps(r) for r in recs),
                        "score_median": curve}
    result["speedup"] = result["bfloat16"]["sps_median"] / result["float32"]["sps_median"]
    for prec in PRECISIONS:
        r = result[prec]
        print(f"{prec:<8} sps {r['sps_median'] / 1e3:6.1f}k  score (median over seeds) "
              + "  ".join(f"{k}: {v:.3f}" if v is not None else f"{k}: -"
                          for k, v in r["score_median"].items()))
    print(f"bfloat16 / float32 speed: {result['speedup']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
