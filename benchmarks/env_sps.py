"""Raw env throughput, shoal vs PufferLib 3.0, measured in the same run.

For each pair, the two commands alternate (`shoal bench ENV --json` and PufferLib's
pufferlib_env_sps.py in its own virtualenv), each for --seconds, --rounds times; the medians and
the ratio shoal/PufferLib are printed. One process, random actions, no policy.

    PY=$(../shared/peers/setup_pufferlib.sh | tail -1)
    python benchmarks/env_sps.py --peer-python "$PY" [--rounds 3] [--seconds 3] [--num-envs 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# (shoal env, PufferLib env, shoal params chosen to match PufferLib's per-step work)
PAIRS = [
    ("breakout", "breakout", {}),
    ("tetris", "tetris", {}),
    ("maze", "grid", {}),
    ("drone", "drone", {}),
]


def shoal_rate(env: str, num_envs: int, seconds: float, params: dict) -> float:
    flags = [x for k, v in params.items() for x in (f"--{k}", str(v))]
    out = subprocess.run([sys.executable, "-m", "shoal", "bench", env, "--num-envs", str(num_envs),
                          "--seconds", str(seconds), "--json", *flags],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["agent_steps_per_second"]


def peer_rate(python: str, script: str, env: str, num_envs: int, seconds: float, cwd: str) -> float:
    out = subprocess.run([python, script, env, "--num-envs", str(num_envs), "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True, cwd=cwd).stdout
    return json.loads(out.strip().splitlines()[-1])["agent_steps_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True, help="python of the PufferLib virtualenv")
    p.add_argument("--peer-script", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                         "peers", "pufferlib_env_sps.py"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--only", nargs="*", help="shoal env names to run (default: all pairs)")
    a = p.parse_args()
    script = os.path.abspath(a.peer_script)
    scratch = tempfile.mkdtemp(prefix="peer-sps-")  # PufferLib writes a 'resources' link in its cwd
    rows = []
    for env, peer_env, params in PAIRS:
        if a.only and env not in a.only:
            continue
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(shoal_rate(env, a.num_envs, a.seconds, params))
            theirs.append(peer_rate(a.peer_python, script, peer_env, a.num_envs, a.seconds, scratch))
        row = {"env": env, "peer_env": peer_env, "shoal_median": statistics.median(ours),
               "pufferlib_median": statistics.median(theirs),
               "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
               "shoal_runs": ours, "pufferlib_runs": theirs}
        rows.append(row)
        print(f"{env:<9} shoal {row['shoal_median'] / 1e6:6.2f} M/s   PufferLib {peer_env} "
              f"{row['pufferlib_median'] / 1e6:6.2f} M/s   ratio {row['ratio']:.2f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
