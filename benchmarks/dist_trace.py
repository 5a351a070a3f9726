"""Where a data-parallel job's time inside collectives goes: waiting for the other ranks
(load imbalance) or moving data.

    python benchmarks/dist_trace.py [--epochs 20] [--skip 5] [-- EXTRA shoal train FLAGS]
    python benchmarks/dist_trace.py --read DIR      # a trace written earlier

Runs ``torchrun --nproc-per-node 2 -m shoal train breakout`` with ``SHOAL_DIST_TRACE=DIR``: each
rank writes one line per collective (call site, bytes, entry and exit times on the machine's
monotonic clock, shared by the ranks of one machine). The ranks run the same collectives in the
same order, so the k-th line of every rank is one collective: the last rank to enter it starts
it; a rank's time before that is *waiting* (it was ahead), its time after is *transfer*
(the collective itself: copies, the loopback round trips, waking up).

Printed per call site, per epoch (the first ``--skip`` epochs left out, start-up): how many
collectives, their bytes, and the ranks' mean waiting and transfer time in ms.

breakout's shipped config is the fused rollout with overlap and ``train.precision = "auto"``
(docs/train.md, "Shipped settings"); ``-- --train.rollout torch --train.overlap false
--train.precision float32`` traces the synchronous torch path instead.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile

BATCH = 256 * 64      # breakout's shipped per-rank batch (env.num_envs x train.horizon)
# the collective that ends an epoch (the last gradient all-reduce, carrying the epoch's
# statistics and stop votes: shoal.trainer.distributed.EPOCH_END_MARK) marks epochs
EPOCH_SITE = "[epoch end]"
# code before that: the stop flag's all-reduce, after the epoch (a trace of it read with --read)
OLD_EPOCH_SITE = "@ _train:"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(trace_dir: str, epochs: int, extra: list[str]) -> None:
    run_dir = os.path.join(trace_dir, "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "shoal", "train", "breakout", "--log.dashboard", "off", "--run-dir", run_dir,
           "--log.checkpoint-interval", "1000000",
           "--train.total-steps", str(epochs * BATCH * 2), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", SHOAL_DIST_TRACE=trace_dir)
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def analyse(trace_dir: str, skip: int) -> str:
    ranks = []
    for name in sorted(os.listdir(trace_dir)):
        if name.startswith("collectives.rank") and name.endswith(".jsonl"):
            with open(os.path.join(trace_dir, name), encoding="utf-8") as fh:
                ranks.append([json.loads(line) for line in fh if line.strip()])
    if len(ranks) < 2:
        raise SystemExit(f"{trace_dir}: no traces of two ranks (collectives.rank*.jsonl)")
    lengths = {len(r) for r in ranks}
    if len(lengths) != 1:
        raise SystemExit(f"ranks ran different numbers of collectives: {sorted(lengths)}")
    wait = collections.defaultdict(float)
    transfer = collections.defaultdict(float)
    count = collections.Counter()
    nbytes: dict[str, int] = {}
    # the k-th mark ends epoch k; what follows the last mark (the final checkpoint) is left out
    marks = [i for i, c in enumerate(ranks[0]) if EPOCH_SITE in c["what"]]
    marks = marks or [i for i, c in enumerate(ranks[0]) if OLD_EPOCH_SITE in c["what"]]
    if len(marks) <= skip + 1:
        raise SystemExit(f"{len(marks)} epochs traced: run more than {skip + 1}")
    epochs = len(marks) - skip
    for calls in list(zip(*ranks))[marks[skip - 1] + 1 if skip else 0:marks[-1] + 1]:
        site = calls[0]["what"]
        if any(c["what"].split(" @ ")[0] != site.split(" @ ")[0] for c in calls):
            raise SystemExit(f"ranks disagree on a collective: {[c['what'] for c in calls]}")
        last = max(c["enter"] for c in calls)
        count[site] += 1
        nbytes[site] = calls[0]["bytes"]
        for c in calls:
            wait[site] += (last - c["enter"]) / len(calls)
            transfer[site] += (c["exit"] - last) / len(calls)
    start = ranks[0][marks[skip - 1]]["exit"] if skip else ranks[0][0]["enter"]
    epoch_ms = 1000 * (ranks[0][marks[-1]]["exit"] - start) / epochs
    lines = [f"{epochs} epochs traced (first {skip} skipped); an epoch takes "
             f"{epoch_ms:.1f} ms",
             f"{'call site':<52} {'/epoch':>7} {'bytes':>8} {'wait ms':>8} {'xfer ms':>8}"]
    for site in sorted(count, key=lambda s: -(wait[s] + transfer[s])):
        lines.append(f"{site:<52} {count[site] / epochs:>7.1f} {nbytes[site]:>8} "
                     f"{1000 * wait[site] / epochs:>8.2f} "
                     f"{1000 * transfer[site] / epochs:>8.2f}")
    total_w = 1000 * sum(wait.values()) / epochs
    total_t = 1000 * sum(transfer.values()) / epochs
    lines.append(f"{'total':<52} {sum(count.values()) / epochs:>7.1f} {'':>8} "
                 f"{total_w:>8.2f} {total_t:>8.2f}   "
                 f"({100 * (total_w + total_t) / epoch_ms:.1f}% of an epoch)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs to run (default 20)")
    parser.add_argument("--skip", type=int, default=5, help="first epochs left out (default 5, "
                        "at least 1: the first holds the start-up)")
    parser.add_argument("--read", metavar="DIR", help="analyse the trace in DIR, run nothing")
    parser.add_argument("extra", nargs="*", help="more `shoal train` flags (after --)")
    args = parser.parse_args(argv)
    if args.read:
        print(analyse(args.read, args.skip))
        return 0
    with tempfile.TemporaryDirectory(prefix="shoal-dist-trace-") as tmp:
        record(tmp, args.epochs, args.extra)
        print(analyse(tmp, args.skip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
