"""How far the pipelined learner (breakout's shipped path) is from its floor on this machine,
and what a second learner thread gives and costs: the figures behind BENCHMARKS.md, "The
update's tail on both cores, without the spin" (its paragraphs on the spin and the learner's
floor).

    python benchmarks/learner_floor.py
    python benchmarks/learner_floor.py --rounds 5 --steps 40

Three parts, each on one torch thread unless it says otherwise, medians over ``--rounds``:

1. Matrix products at the learner's shapes (breakout's MLP-128 on a minibatch of 2,048 steps:
   forward, input gradient, weight gradient) against a large product of the same dtype, which
   is the machine's ceiling for it: how close the learner's products already are.
2. One gradient step of breakout's shipped learner (bfloat16 products where the CPU has the
   units), on a gathered minibatch, with nothing else running: on one torch thread and on two
   (what the update's last steps get with ``train.overlap_tail_threads = 2`` once the rollout
   thread is done), alternating; and whether the two compute the same loss and gradients, bit
   for bit (on one machine they may, on another round differently).
3. The CPU that torch's OpenMP worker burns after a parallel region on two threads, while the
   process sleeps (GNU OpenMP spin-waits before it sleeps): the core the pipeline's rollout
   thread needs at the next epoch's start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def products(rounds: int) -> None:
    import torch

    from shoal.trainer.policies import cpu_bfloat16_units

    torch.set_num_threads(1)
    dtypes = [torch.float32] + ([torch.bfloat16] if cpu_bfloat16_units() else [])
    shapes = {"forward [2048,128]x[128,128]": (2048, 128, 128),
              "weight grad [128,2048]x[2048,128]": (128, 2048, 128),
              "first layer [2048,116]x[116,128]": (2048, 116, 128),
              "large [4096,512]x[512,512] (ceiling)": (4096, 512, 512)}
    print("1. matrix products, one torch thread (GFLOP/s, medians of "
          f"{rounds} rounds; % of the large product's)")
    for dtype in dtypes:
        rates: dict[str, list[float]] = {name: [] for name in shapes}
        for _ in range(rounds):
            for name, (m, k, n) in shapes.items():
                a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
                repeats = max(5, int(2e8 / (2 * m * k * n)))
                rates[name].append(2 * m * k * n / _seconds(lambda: a @ b, repeats) / 1e9)
        ceiling = statistics.median(rates[list(shapes)[-1]])
        for name in shapes:
            rate = statistics.median(rates[name])
            print(f"  {str(dtype).split('.')[-1]:8s} {name:38s} {rate:7.1f} GFLOP/s "
                  f"({100 * rate / ceiling:.0f}%)")


def gradient_steps(rounds: int, steps: int) -> None:
    import torch

    from shoal.trainer import ppo
    from shoal.trainer.cli import parse_args
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    parsed = parse_args(["breakout"])
    cfg = build_config("breakout", parsed["files"], overrides={
        "log.dashboard": "off", "log.run_dir": tempfile.mkdtemp(prefix="shoal-learner-floor-"),
        "log.checkpoint_interval": 10**6, "train.total_steps": 10**9,
        "train.pipeline": False})        # (the batch collected on both cores, then the update)
    trainer = Trainer(cfg)
    caught: dict = {}
    loss_fn = ppo.ppo_loss

    def catch(*args, **kwargs):
        caught.setdefault("args", args)
        return loss_fn(*args, **kwargs)

    params = list(trainer.policy.parameters())

    def step() -> list:
        loss, _, _ = loss_fn(*caught["args"])
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return [loss.detach()] + [p.grad for p in params]

    per: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    try:
        with trainer.process_state.active():
            ppo.ppo_loss = catch
            try:
                for _ in range(3):
                    trainer.run_epoch()
            finally:
                ppo.ppo_loss = loss_fn
            one = torch.get_num_threads()
            results = {}
            try:
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    results[threads] = step()
                same = all(torch.equal(a, b) for a, b in zip(results[1], results[2]))
                for _ in range(rounds):
                    for threads in (1, 2):
                        torch.set_num_threads(threads)
                        step()
                        c, t = time.process_time(), time.perf_counter()
                        for _ in range(steps):
                            step()
                        wall = time.perf_counter() - t
                        per[threads].append(wall / steps)
                        cpu[threads].append((time.process_time() - c) / wall)
            finally:
                torch.set_num_threads(one)
    finally:
        trainer.close()
    assert params and all(p.grad is not None for p in params)
    ms = {n: 1e3 * statistics.median(v) for n, v in per.items()}
    print(f"\n2. one gradient step of breakout's shipped learner (precision "
          f"{trainer.config.train.precision}), nothing else running, medians of {rounds} x {steps} steps")
    for n in (1, 2):
        print(f"  {n} torch thread{'s' if n > 1 else ' '}: {ms[n]:.2f} ms a step, CPU "
              f"{100 * statistics.median(cpu[n]):.0f}% of one core")
    print(f"  two threads / one: {ms[1] / ms[2]:.2f}x the steps/s; the loss and every "
          f"gradient {'the same' if same else 'NOT the same'} bit for bit on two threads as on one")


def openmp_spin(rounds: int) -> None:
    import torch

    torch.set_num_threads(2)
    a, b = torch.randn(2048, 128), torch.randn(128, 128)
    for _ in range(5):
        a @ b
    burned = []
    for _ in range(rounds):
        a @ b                       # a parallel region on two threads
        c = time.process_time()
        time.sleep(0.05)
        burned.append(time.process_time() - c)
    torch.set_num_threads(1)
    print(f"\n3. after a product on two torch threads, the process sleeping 50 ms burns "
          f"{1e3 * statistics.median(burned):.1f} ms of CPU (median of {rounds}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="part 2: gradient steps per round")
    args = ap.parse_args()
    products(args.rounds)
    gradient_steps(args.rounds, args.steps)
    openmp_spin(max(5, args.rounds))


if __name__ == "__main__":
    main()
