"""The learner's CPU time for one breakout update, float32 against bfloat16, in one process.

``shoal train breakout``'s shipped settings (MLP-128 x 2, 256 envs x 64 steps, minibatch 2048,
one pass, one torch thread): one batch is collected, then the same update (8 minibatches:
replay, loss, backward, gradient clip, Adam) runs again and again from the same weights,
optimizer state, batch and sampler state, its thread CPU time measured, the variants
alternating; medians. ``--batch stale`` (default) anchors the batch at the learner, as the
overlapped path does (its update also weights each step by the learner-to-collector ratio),
and counts the anchoring of the first minibatch's segments (what the learner does itself in an
overlapped epoch; a second thread anchors the other minibatches' segments ahead of it, as the
rollout thread does); ``--batch fresh`` is the synchronous update. Thread CPU time holds up on a
shared machine far better than steps/s; run both versions of the code back to back
(``PYTHONPATH=../other/checkout``) to compare them::

    python benchmarks/learner_bench.py --rounds 15
    python benchmarks/learner_bench.py --rounds 15 --profile   # + a torch profile per variant
    python benchmarks/learner_bench.py --rounds 40 --batch fresh --variants bfloat16,bfloat16-2threads
    python benchmarks/learner_bench.py --rounds 15 --variants bfloat16-torch-head,bfloat16

It also prints the first update's losses of each variant (same batch, same draws): the
precisions should agree to a few parts in a thousand.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import torch

VARIANTS = {"float32": {"train.precision": "float32"},
            "bfloat16": {"train.precision": "bfloat16"},
            # the update on two torch intra-op threads (what train.overlap_tail_threads = 2 does
            # for the update's last steps): its learner thread CPU, and with --batch fresh its
            # process CPU (every thread), against one thread
            "bfloat16-2threads": {"train.precision": "bfloat16", "threads": 2},
            # the loss from the logits on as torch ops, not the C head (train.loss_head)
            "bfloat16-torch-head": {"train.precision": "bfloat16", "train.loss_head": "torch"},
            "float32-torch-head": {"train.precision": "float32", "train.loss_head": "torch"}}


def build(seed: int) -> Any:
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    cfg = build_config("breakout", overrides={
        # the synchronous float32 torch path (breakout ships fused + overlap + precision auto);
        # each variant sets its precision before its updates
        "train.rollout": "torch", "train.overlap": False, "train.precision": "float32",
        "train.seed": seed, "log.dashboard": "off",
        "log.run_dir": os.path.join(tempfile.mkdtemp(prefix="shoal-learner-bench-"), "run"),
        "log.checkpoint_interval": 10**6, "train.total_steps": 10**9})
    return Trainer(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15, help="updates per variant (after 2 warm-up)")
    ap.add_argument("--variants", default="float32,bfloat16",
                    help=f"comma-separated, first = baseline (any of {', '.join(VARIANTS)})")
    ap.add_argument("--batch", choices=("stale", "fresh"), default="stale")
    ap.add_argument("--epochs", type=int, default=3,
                    help="epochs trained before the measured batch (the policy moves off its "
                         "initial weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true",
                    help="also print a torch profile (self CPU by op) of one update per variant")
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")

    from shoal.trainer.stale_batch import PipelinedAnchor

    tr = build(args.seed)
    t = tr.config.train
    try:
        with tr.process_state.active():
            for _ in range(args.epochs):
                tr.run_epoch()
            episodes = tr.rollout()
            b = tr.storage
            batch = {k: v.clone() for k, v in vars(b).items() if isinstance(v, torch.Tensor)}
            weights = copy.deepcopy(tr.policy.state_dict())
            optimizer = copy.deepcopy(tr.optimizer.state_dict())
            sampler = tr.sampler_generator.get_state()
            anchor_policy = copy.deepcopy(tr.policy).requires_grad_(False)

            def one_update(variant: str) -> tuple[float, float, dict[str, Any]]:
                threads = VARIANTS[variant].get("threads")
                if threads is None:
                    return timed_update(variant)
                before = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    return timed_update(variant)
                finally:
                    torch.set_num_threads(before)

            def timed_update(variant: str) -> tuple[float, float, dict[str, Any]]:
                """(learner thread CPU, process CPU, losses) of one update."""
                t.precision = VARIANTS[variant]["train.precision"]
                t.loss_head = VARIANTS[variant].get("train.loss_head", "auto")
                for k, v in batch.items():
                    getattr(b, k).copy_(v)
                b.collector_ratio = None
                tr.policy.load_state_dict(weights)
                tr.optimizer.load_state_dict(copy.deepcopy(optimizer))
                tr.sampler_generator.set_state(sampler)
                if args.batch == "fresh":
                    cpu0, proc0 = time.thread_time(), time.process_time()
                    out = tr.update(dict(episodes))
                    return time.thread_time() - cpu0, time.process_time() - proc0, out
                # as in an overlapped epoch: a second thread anchors the minibatches ahead of
                # the learner with a copy of the weights (its CPU time is not counted), the
                # learner anchors the first minibatch's segments itself (counted)
                anchor_policy.load_state_dict(weights)
                anchor = PipelinedAnchor(anchor_policy, tr.distribution, b,
                                         # (a version of shoal without the argument: float32)
                                         *(() if t.precision == "float32" else (t.precision,)))
                second = threading.Thread(target=lambda: (anchor.work_ahead(),
                                                          anchor.work_rest()))
                second.start()
                try:
                    cpu0, proc0 = time.thread_time(), time.process_time()
                    out = tr.update(dict(episodes), anchor)
                    return time.thread_time() - cpu0, time.process_time() - proc0, out
                finally:
                    anchor.stop()
                    second.join()

            cpu: dict[str, list[float]] = {v: [] for v in variants}
            process: dict[str, list[float]] = {v: [] for v in variants}
            first: dict[str, dict[str, Any]] = {}
            for r in range(args.rounds + 2):
                for v in (variants if r % 2 == 0 else variants[::-1]):
                    seconds, every_thread, out = one_update(v)
                    first.setdefault(v, out)
                    if r >= 2:
                        cpu[v].append(seconds)
                        process[v].append(every_thread)
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                for v in variants:
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        one_update(v)
                    print(f"\n{v}: one update, self CPU by op")
                    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    finally:
        tr.close()

    med = statistics.median
    base = variants[0]
    print(f"breakout shipped settings, {args.batch} batch: learner thread CPU per update "
          f"(8 minibatches of 2,048 steps), median of {args.rounds} [min, max]")
    for v in variants:
        print(f"  {v}: {1000 * med(cpu[v]):.1f} ms [{1000 * min(cpu[v]):.1f}, "
              f"{1000 * max(cpu[v]):.1f}], {med(cpu[base]) / med(cpu[v]):.2f}x {base}; process "
              f"CPU {1000 * med(process[v]):.1f} ms"
              + (" (with the anchoring thread's)" if args.batch == "stale" else ""))
    print("first update's losses (same batch and draws):")
    for v in variants:
        o = first[v]
        print(f"  {v}: " + ", ".join(f"{k} {o[k]:.5g}" for k in
                                     ("policy", "value", "entropy", "approx_kl", "clipfrac",
                                      "grad_norm") if k in o))


if __name__ == "__main__":
    main()
