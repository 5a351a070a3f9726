"""Data-parallel scaling on this machine: 2 ranks vs 1 on breakout, against the machine's own
2-process scaling measured in the same run.

    python benchmarks/dist_bench.py [--epochs 30] [--rounds 3] [--baseline SRC]
                                    [--variant VAR=VALUE] [-- EXTRA shoal train FLAGS]

Three configurations alternate, round after round, each `shoal train breakout` with the
shipped config (per rank: 256 envs x 64 steps, minibatch 2048, one torch thread; the pipelined
fused rollout and ``train.precision = "auto"``, docs/train.md, "Shipped settings"; the figures
in BENCHMARKS.md before it were of the overlapped path: ``-- --train.overlap true
--train.minibatches draws``).
``-- --train.rollout torch --train.overlap false --train.precision float32`` runs the
synchronous torch path instead, which is also what a ``--baseline`` checkout from before that
change ships (pin the same path on both sides):

``single``  one process alone;
``pair``    two independent single processes at the same time (no communication): their summed
            steps/s is what this machine can give two processes, the ceiling of any 2-rank job;
``ranks``   ``torchrun --nproc-per-node 2``: one job of 2 ranks (gloo), batch twice a rank's;
``base``    with ``--baseline SRC`` (another built checkout of shoal, e.g. an older commit in a
            ``git worktree``): the same 2-rank job of that code, for a before/after in one run;
``variant`` with ``--variant VAR=VALUE``: the same 2-rank job of this code with that environment
            variable set (e.g. ``SHOAL_DIST_SPIN_MS=0``: ranks block in collectives at once).

Each run trains ``--epochs`` epochs; its steps/s is the median over the second half of them
(metrics.jsonl ``sps``: the job's steps per epoch over the epoch's wall time). Printed: the
medians over rounds, the machine's scaling (pair / single), the job's scaling (ranks / single),
the efficiency ranks / pair (target >= 0.9) and the communication share of a 2-rank epoch
(time inside collectives, which includes waiting for the slower rank, over the epoch).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile

import job_control
from run_records import read_jsonl

BATCH = 256 * 64      # breakout's shipped per-rank batch (env.num_envs x train.horizon)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(run_dir: str) -> list[dict]:
    return read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def _later(records: list[dict]) -> list[dict]:
    return records[len(records) // 2:] or records


def _start(cmd_tail: list[str], run_dir: str, epochs: int, ranks: int, extra: list[str],
           source: str | None = None, variables: dict[str, str] | None = None
           ) -> subprocess.Popen:
    flags = ["train", "breakout", "--log.dashboard", "off", "--run-dir", run_dir,
             "--log.checkpoint-interval", "1000000",
             "--train.total-steps", str(epochs * BATCH * ranks), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(variables or {}))
    if source:      # that checkout's shoal, not this one's
        env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if ranks == 1:
        module, args = "shoal", flags
    else:
        module, args = "torch.distributed.run", [
            "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "-m", "shoal", *flags]
    # none of it outlives this script (job_control: killed, interrupted or timed out)
    return job_control.start(module, *args, env=env, cwd=source, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a run failed (exit {p.returncode}):\n{err[-3000:]}")


def run_single(tmp: str, epochs: int, extra: list[str]) -> float:
    d = tempfile.mkdtemp(dir=tmp)
    _wait([_start([], d, epochs, 1, extra)])
    return statistics.median(r["sps"] for r in _later(_records(d)))


def run_pair(tmp: str, epochs: int, extra: list[str]) -> float:
    dirs = [tempfile.mkdtemp(dir=tmp) for _ in range(2)]
    procs = [_start([], d, epochs, 1, extra) for d in dirs]
    _wait(procs)
    # the second half of each run, when both were surely running
    return sum(statistics.median(r["sps"] for r in _later(_records(d))) for d in dirs)


def run_ranks(tmp: str, epochs: int, extra: list[str], source: str | None = None,
              variables: dict[str, str] | None = None) -> tuple[float, float]:
    d = tempfile.mkdtemp(dir=tmp)
    _wait([_start([], d, epochs, 2, extra, source, variables)])
    later = _later(_records(d))
    comm = statistics.median(r["time"].get("comm", 0.0) / max(sum(r["time"].values()), 1e-9)
                             for r in later)
    return statistics.median(r["sps"] for r in later), comm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--baseline", metavar="SRC",
                        help="another built shoal checkout: its 2-rank job runs too (before/after)")
    parser.add_argument("--variant", metavar="VAR=VALUE",
                        help="also run the 2-rank job of this code with VAR=VALUE in its "
                        "environment (e.g. SHOAL_DIST_SPIN_MS=0)")
    parser.add_argument("extra", nargs="*", help="more `shoal train` flags (after --)")
    args = parser.parse_args(argv)
    variant = job_control.checked_baseline_and_variant(parser, args)
    results: dict[str, list[float]] = {"single": [], "pair": [], "ranks": [], "comm": [],
                                       "base": [], "base_comm": [], "variant": [],
                                       "variant_comm": []}
    with tempfile.TemporaryDirectory(prefix="shoal-dist-bench-") as tmp, \
            job_control.ending_jobs():
        for r in range(args.rounds):
            order = ["single", "pair", "ranks"] + (["base"] if args.baseline else []) + \
                (["variant"] if variant else [])
            shift = r % len(order)
            order = order[shift:] + order[:shift]          # rotate: load hits all alike
            for name in order:
                if name == "single":
                    results["single"].append(run_single(tmp, args.epochs, args.extra))
                elif name == "pair":
                    results["pair"].append(run_pair(tmp, args.epochs, args.extra))
                elif name == "ranks":
                    sps, comm = run_ranks(tmp, args.epochs, args.extra)
                    results["ranks"].append(sps)
                    results["comm"].append(comm)
                elif name == "base":
                    sps, comm = run_ranks(tmp, args.epochs, args.extra, args.baseline)
                    results["base"].append(sps)
                    results["base_comm"].append(comm)
                else:
                    sps, comm = run_ranks(tmp, args.epochs, args.extra, variables=variant)
                    results["variant"].append(sps)
                    results["variant_comm"].append(comm)
            base = (f"  baseline 2 ranks {results['base'][-1]:,.0f} steps/s comm "
                    f"{100 * results['base_comm'][-1]:.1f}%") if args.baseline else ""
            other = (f"  {args.variant} 2 ranks {results['variant'][-1]:,.0f} steps/s comm "
                     f"{100 * results['variant_comm'][-1]:.1f}%") if variant else ""
            print(f"round {r + 1}: single {results['single'][-1]:,.0f}  pair (sum) "
                  f"{results['pair'][-1]:,.0f}  2 ranks {results['ranks'][-1]:,.0f} steps/s  "
                  f"comm {100 * results['comm'][-1]:.1f}%{base}{other}", flush=True)
    single = statistics.median(results["single"])
    pair = statistics.median(results["pair"])
    ranks = statistics.median(results["ranks"])
    comm = statistics.median(results["comm"])
    flags = f" with {' '.join(args.extra)}" if args.extra else ""
    print(f"\nmedians over {args.rounds} rounds (breakout, shipped config per rank{flags}):")
    print(f"  1 process                 {single:>10,.0f} steps/s")
    print(f"  2 independent processes   {pair:>10,.0f} steps/s  machine scaling "
          f"{pair / single:.2f}x")
    print(f"  2 ranks (torchrun)        {ranks:>10,.0f} steps/s  job scaling "
          f"{ranks / single:.2f}x")
    print(f"  efficiency (2 ranks / 2 independent processes): {ranks / pair:.2f} (target >= 0.9)")
    print(f"  communication share of a 2-rank epoch: {100 * comm:.1f}%")
    if args.baseline:
        base = statistics.median(results["base"])
        base_comm = statistics.median(results["base_comm"])
        print(f"  baseline 2 ranks ({args.baseline}): {base:,.0f} steps/s, efficiency "
              f"{base / pair:.2f}, communication {100 * base_comm:.1f}%; this checkout / "
              f"baseline: {ranks / base:.2f}x")
    if variant:
        var = statistics.median(results["variant"])
        var_comm = statistics.median(results["variant_comm"])
        print(f"  2 ranks with {args.variant}: {var:,.0f} steps/s, efficiency {var / pair:.2f}, "
              f"communication {100 * var_comm:.1f}%; this checkout as it is / with "
              f"{args.variant}: {ranks / var:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
