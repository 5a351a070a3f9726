"""Where a pipelined epoch's time goes (``train.pipeline``, breakout's shipped path): per epoch,
the epoch's wall-clock, the learner's update, how long the learner waited for a rows range, the
first range (collected on every core before the update can start) and the rollout thread's busy
time (collecting the other ranges and preparing their minibatches). The learner is the critical
path when it never waits; the rollout thread's idle time is then epoch - first range - busy.

    python benchmarks/pipeline_profile.py --epochs 60
    python benchmarks/pipeline_profile.py --epochs 10 --torch-profile     # + the learner's top ops

Medians over ``--epochs`` epochs after ``--skip`` warm-up epochs of ``shoal train breakout``
(shipped settings, plus any ``shoal train`` flags after ``--``), in this process. The timing
wrappers cost a few microseconds a call. ``--torch-profile`` also prints torch's profiler table
of the measured epochs (self CPU time by op: what the learner's ~5 ms gradient steps spend).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--torch-profile", action="store_true")
    ap.add_argument("flags", nargs="*", help="shoal train flags (after --)")
    args = ap.parse_args()

    import torch

    from shoal.trainer import pipeline
    from shoal.trainer.cli import parse_args
    from shoal.trainer.config import build_config
    from shoal.trainer.fused_rollout import FusedRollout
    from shoal.trainer.ppo import Trainer

    spent: dict[str, float] = defaultdict(float)

    def timed(cls, name, key, thread_key=None):
        original = getattr(cls, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                on_worker = threading.current_thread() is not threading.main_thread()
                spent[thread_key if (thread_key and on_worker) else key] += \
                    time.perf_counter() - t
        setattr(cls, name, wrapper)

    timed(Trainer, "update", "update")
    timed(pipeline.Arrivals, "wait", "waited")
    timed(FusedRollout, "_call", "first range", thread_key="rollout thread")
    timed(pipeline.RowRanges, "prepare", "learner prepares", thread_key="rollout thread")

    parsed = parse_args(["breakout", *args.flags])
    run_dir = tempfile.mkdtemp(prefix="shoal-pipeline-profile-")
    cfg = build_config("breakout", parsed["files"], overrides={
        **parsed["overrides"], "log.dashboard": "off", "log.run_dir": run_dir,
        "log.checkpoint_interval": 10**6, "train.total_steps": 10**9})
    trainer = Trainer(cfg)
    if not trainer.fused or not trainer.fused.pipeline:
        raise SystemExit(f"not a pipelined run: {trainer.pipeline_note or 'no fused rollout'}")
    per_epoch: dict[str, list[float]] = defaultdict(list)
    with trainer.process_state.active():
        for _ in range(args.skip):
            trainer.run_epoch()
        profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    if args.torch_profile else None)
        if profiler is not None:
            profiler.__enter__()
        for _ in range(args.epochs):
            spent.clear()
            t = time.perf_counter()
            trainer.run_epoch()
            per_epoch["epoch"].append(time.perf_counter() - t)
            for key in ("update", "waited", "first range", "rollout thread",
                        "learner prepares"):
                per_epoch[key].append(spent[key])
        if profiler is not None:
            profiler.__exit__(None, None, None)
    trainer.close()
    ms = {k: 1e3 * statistics.median(v) for k, v in per_epoch.items()}
    print(f"breakout {' '.join(args.flags) or '(shipped)'}: ms per epoch, medians of "
          f"{args.epochs} epochs")
    for key, value in ms.items():
        print(f"  {key:18s} {value:7.2f}")
    idle = ms["epoch"] - ms["first range"] - ms["rollout thread"]
    print(f"  rollout thread idle {idle:7.2f} ({100 * idle / ms['epoch']:.0f}% of the epoch)")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
