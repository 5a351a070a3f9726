"""Where a pipelined epoch's time goes (``train.pipeline``, breakout's shipped path): per epoch,
the epoch's wall-clock, the learner's update, how long the learner waited for a rows range, the
first range (collected on every core before the update can start) and the rollout thread's busy
time (collecting the other ranges and preparing their minibatches). The learner is the critical
path when it never waits; the rollout thread's idle time is then epoch - first range - busy.

    python benchmarks/pipeline_profile.py --epochs 60
    python benchmarks/pipeline_profile.py --epochs 10 --torch-profile     # + the learner's top ops
    python benchmarks/pipeline_profile.py --epochs 40 --tail-rounds 8     # one thread vs the tail

``--tail-rounds N``: in the same process (one trainer, so one machine state for both), N rounds
of ``--epochs`` epochs on one torch thread and then ``--epochs`` epochs with the update's tail
on two (the run's own tail: breakout ships ``train.overlap_tail_threads = 2`` in the updates
whose rollout thread had its core, ``overlap_tail_when = "free_core"``; pass
``-- --train.overlap-tail-when always`` for every update), each side's per-epoch medians, its
CPU use (process CPU time / wall time per epoch), the tail's steps/s against one thread, how
many of its updates took the tail, and the rollout thread's share of a core while it collected
(what the free-core test reads). With a second run on the cores (``python -m shoal train
breakout &`` first) the share falls and the updates go without the tail.

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
    ap.add_argument("--tail-rounds", type=int, default=0,
                    help="alternate blocks of --epochs without and with the tail, N rounds")
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

    def epoch(into: dict[str, list[float]]) -> None:
        spent.clear()
        t, cpu = time.perf_counter(), time.process_time()
        trainer.run_epoch()
        wall = time.perf_counter() - t
        into["epoch"].append(wall)
        into["CPU"].append((time.process_time() - cpu) / wall)
        for key in ("update", "waited", "first range", "rollout thread", "learner prepares"):
            into[key].append(spent[key])

    if args.tail_rounds:
        tail_rounds(trainer, args, epoch)
        return
    with trainer.process_state.active():
        for _ in range(args.skip):
            trainer.run_epoch()
        profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    if args.torch_profile else None)
        if profiler is not None:
            profiler.__enter__()
        for _ in range(args.epochs):
            epoch(per_epoch)
        if profiler is not None:
            profiler.__exit__(None, None, None)
    trainer.close()
    ms = {k: 1e3 * statistics.median(v) for k, v in per_epoch.items()}
    print(f"breakout {' '.join(args.flags) or '(shipped)'}: ms per epoch, medians of "
          f"{args.epochs} epochs")
    for key, value in ms.items():
        if key != "CPU":
            print(f"  {key:18s} {value:7.2f}")
    print(f"  CPU use             {ms['CPU'] / 10:6.0f}% of one core")
    idle = ms["epoch"] - ms["first range"] - ms["rollout thread"]
    print(f"  rollout thread idle {idle:7.2f} ({100 * idle / ms['epoch']:.0f}% of the epoch)")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def tail_rounds(trainer, args, epoch) -> None:
    """``--tail-rounds``: blocks of epochs without and with the tail, alternating."""
    import dataclasses
    import functools

    from shoal.trainer.tail_threads import FREE_CORE_SHARE, TailThreads, steps_alike

    # the run's own tail (breakout ships one), else the tail on two threads with its settings
    tail = trainer.fused.tail or TailThreads(
        dataclasses.replace(trainer.config.train, overlap_tail_threads=2),
        step_alike=functools.partial(steps_alike, trainer))
    sides: dict[str, dict[str, list[float]]] = {"one thread": defaultdict(list),
                                               "tail": defaultdict(list)}
    shares: list[float] = []     # the rollout thread's share of a core (the free-core test)
    try:
        with trainer.process_state.active():
            for _ in range(args.skip):
                trainer.run_epoch()
            for _ in range(args.tail_rounds):
                for name, per_epoch in sides.items():
                    trainer.fused.tail = tail if name == "tail" else None
                    for _ in range(args.epochs):
                        epoch(per_epoch)
                        if name == "tail":
                            shares.append(tail.core_share())
    finally:
        trainer.fused.tail = None
        trainer.close()
    print(f"breakout {' '.join(args.flags) or '(shipped)'}: ms per epoch, medians of "
          f"{args.tail_rounds} rounds x {args.epochs} epochs a side, alternating")
    ms = {name: {k: 1e3 * statistics.median(v) for k, v in per_epoch.items()}
          for name, per_epoch in sides.items()}
    for key in ("epoch", "update", "waited", "first range", "rollout thread"):
        print(f"  {key:16s} " + "  ".join(f"{name} {ms[name][key]:7.2f}" for name in sides))
    print("  CPU use          " + "  ".join(f"{name} {ms[name]['CPU'] / 10:6.0f}%"
                                           for name in sides))
    print(f"  the tail's steps/s against one thread: "
          f"{ms['one thread']['epoch'] / ms['tail']['epoch']:.3f}x")
    print(f"  the tail side's updates ({tail.train.overlap_tail_when}): {tail.taken} with the "
          f"tail, {tail.busy} without it (the core busy), {tail.rounding} without it (other "
          f"bits on two threads)")
    cuts = statistics.quantiles(shares, n=20)
    print(f"  the rollout thread's CPU time over its collection's wall-clock, tail side: "
          f"{cuts[0]:.2f} / {statistics.median(shares):.2f} / {cuts[-1]:.2f} (5th / 50th / 95th "
          f"percentile; the tail is taken from {FREE_CORE_SHARE})")


if __name__ == "__main__":
    main()
