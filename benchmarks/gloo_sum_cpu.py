"""CPU per gradient sum of 2 gloo ranks, by thread, for three ways to sum a breakout-sized
gradient (33,028 float32, the trainer's flat buffer): gloo's all-reduce (what the trainer runs),
an all-gather into one tensor plus a local sum, and a send/recv exchange plus a local sum (one
message each way, no gloo worker thread). Per-thread CPU is valid on a loaded machine; the wall
times it prints are not.

    python benchmarks/gloo_sum_cpu.py [--sums 400] [--lag-ms 0.5]

It starts its own 2-rank torchrun job on a loopback port. Each sum is preceded by ~1 ms of busy
work, the two ranks taking turns to arrive ``--lag-ms`` later (as a minibatch's compute jitters),
and the rank polls the collective as the trainer does. Printed for rank 0: ms of wall time and
microseconds of CPU per sum, of the calling thread (beyond the busy work: starting, polling or
waiting, summing), gloo's TCP loop and gloo's worker threads.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

NUMEL = 33_028      # breakout's gradient (32,004) and the riding slots of a minibatch


def _thread_cpu_ms() -> dict[str, float]:
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                name = fh.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                ran = int(fh.read().split()[0])
        except OSError:
            continue
        name = "caller" if "gloo" not in name else name
        out[name] = out.get(name, 0.0) + ran / 1e6
    return out


def worker(sums: int, lag_ms: float) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, peer = dist.get_rank(), 1 - dist.get_rank()
    flat = torch.randn(NUMEL)
    gathered = torch.empty(2 * NUMEL)
    other = torch.empty(NUMEL)

    def poll(work) -> None:
        while not work.is_completed():
            os.sched_yield()
        work.wait()

    def all_reduce() -> None:
        poll(dist.all_reduce(flat, async_op=True))

    def gather_sum() -> None:
        poll(dist.all_gather_into_tensor(gathered, flat, async_op=True))
        torch.sum(gathered.view(2, NUMEL), 0, out=flat)

    def exchange() -> None:     # a received message cannot be polled: wait blocks
        works = [dist.isend(flat, peer), dist.irecv(other, peer)]
        for work in works:
            work.wait()
        flat.add_(other)

    busy_cpu = [0.0]

    def busy(ms: float) -> None:
        start, end = time.thread_time(), time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        busy_cpu[0] += time.thread_time() - start

    for name, fn in [("all-reduce", all_reduce), ("all-gather + sum", gather_sum),
                     ("send/recv exchange", exchange)] * 2:
        for _ in range(20):
            fn()
        dist.barrier()
        busy_cpu[0] = 0.0
        before, start = _thread_cpu_ms(), time.perf_counter()
        for i in range(sums):
            busy(1.0 + (lag_ms if (i + rank) % 2 else 0.0))
            fn()
        wall, after = time.perf_counter() - start, _thread_cpu_ms()
        if rank == 0:
            cpu = {k: 1000 * (after[k] - before.get(k, 0.0)) / sums for k in sorted(after)}
            cpu["caller"] -= 1e6 * busy_cpu[0] / sums     # its own work, not the sum's
            print(f"{name:20s} {1000 * wall / sums:6.2f} ms per sum (wall, incl. "
                  f"{1 + lag_ms / 2:.2f} ms busy work); CPU per sum: " +
                  ", ".join(f"{k} {v:.0f} us" for k, v in cpu.items()), flush=True)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sums", type=int, default=400, help="sums per method and pass")
    parser.add_argument("--lag-ms", type=float, default=0.5,
                        help="how much later the late rank arrives (default 0.5)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.sums, args.lag_ms)
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), os.path.abspath(__file__),
           "--worker", "--sums", str(args.sums), "--lag-ms", str(args.lag_ms)]
    return subprocess.run(cmd, env=env, timeout=600).returncode


if __name__ == "__main__":
    sys.exit(main())
