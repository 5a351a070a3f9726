"""CPU of the work a data-parallel rank does per minibatch around its gradient all-reduce (not
the collective itself), this checkout against another: this rank's share of the next
minibatch's statistics, the gradients into the flat buffer with the share's slot, the summed
gradients back out, and the job's moments from the summed slots. One process, no collective
(the buffer stands in for a summed one), so it is valid on a loaded machine.

    python benchmarks/dist_minibatch_cpu.py --baseline SRC [--rounds 3] [--minibatches 3000]

SRC: another shoal checkout (e.g. ``git worktree add /tmp/base 0a8eb5b``) whose
``shoal/trainer/distributed.py`` still has the concatenating ``sum_gradients`` (``rank_share``,
``_encode_slot``, ``_decode_rows``, ``job_moments``). Gradient shapes: the shipped breakout MLP
(32,004 float32 in 8 tensors); a minibatch of 32 segments x 64 steps. Both ways must give the
same moments (checked), then alternate, ``--rounds`` times; printed: microseconds of thread CPU
per minibatch, and the medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the shipped breakout MLP's parameters (116 observations, hidden 128, 3 actions, a value)
SHAPES = [(128, 116), (128,), (128, 128), (128,), (3, 128), (3,), (1, 128), (1,)]


def _load(root: str, name: str):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(root, "shoal", "trainer", "distributed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="SRC", required=True,
                        help="another shoal checkout (its distributed.py is compared)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--minibatches", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base, this = _load(args.baseline, "base_distributed"), _load(REPO, "this_distributed")
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=g) for shape in SHAPES]
    adv = torch.randn(32, 64, generator=g)
    masks = (torch.rand(32, 64, generator=g) < 0.9).float()
    peak = torch.tensor(1.3, dtype=torch.float64)

    def before():   # the code before: a new concatenated buffer, a loop per tensor back
        share = base.rank_share(adv, masks, peak)
        flat = torch.cat([x.reshape(-1) for x in grads] + [base._encode_slot(share, 0, 2)])
        offset = 0
        for x in grads:
            n = x.numel()
            x.copy_(flat[offset:offset + n].view_as(x))
            offset += n
        rows = base._decode_rows(flat[offset:], 2, share.shape)
        return base.job_moments(rows, rows[0])

    ranks = this.Collective.__new__(this.Collective)    # only its kept buffers are used
    ranks.rank, ranks.world_size, ranks._buckets = 0, 2, {}

    def after():    # this checkout: the kept buffer, one copy call each way
        share = this.rank_share(adv, masks, peak)
        bucket = ranks._bucket(grads, this._slot_size(share.numel(), 2))
        torch._foreach_copy_(bucket.grad_views, grads)
        this._encode_slot(share, 0, 2, out=bucket.flat[bucket.grads_numel:])
        torch._foreach_copy_(grads, bucket.grad_views)
        return this._riding_moments(bucket.flat[bucket.grads_numel:], 2, share.shape, 0)

    if not all(torch.equal(x, y) for x, y in zip(before(), after())):
        raise SystemExit("the two ways give different moments")
    times: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name, fn in (("before", before), ("after", after)):
            for _ in range(200):
                fn()
            start = time.thread_time()
            for _ in range(args.minibatches):
                fn()
            times[name].append(1e6 * (time.thread_time() - start) / args.minibatches)
        print(f"round {r + 1}: {args.baseline} {times['before'][-1]:.0f} us, this checkout "
              f"{times['after'][-1]:.0f} us per minibatch", flush=True)
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"median: {b:.0f} -> {a:.0f} us per minibatch ({b - a:.0f} us saved; x8 minibatches "
          f"= {8 * (b - a) / 1000:.2f} ms per breakout epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
