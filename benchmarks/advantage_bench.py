"""Times the advantage implementations on one rollout-sized batch.

    python benchmarks/advantage_bench.py [--segments 8192] [--horizon 64] [--rounds 30]

The C kernel (through compute_advantages, which picks the thread count, and called directly
with 1 and 2 threads), the torch path and the numpy reference run in alternation, round after
round, so load from other processes hits them all alike; the first candidate rotates each
round, so none always runs on caches the reference just flushed. Prints medians (and minima)
per call and the ratio of each median to the first row's. All use float32 CPU inputs with
V-trace ratios and 2% dones. Other processes on the machine skew these: check `uptime`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from shoal.trainer import advantage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8192, help="S (rows)")
    parser.add_argument("--horizon", type=int, default=64, help="T (steps per segment)")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds to time")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the torch path (default: torch's own)")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    S, T = args.segments, args.horizon
    g = torch.Generator().manual_seed(0)
    values = torch.randn(S, T + 1, generator=g)
    rewards = torch.randn(S, T, generator=g)
    dones = (torch.rand(S, T, generator=g) < 0.02).float()
    ratio = torch.exp(0.2 * torch.randn(S, T, generator=g))
    out = torch.empty(S, T)
    np_inputs = [x.numpy() for x in (values, rewards, dones, ratio)]
    kw = dict(gamma=0.99, lam=0.95, rho_clip=1.0, c_clip=1.0)

    candidates = {}
    if advantage.c_kernel_available():
        from shoal.trainer import _advantage

        out_np = out.numpy()
        candidates["C via compute_adv."] = lambda: advantage.compute_advantages(
            values, rewards, dones, ratio, out=out, **kw)
        candidates["C kernel, 1 thread"] = lambda: _advantage.compute(
            *np_inputs, out_np, 0.99, 0.95, 1.0, 1.0, num_threads=1)
        candidates["C kernel, 2 threads"] = lambda: _advantage.compute(
            *np_inputs, out_np, 0.99, 0.95, 1.0, 1.0, num_threads=2)
    else:
        print("C kernel not built: SHOAL_ONLY=trainer python setup.py build_ext --inplace")
    candidates["torch path"] = lambda: advantage.advantages_torch(
        values, rewards, dones, ratio, out=out, **kw)
    candidates["numpy reference"] = lambda: advantage.advantages_reference(*np_inputs, **kw)

    for fn in candidates.values():  # warm up (first-call allocation, page faults)
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(args.rounds):
        # Rotate who goes first: whoever follows the slow numpy reference finds cold caches.
        for name in order[r % len(order):] + order[:r % len(order)]:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)

    steps = S * T
    base = statistics.median(times[next(iter(candidates))])
    print(f"S={S} T={T} ({steps:,} steps), {args.rounds} alternating rounds, "
          f"torch threads={torch.get_num_threads()}")
    print(f"{'implementation':<20} {'median ms':>10} {'min ms':>8} {'Msteps/s':>9} {'x first':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<20} {med * 1e3:>10.3f} {min(ts) * 1e3:>8.3f} {steps / med / 1e6:>9.1f} "
              f"{med / base:>8.2f}")


if __name__ == "__main__":
    main()
