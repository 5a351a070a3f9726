"""CPU time per epoch of every thread of a data-parallel job's ranks against one process and
against two independent processes running at the same time: where a rank spends the CPU that a
process does not (valid on a loaded machine, unlike steps/s).

    python benchmarks/dist_cpu.py [--epochs 12] [--rounds 2] [--baseline SRC]
                                  [--variant VAR=VALUE] [-- EXTRA shoal train FLAGS]

Each round runs ``shoal train breakout`` (shipped config) in one process (``single``), as two
independent processes at once (``pair``: the reference a rank compares with, since the two
processes share the machine's caches and memory bandwidth as two ranks do), then as a 2-rank
torchrun job with ``SHOAL_DIST_SPIN_MS=0`` (a rank waiting in a gloo collective blocks, and one
waiting for a gradient sum in shared memory sleeps between looks, so waiting costs next to no
CPU; ``--variant SHOAL_DIST_SHM=0`` compares the two ways of summing gradients);
``--baseline SRC`` adds the 2-rank job of another built checkout, ``--variant VAR=VALUE`` this
code's 2-rank job with that variable set. After 4 epochs of start-up it reads
every thread's CPU time (``/proc/PID/task/TID/schedstat``: nanoseconds on a CPU and waiting
runnable for one; ``stat``'s clock ticks where schedstat is missing), again ``--epochs`` epochs
later, and prints each process's threads by name in ms per epoch, then the medians over rounds
of the trainer thread's CPU (the main thread, ``trainer``), of the other threads' (gloo's), and
of the trainer thread's run-queue wait (runnable while another thread had the CPU) and moves
(migrations to another CPU and preemptions, from ``/proc/.../sched``). Linux only.

breakout's shipped config is the fused rollout with overlap and ``train.precision = "auto"``
(docs/train.md, "Shipped settings"); ``-- --train.rollout torch --train.overlap false
--train.precision float32`` runs the synchronous torch path instead, which is also what a
``--baseline`` checkout from before that change ships (pin the same path on both sides). With
overlap the rollout thread (``python``) counts among the other threads.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import job_control

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
START_EPOCHS = 4
TRAINER_THREAD = "trainer"      # what the main thread is called here (it runs the trainer)


def thread_seconds(pid: int) -> tuple[collections.Counter, collections.Counter,
                                       collections.Counter]:
    """``(cpu, runqueue, moves)``: seconds each thread of ``pid`` ran and waited runnable, and
    the times it was moved to another CPU or preempted (``/proc/.../sched``: nr_migrations +
    nr_involuntary_switches), summed by thread name (empty where the kernel does not say)."""
    cpu: collections.Counter = collections.Counter()
    queued: collections.Counter = collections.Counter()
    moves: collections.Counter = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = TRAINER_THREAD if int(tid) == pid else fh.read().strip()
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    ran, waited = (int(x) for x in fh.read().split()[:2])
                cpu[name] += ran / 1e9
                queued[name] += waited / 1e9
            except FileNotFoundError:
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                cpu[name] += (int(fields[11]) + int(fields[12])) / TICK
            try:
                with open(f"/proc/{pid}/task/{tid}/sched") as fh:
                    for line in fh:
                        key, _, value = line.partition(":")
                        if key.strip() in ("se.nr_migrations", "nr_involuntary_switches"):
                            moves[name] += int(float(value))
            except FileNotFoundError:
                pass
        except OSError:
            continue                      # the thread ended meanwhile
    return cpu, queued, moves


def epochs_done(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def _start(ranks: int, run_dir: str, extra: list[str], source: str | None,
           variables: dict[str, str]) -> "subprocess.Popen":
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
    env = dict(os.environ, OMP_NUM_THREADS="1", SHOAL_DIST_SPIN_MS="0", **variables)
    if source:      # that checkout's shoal, not this one's
        env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # none of it outlives this script (job_control: killed, interrupted or timed out)
    return job_control.start(module, *args, env=env, cwd=source, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)


def measure(kind: str, run_dir: str, epochs: int, extra: list[str], source: str | None = None,
            variables: dict[str, str] | None = None) -> list[dict[str, dict[str, float]]]:
    """Per process of the run (``kind``: single, pair or ranks): {"cpu": thread name -> ms of
    CPU per epoch, "queued": thread name -> ms waiting runnable per epoch}."""
    ranks = 2 if kind == "ranks" else 1
    dirs = [os.path.join(run_dir, str(i)) for i in range(2 if kind == "pair" else 1)]
    procs = [_start(ranks, d, extra, source, variables or {}) for d in dirs]
    try:
        while min(epochs_done(d) for d in dirs) < START_EPOCHS:
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit(f"the run failed:\n{proc.stderr.read()[-3000:]}")
            time.sleep(0.05)
        if ranks == 1:
            pids, logs = [p.pid for p in procs], dirs
        else:
            with open(f"/proc/{procs[0].pid}/task/{procs[0].pid}/children") as fh:
                pids = [int(p) for p in fh.read().split()]
            logs = dirs * len(pids)     # rank 0 logs the job's epochs
        first = [epochs_done(d) for d in logs]
        before = [thread_seconds(p) for p in pids]
        after: list = [None] * len(pids)
        last = list(first)
        # each process is read once it has done its epochs; the others keep running meanwhile
        while any(a is None for a in after):
            for i, (pid, d) in enumerate(zip(pids, logs)):
                if after[i] is None and epochs_done(d) >= first[i] + epochs:
                    last[i], after[i] = epochs_done(d), thread_seconds(pid)
            time.sleep(0.02)
    finally:
        for proc in procs:
            job_control.end(proc)       # the runs, torchrun's ranks and their env workers
    out = []
    for (cpu0, q0, m0), (cpu1, q1, m1), n0, n1 in zip(before, after, first, last):
        n = max(1, n1 - n0)
        out.append({"cpu": {k: 1000 * (cpu1[k] - cpu0.get(k, 0.0)) / n for k in sorted(cpu1)},
                    "queued": {k: 1000 * (q1[k] - q0.get(k, 0.0)) / n for k in sorted(q1)},
                    "moves": {k: (m1[k] - m0.get(k, 0)) / n for k in sorted(m1)}})
    return out


def _summary(per_process: list[dict[str, dict[str, float]]]
             ) -> tuple[float, float, float, float]:
    """Means over a run's processes: trainer thread CPU, other threads' CPU, trainer queued,
    trainer moves (migrations + preemptions)."""
    trainer = [p["cpu"].get(TRAINER_THREAD, 0.0) for p in per_process]
    other = [sum(v for k, v in p["cpu"].items() if k != TRAINER_THREAD) for p in per_process]
    queued = [p["queued"].get(TRAINER_THREAD, 0.0) for p in per_process]
    moves = [p["moves"].get(TRAINER_THREAD, 0.0) for p in per_process]
    return (statistics.mean(trainer), statistics.mean(other), statistics.mean(queued),
            statistics.mean(moves))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs measured (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--baseline", metavar="SRC",
                        help="another built shoal checkout: its 2-rank job is measured too")
    parser.add_argument("--variant", metavar="VAR=VALUE",
                        help="also measure this code's 2-rank job with VAR=VALUE set")
    parser.add_argument("--no-pair", action="store_true",
                        help="skip the two independent processes (the fairer reference)")
    parser.add_argument("extra", nargs="*", help="more `shoal train` flags (after --)")
    args = parser.parse_args(argv)
    variant = job_control.checked_baseline_and_variant(parser, args)
    kinds = ["single"] + ([] if args.no_pair else ["pair"]) + ["ranks"] + \
        (["base"] if args.baseline else []) + (["variant"] if variant else [])
    labels = {"single": "1 process", "pair": "2 independent processes", "ranks": "2 ranks",
              "base": f"2 ranks, {args.baseline}", "variant": f"2 ranks, {args.variant}"}
    results: dict[str, list[tuple[float, ...]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="shoal-dist-cpu-") as tmp, job_control.ending_jobs():
        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]   # rotate: load hits all
            for kind in order:
                run = measure("ranks" if kind in ("base", "variant") else kind,
                              os.path.join(tmp, f"{r}-{kind}"), args.epochs, args.extra,
                              args.baseline if kind == "base" else None,
                              variant if kind == "variant" else None)
                results[kind].append(_summary(run))
                for i, threads in enumerate(run):
                    who = labels[kind] + (f", process {i}" if len(run) > 1 else "")
                    print(f"round {r + 1}, {who}: " + ", ".join(
                        f"{name} {ms:.1f}" for name, ms in threads["cpu"].items()) +
                        f"  (ms CPU per epoch; trainer thread queued "
                        f"{threads['queued'].get(TRAINER_THREAD, 0.0):.1f} ms, moved "
                        f"{threads['moves'].get(TRAINER_THREAD, 0.0):.1f} times)", flush=True)
    print(f"\nmedians over {args.rounds} rounds, ms per epoch (per process, mean of a run's "
          f"processes):")
    print(f"  {'':32} {'trainer CPU':>12} {'other threads':>14} {'trainer queued':>15} "
          f"{'trainer moved':>14}")
    for kind in kinds:
        trainer, other, queued, moves = (statistics.median(x[i] for x in results[kind])
                                         for i in range(4))
        print(f"  {labels[kind]:32} {trainer:12.1f} {other:14.1f} {queued:15.1f} {moves:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
