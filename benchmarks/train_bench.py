"""Training throughput and learning speed, shoal vs PufferLib 3.0, measured in the same run.

Two comparisons; in each the two trainers alternate, round after round, on the CPU:

``--mode sps``   the same network and batch shape: PufferLib's breakout setting (LSTM-128 policy,
                 8,192 envs x 64 steps = 524,288 steps per batch, minibatches of 32,768, one
                 pass). Reports the median training steps/s over the second half of each run
                 (the first half holds start-up and the first epochs), the ratio shoal /
                 PufferLib, and the fraction of the fp32 matmul ceiling reached, with the
                 ceiling measured in this run (GFLOP/s of a 4096x128 @ 128x512 matmul on all
                 torch threads, divided by the policy's FLOPs per trained step).
``--mode score`` each trainer with its own shipped defaults for the env (``shoal train ENV``;
                 ``puffer train puffer_ENV --vec.backend Serial``), for a fixed wall-clock
                 budget: the score curve against training time, the time to reach
                 ``--target`` and the score at the end.

shoal runs the env's shipped config (breakout's: the pipelined fused rollout, minibatches in
row ranges and ``train.precision = "auto"``; before, the fused rollout with overlap) plus the
flags. ``--variant NAME=FLAGS`` (repeatable) runs
several shoal configurations in the same rounds, each against the same PufferLib runs, e.g. the
synchronous float32 torch path, the shipped path, and the fused rollout with overlap and two
learner threads (docs/train.md, "Keeping both cores busy")::

    python benchmarks/train_bench.py --peer-python "$PY" --mode sps --seconds 40 --rounds 3 \\
        --variant sync="--train.rollout torch --train.overlap false --train.precision float32" \\
        --variant shipped= \\
        --variant cores="--train.rollout fused --train.overlap true --train.learner-threads 2 \\
--train.torch-threads 1"

The ``sps`` mode also measures a bfloat16 ceiling (the same matmul in bfloat16) and reports
each side's fraction of both.

shoal runs round r with ``--train.seed r`` (unless the flags set one), since its runs are
deterministic under a seed and PufferLib's are not. Time is each trainer's own clock from the start of training (shoal: ``elapsed`` in
metrics.jsonl; PufferLib: its dashboard's Uptime), so interpreter start-up is left out of both.

    PY=$(../shared/peers/setup_pufferlib.sh | tail -1)
    python benchmarks/train_bench.py --peer-python "$PY" --mode sps --seconds 60 --rounds 3
    python benchmarks/train_bench.py --peer-python "$PY" --mode score --env breakout \\
        --seconds 120 --rounds 3 --target 4 8 13 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from run_records import median_known

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "..", "..", "shared", "peers", "pufferlib_train_sps.py")

# shoal env -> PufferLib env (None: PufferLib 3.0 has no such env)
PEER_ENV = {"breakout": "breakout", "maze": "grid", "tetris": "tetris", "g2048": None,
            "drone": "drone"}

# PufferLib's breakout batch shape and network, as shoal flags (the `sps` comparison); torch on
# all cores (0), which this large batch wants (the shipped breakout config uses 1 thread); the
# minibatches drawn as in every recorded comparison (breakout.toml now ships row ranges)
SPS_FLAGS = ["--policy.name", "lstm", "--policy.hidden", "128", "--env.num-envs", "8192",
             "--train.horizon", "64", "--train.minibatch-size", "32768",
             "--train.update-epochs", "1", "--train.torch-threads", "0",
             "--train.minibatches", "draws"]


# ---- shoal ------------------------------------------------------------------------------------

def run_shoal(env: str, seconds: float, flags: list[str]) -> list[dict]:
    """Runs `shoal train` for ``seconds`` of training (Ctrl-C then; it finishes the epoch) and
    returns its metrics.jsonl records."""
    run_dir = tempfile.mkdtemp(prefix="shoal-train-bench-")
    cmd = [sys.executable, "-m", "shoal", "train", env, "--log.dashboard", "off",
           "--log.checkpoint-interval", "100000", "--log.run-dir", run_dir, *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            records = _read_jsonl(metrics_path)
            if records and records[-1]["elapsed"] >= seconds:
                os.killpg(proc.pid, signal.SIGINT)
                break
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    records = _read_jsonl(metrics_path)
    if not records:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"shoal train wrote no metrics: {' '.join(cmd)}\n{err[-2000:]}")
    out = []
    for r in records:  # up to the first epoch that ends past the budget
        out.append({"t": r["elapsed"], "steps": r["agent_steps"], "sps": r["sps"],
                    "score": r.get("score100")})
        if r["elapsed"] >= seconds:
            break
    return out


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


# ---- PufferLib --------------------------------------------------------------------------------

def run_peer(python: str, script: str, env: str, seconds: float, scratch: str) -> list[dict]:
    """Runs PufferLib's trainer through the peer script; parses its dashboard frames into
    records like run_shoal's. The peer's budget includes its start-up, so it gets 30 s more."""
    cmd = [python, script, env, "--seconds", str(seconds + 30)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=scratch).stdout
    log = json.loads(out.strip().splitlines()[-1])["log"]
    text = open(log, "rb").read().decode("utf8", "replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    records = []
    for frame in text.split("╭")[1:]:
        up = re.search(r"Uptime\s+((?:\d+h\s*)?(?:\d+m\s*)?(?:\d+s)?)\s", frame)
        steps = re.search(r"\bSteps\s+([0-9.]+[KMB]?)\s", frame)
        sps = re.search(r"\bSPS\s+([0-9.]+[KMB]?)\s", frame)
        score = re.search(r"\bscore\s+(-?[0-9.]+)\s", frame)
        if not (up and steps and sps):
            continue
        t = _seconds(up.group(1))
        if t is None or t > seconds * 1.05:
            continue
        records.append({"t": t, "steps": _number(steps.group(1)), "sps": _number(sps.group(1)),
                        "score": float(score.group(1)) if score else None})
    if not records:
        raise RuntimeError(f"no dashboard frames parsed from {log}")
    return records


def _number(text: str) -> float:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def _seconds(text: str) -> float | None:
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts:
        return None
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


# ---- summaries --------------------------------------------------------------------------------

def second_half_sps(records: list[dict]) -> float:
    """Median SPS of the records in the second half of the run's time."""
    end = records[-1]["t"]
    late = [r["sps"] for r in records if r["t"] >= end / 2] or [records[-1]["sps"]]
    return statistics.median(late)


def time_to(records: list[dict], target: float) -> float | None:
    for r in records:
        if r["score"] is not None and r["score"] >= target:
            return r["t"]
    return None


def final_score(records: list[dict]) -> float | None:
    scored = [r["score"] for r in records if r["score"] is not None]
    return scored[-1] if scored else None


def matmul_gflops(rounds: int = 20, dtype: str = "float32") -> float:
    """GFLOP/s of a [4096,128] @ [128,512] matmul in ``dtype`` on torch's default threads (the
    LSTM's shape), best of ``rounds``."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(4096, 128).to(kind), torch.randn(128, 512).to(kind)
    out = torch.empty(4096, 512, dtype=kind)
    for _ in range(5):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(20):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / 20)
    return 2 * 4096 * 128 * 512 / best / 1e9


def policy_flops_per_step(obs_size: int = 118, hidden: int = 128, actions: int = 3) -> float:
    """Matmul FLOPs per trained step of the LSTM policy: one rollout forward plus a training
    forward and backward (backward = 2 x forward)."""
    macs = obs_size * hidden + 2 * hidden * 4 * hidden + hidden * (actions + 1)
    return 2 * macs * (1 + 3)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True, help="python of the PufferLib virtualenv")
    p.add_argument("--peer-script", default=PEER_SCRIPT)
    p.add_argument("--mode", choices=("sps", "score"), default="sps")
    p.add_argument("--env", default="breakout")
    p.add_argument("--seconds", type=float, default=60.0, help="training time per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target", type=float, nargs="*", default=[],
                   help="scores whose times are reported (each trainer's first epoch/frame at or "
                        "above it)")
    p.add_argument("--shoal-flags", default="", help="extra `shoal train` flags (one string)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a shoal configuration to run in every round: NAME=extra `shoal train` "
                        "flags (one string, after --shoal-flags); repeatable (default: one, "
                        "'shoal', with --shoal-flags only)")
    a = p.parse_args()
    variants: dict[str, list[str]] = {}
    for spec in a.variant:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name == "pufferlib" or name in variants:
            p.error(f"--variant {spec!r}: expected a new NAME=FLAGS (NAME not 'pufferlib')")
        variants[name] = extra.split()
    if not variants:
        variants["shoal"] = []

    peer_env = PEER_ENV.get(a.env, a.env)
    script = os.path.abspath(a.peer_script)
    scratch = tempfile.mkdtemp(prefix="peer-train-")
    flags = (SPS_FLAGS if a.mode == "sps" else []) + a.shoal_flags.split()
    sides = list(variants) + (["pufferlib"] if peer_env is not None else [])
    runs: dict[str, list[list[dict]]] = {who: [] for who in sides}
    for r in range(a.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for who in order:
            if who == "pufferlib":
                # its own shipped config (breakout: LSTM-128, 8 x 1024 envs, horizon 64,
                # minibatch 32768) on its Serial backend, its fastest setting on 2 cores
                rec = run_peer(a.peer_python, script, peer_env, a.seconds, scratch)
            else:
                mine = flags + variants[who]
                # a different seed each round, as PufferLib's runs differ from each other too
                seeded = mine if "--train.seed" in mine else mine + ["--train.seed", str(r)]
                rec = run_shoal(a.env, a.seconds, seeded)
            runs[who].append(rec)
            times = "  ".join(f"t({x:g}) {_fmt(time_to(rec, x))}" for x in a.target)
            print(f"round {r + 1} {who:<9} sps {second_half_sps(rec) / 1e3:7.1f}k  steps "
                  f"{rec[-1]['steps'] / 1e6:6.2f}M in {rec[-1]['t']:.0f}s  score "
                  f"{_fmt(final_score(rec))}  {times}", flush=True)

    result: dict = {"mode": a.mode, "env": a.env, "peer_env": peer_env, "seconds": a.seconds,
                    "rounds": a.rounds, "shoal_flags": flags,
                    "variants": {k: flags + v for k, v in variants.items()}}
    for who, recs in runs.items():
        result[who] = {
            "sps_median": median_known([second_half_sps(x) for x in recs]),
            "final_score_median": median_known([final_score(x) for x in recs]),
            "steps_median": median_known([x[-1]["steps"] for x in recs]),
        }
        for x in a.target:
            times = [time_to(rec, x) for rec in recs]
            # a run that never reached the target counts as not reaching it (inf)
            result[who][f"time_to_{x:g}"] = times
            result[who][f"time_to_{x:g}_median"] = statistics.median(
                [t if t is not None else float("inf") for t in times])
    if peer_env is not None:
        theirs_sps = result["pufferlib"]["sps_median"]
        for who in variants:
            ours = result[who]
            # a run too short for PufferLib to report a rate leaves no ratio
            ours["sps_ratio"] = ours["sps_median"] / theirs_sps if theirs_sps else None
            for x in a.target:
                theirs = result["pufferlib"][f"time_to_{x:g}_median"]
                ours[f"time_to_{x:g}_ratio"] = (
                    ours[f"time_to_{x:g}_median"] / theirs
                    if theirs not in (0, float("inf")) else None)
    if a.mode == "sps":
        flops = policy_flops_per_step()
        for dtype in ("float32", "bfloat16"):
            peak = matmul_gflops(dtype=dtype)
            ceiling = peak * 1e9 / flops
            result[f"matmul_gflops_{dtype}"] = peak
            result[f"{dtype}_ceiling_sps"] = ceiling
            for who in sides:
                result[who][f"fraction_of_{dtype}_ceiling"] = result[who]["sps_median"] / ceiling
    lines = []
    for who in variants:
        s = result[who]
        line = (f"{a.env}: shoal [{who}: {' '.join(variants[who]) or 'no extra flags'}] sps "
                f"{s['sps_median'] / 1e3:.1f}k, score {s['final_score_median']}")
        if peer_env is not None:
            pl = result["pufferlib"]
            line += (f" | PufferLib {peer_env} sps {pl['sps_median'] / 1e3:.1f}k, score "
                     f"{pl['final_score_median']} | sps ratio {_fmt(s['sps_ratio'])}")
            for x in a.target:
                line += (f" | time to {x:g}: {_fmt(s[f'time_to_{x:g}_median'])} s vs "
                         f"{_fmt(pl[f'time_to_{x:g}_median'])} s (ratio "
                         f"{_fmt(s.get(f'time_to_{x:g}_ratio'))})")
        lines.append(line)
    if a.mode == "sps":
        for dtype in ("float32", "bfloat16"):
            lines.append(
                f"{dtype} ceiling {result[f'{dtype}_ceiling_sps'] / 1e3:.0f}k steps/s "
                f"({result[f'matmul_gflops_{dtype}']:.0f} GFLOP/s, "
                f"{policy_flops_per_step() / 1e6:.2f} MFLOP per trained step): " + ", ".join(
                    f"{who} at {result[who][f'fraction_of_{dtype}_ceiling']:.0%}"
                    for who in sides))
    print("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
