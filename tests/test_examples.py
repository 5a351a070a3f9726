"""Every example in examples/ runs, with a tiny budget, and does what it says.

Each example runs in a subprocess (as a user would run it) from a temporary directory, writing
its run there; the out-of-tree C env is copied to a temporary directory and built there with
its own setup.py, so the checkout stays clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(args: list[str], cwd: Path, timeout: float = 300) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number_after(label: str, text: str) -> float:
    match = re.search(rf"{label}\s+([-0-9.]+)", text)
    assert match, f"no '{label} <number>' in:\n{text}"
    return float(match.group(1))


def test_train_api_returns_the_summary(tmp_path):
    run_dir = tmp_path / "run"
    out = run([str(EXAMPLES / "train_api.py"), "--steps", "40000", "--run-dir", str(run_dir)],
              tmp_path)
    summary = json.loads(out[out.index("{"):])
    for key in ("env", "agent_steps", "epochs", "wall_seconds", "sps", "score", "episodes",
                "finished", "run_dir", "checkpoint"):
        assert key in summary, key
    assert summary["env"] == "breakout"
    assert summary["finished"] is True
    assert summary["agent_steps"] >= 40000
    assert summary["episodes"] > 0 and summary["score"] is not None
    assert summary["run_dir"] == str(run_dir)
    # the run directory holds what the summary says, and the overrides reached the config
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert os.path.exists(summary["checkpoint"])
    config = (run_dir / "config.toml").read_text()
    assert re.search(r"^lives = 3\b", config, re.M) and re.search(r"^seed = 7\b", config, re.M)
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == summary["epochs"]
    assert not (tmp_path / "runs").exists()


def test_custom_policy_learns_memory(tmp_path):
    run_dir = tmp_path / "run"
    out = run([str(EXAMPLES / "custom_policy.py"), "--steps", "50000", "--run-dir",
               str(run_dir)], tmp_path)
    # a memoryless policy scores at most 0.25 on recall: the GRU's state is what does it
    assert number_after("custom GRU: score", out) >= 0.9, out
    assert number_after("greedy evaluation: score", out) >= 0.9, out
    assert (run_dir / "summary.json").exists()


def test_own_loop_learns(tmp_path):
    out = run([str(EXAMPLES / "own_loop.py"), "--steps", "20000"], tmp_path)
    scores = [float(s) for s in re.findall(r"score ([0-9.]+)", out)]
    assert len(scores) >= 3, out
    assert scores[0] <= 0.3, out        # a random walk rarely reaches the end of the corridor
    assert scores[-1] >= 0.9, out
    assert os.listdir(tmp_path) == []   # writes nothing


@pytest.fixture(scope="module")
def chase_dir(tmp_path_factory):
    """examples/custom_env copied to a temp dir and built there with its own setup.py."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("no C compiler")
    dest = tmp_path_factory.mktemp("custom_env") / "custom_env"
    shutil.copytree(EXAMPLES / "custom_env", dest,
                    ignore=shutil.ignore_patterns("build", "runs", "*.so", "__pycache__"))
    run(["setup.py", "build_ext", "--inplace"], dest)
    assert list((dest / "chase").glob("_c*.so")), "the build produced no chase/_c extension"
    return dest


def test_custom_env_follows_the_contract(chase_dir):
    code = """
import numpy as np, chase
env = chase.make(4, seed=3, size=5, max_steps=10)
obs, _ = env.reset()
assert obs.shape == (4, 4) and obs.dtype == np.float32 and np.all(np.abs(obs) <= 1)
first = obs.copy()
for step in range(1, 11):  # action 0 stays put: never on the target, so never rewarded
    obs, rew, term, trunc, infos = env.step(np.zeros(4, np.int32))
    assert not term.any() and not rew.any()
    assert trunc.all() == (step == 10), step
np.testing.assert_array_equal(infos["final_observation"], first)  # the cells never changed
stats = env.log()
assert stats["n"] == 4 and stats["score"] == 0 and stats["episode_length"] == 10, stats
again = chase.make(4, seed=3, size=5, max_steps=10)
np.testing.assert_array_equal(again.reset()[0], first)  # same seed, same episodes
env.close(); again.close()
try:
    chase.make(1, size=1)
except ValueError as exc:
    print("rejected:", exc)
"""
    out = run(["-c", code], chase_dir)
    assert "rejected: chase: parameter 'size'=1 is out of range" in out


def test_custom_env_trains(chase_dir, tmp_path):
    run_dir = tmp_path / "run"
    out = run(["train_chase.py", "--steps", "60000", "--run-dir", str(run_dir)], chase_dir)
    random_score = number_after("random policy: score", out)
    trained = number_after("trained policy: score", out)
    assert random_score < 2.0, out
    assert trained >= 5.0 and trained >= 3 * random_score, out
    assert json.loads((run_dir / "summary.json").read_text())["env"] == "chase"
