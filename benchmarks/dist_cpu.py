"""CPU time per epoch of every thread of a data-parallel job's ranks against one process: where a
rank spends the CPU that one process does not (valid on a loaded machine, unlike steps/s).

    python benchmarks/dist_cpu.py [--epochs 12] [--rounds 2] [-- EXTRA shoal train FLAGS]

Each round runs ``shoal train breakout`` (shipped config) in one process, then as a 2-rank
torchrun job with ``SHOAL_DIST_SPIN_MS=0`` (a rank waiting in a collective blocks, so waiting
costs no CPU). After 4 epochs of start-up it reads every thread's CPU seconds from
``/proc/PID/task/TID/stat`` (user + system), again ``--epochs`` epochs later, and prints each
process's threads by name in ms of CPU per epoch. Linux only; the clock tick (10 ms) over
``--epochs`` epochs is the resolution.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time

import job_control

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
START_EPOCHS = 4


def thread_seconds(pid: int) -> collections.Counter:
    """CPU seconds of each thread of ``pid``, summed by thread name."""
    out: collections.Counter = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue                      # the thread ended meanwhile
        out[name] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def epochs_done(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def measure(ranks: int, run_dir: str, epochs: int, extra: list[str]) -> list[dict[str, float]]:
    """Per process of the run: thread name -> ms of CPU per epoch."""
    flags = ["train", "breakout", "--log.dashboard", "off", "--run-dir", run_dir,
             "--log.checkpoint-interval", "1000000", "--train.total-steps", str(10 ** 12), *extra]
    if ranks == 1:
        module, args = "shoal", flags
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        module, args = "torch.distributed.run", [
            "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1", "--master-port",
            str(port), "-m", "shoal", *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", SHOAL_DIST_SPIN_MS="0")
    # none of it outlives this script (job_control: killed, interrupted or timed out)
    proc = job_control.start(module, *args, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        while epochs_done(run_dir) < START_EPOCHS:
            if proc.poll() is not None:
                raise SystemExit(f"the run failed:\n{proc.stderr.read()[-3000:]}")
            time.sleep(0.05)
        if ranks == 1:
            pids = [proc.pid]
        else:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                pids = [int(p) for p in fh.read().split()]
        first, before = epochs_done(run_dir), [thread_seconds(p) for p in pids]
        while epochs_done(run_dir) < first + epochs:
            time.sleep(0.02)
        last, after = epochs_done(run_dir), [thread_seconds(p) for p in pids]
    finally:
        job_control.end(proc)       # torchrun, its ranks and their env workers
    return [{name: 1000 * (b[name] - a.get(name, 0.0)) / (last - first) for name in sorted(b)}
            for a, b in zip(before, after)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs measured (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("extra", nargs="*", help="more `shoal train` flags (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-dist-cpu-") as tmp, job_control.ending_jobs():
        for r in range(args.rounds):
            for ranks in (1, 2):
                label = "1 process" if ranks == 1 else "2 ranks"
                for i, threads in enumerate(measure(ranks, os.path.join(tmp, f"{r}-{ranks}"),
                                                    args.epochs, args.extra)):
                    who = label if ranks == 1 else f"{label}, rank {i}"
                    print(f"round {r + 1}, {who}: " + ", ".join(
                        f"{name} {ms:.1f}" for name, ms in threads.items()) +
                        "  (ms CPU per epoch)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
