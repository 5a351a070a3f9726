"""Where the learner's thread spends an overlapped breakout update, section by section.

Runs ``shoal train breakout``'s shipped settings in-process (fused rollout, overlap) and adds
up the learner thread's CPU time (``time.thread_time``) inside each part of the update: the
replay (the network's forward), the loss from the logits on, the backward, the optimizer step,
the gradient clip, ``zero_grad``, and the rest. It also times the export of the next batch's C
policy (wall time). Calls on the rollout thread are not counted. Each part is wrapped where it
is called from, so the wrappers cost a little of their own; compare two checkouts with the same
script (``PYTHONPATH=/other/checkout``), not against other benchmarks::

    python benchmarks/learner_sections.py --epochs 150
    python benchmarks/learner_sections.py --epochs 150 --train.loss-head torch   # torch ops

``--alone`` also times one optimizer step and one gradient clip of breakout's policy on an idle
thread (no rollout thread competing for the interpreter), shoal's against torch's.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import threading
import time
from typing import Any, Callable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--skip", type=int, default=30, help="epochs left out at the start")
    ap.add_argument("--train.loss-head", dest="loss_head", default=None,
                    help="override train.loss_head (auto or torch)")
    ap.add_argument("--alone", action="store_true")
    args = ap.parse_args()

    import torch

    import shoal.trainer.fused_rollout as fused
    import shoal.trainer.optim as optim
    import shoal.trainer.ppo as ppo
    from shoal.trainer.config import build_config

    cpu: dict[str, float] = collections.defaultdict(float)
    learner: dict[str, Any] = {"thread": None, "counting": False}

    def timed(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            if not learner["counting"] or threading.get_ident() != learner["thread"]:
                return inner(*a, **k)
            start = time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                cpu[label] += time.thread_time() - start
        setattr(owner, name, wrapper)

    timed(ppo, "replay_outputs", "replay (network forward)")
    timed(ppo, "ppo_loss", "ppo_loss (replay included)")
    timed(torch.Tensor, "backward", "backward")
    timed(ppo, "clip_grad_norm", "gradient clip")
    timed(optim.FusedAdam, "step", "optimizer step")
    timed(ppo._Optimizers, "zero_grad", "zero_grad")
    exports: list[float] = []
    export_ahead = fused.FusedRollout._export_ahead

    def export_timed(self: Any) -> None:
        start = time.perf_counter()
        export_ahead(self)
        exports.append(time.perf_counter() - start)
    fused.FusedRollout._export_ahead = export_timed

    update = ppo.Trainer.update
    updates: list[float] = []

    def update_timed(self: Any, *a: Any, **k: Any) -> Any:
        learner["thread"] = threading.get_ident()
        learner["counting"] = self.epoch >= args.skip
        start = time.thread_time()
        try:
            return update(self, *a, **k)
        finally:
            if learner["counting"]:
                updates.append(time.thread_time() - start)
    ppo.Trainer.update = update_timed

    overrides = {"log.dashboard": "off", "log.checkpoint_interval": 10**9,
                 "train.total_steps": 16384 * args.epochs,
                 "log.run_dir": os.path.join(tempfile.mkdtemp(prefix="shoal-sections-"), "run")}
    if args.loss_head:
        overrides["train.loss_head"] = args.loss_head
    trainer = ppo.Trainer(build_config("breakout", overrides=overrides))
    trainer.train()
    trainer.close()

    n = len(updates)
    print(f"breakout shipped settings (loss_head {trainer.config.train.loss_head}): learner "
          f"thread CPU per update, mean of {n} updates (the first {args.skip} left out)")
    print(f"  update, in all: {1e3 * sum(updates) / n:.2f} ms")
    for label, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"  {label}: {1e3 * seconds / n:.2f} ms")
    print(f"  (the next batch's C policy exported at the end of each update: median "
          f"{1e3 * statistics.median(exports):.2f} ms wall)")

    if args.alone:
        alone(torch, optim)


def alone(torch: Any, optim: Any) -> None:
    """One optimizer step and one clip of breakout's MLP-128 parameters, shoal's and torch's,
    thread CPU, medians of 500."""
    torch.set_num_threads(1)
    shapes = ((128, 116), (128,), (128, 128), (128,), (3, 128), (3,), (1, 128), (1,))

    def params() -> list[torch.nn.Parameter]:
        out = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in out:
            p.grad = torch.randn_like(p)
        return out

    ours, theirs = params(), params()
    fused_adam = optim.FusedAdam(ours, lr=1e-3, fused=True)
    torch_adam = torch.optim.Adam(theirs, lr=1e-3, fused=True)
    fused_adam.step()
    torch_adam.step()

    def median_us(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(500):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        return 1e6 * statistics.median(times)

    print("alone (thread CPU, median of 500):")
    print(f"  optimizer step: FusedAdam {median_us(fused_adam.step):.0f} us, torch's fused Adam "
          f"{median_us(torch_adam.step):.0f} us")
    print(f"  gradient clip: clip_grad_norm {median_us(lambda: optim.clip_grad_norm(ours, 0.5)):.0f}"
          f" us, torch's clip_grad_norm_ "
          f"{median_us(lambda: torch.nn.utils.clip_grad_norm_(theirs, 0.5)):.0f} us")


if __name__ == "__main__":
    main()
