"""The config files the benchmarks pass to `shoal sweep` and `shoal train`
(benchmarks/sweep_spaces/, benchmarks/configs/) stay valid as the trainer's keys change, and
benchmarks/config_steps_ab.py runs one half of a comparison with ``--runs``, and reports a third
config (``--c``) and the scores at ``--score-at`` steps."""

from __future__ import annotations

import glob
import json
import os
import statistics
import subprocess
import sys

import pytest

from shoal.sweep import parse_space
from shoal.trainer.config import build_config, load_toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# which env each study's space was written for (its file name starts with it)
ENVS = ("maze", "g2048", "tetris", "breakout")


def _env_of(path: str) -> str:
    name = os.path.basename(path)
    env = next((e for e in ENVS if name.startswith(e)), None)
    assert env is not None, f"{name}: name a sweep space after its env ({', '.join(ENVS)})"
    return env


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "benchmarks", "sweep_spaces",
                                                               "*.toml"))),
                         ids=os.path.basename)
def test_every_study_space_parses_against_its_env_config(path):
    space = parse_space(load_toml(path)["sweep"], build_config(_env_of(path)))
    assert space.keys()


def test_the_frozen_11x11_maze_config_builds_with_every_key_it_pins():
    path = os.path.join(REPO, "benchmarks", "configs", "maze_11x11_shipped.toml")
    cfg = build_config("maze", files=[path], overrides={"env.size": 15})
    pinned = load_toml(path)
    assert cfg.env.params["size"] == 15 and cfg.env.num_envs == pinned["env"]["num_envs"]
    # the observation of those runs, whatever the shipped maze.toml sets
    assert cfg.env.params["view"] == 11 and cfg.env.params["prev_action"] is False
    for key, value in pinned["train"].items():
        assert getattr(cfg.train, key) == value, key
    assert cfg.policy.name == pinned["policy"]["name"]


def test_config_steps_ab_runs_only_the_half_asked_for(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "config_steps_ab.py"), "--env", "bandit",
         "--steps", "2048", "--seeds", "3", "--runs", "B", "--b", "--train.learning-rate 0.01",
         "--metrics-out", str(tmp_path / "curves")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(result["runs"]) == ["B3"]
    assert result["final"]["A"] == [] and len(result["final"]["B"]) == 1
    # the run's curve is kept for plotting, and it ends at the reported final score
    assert os.listdir(tmp_path / "curves") == ["B3.jsonl"]
    with open(tmp_path / "curves" / "B3.jsonl") as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last["score100"] == result["final"]["B"][0]


def test_config_steps_ab_reports_a_third_config_and_the_score_at_points(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "config_steps_ab.py"), "--env", "bandit",
         "--steps", "4096", "--seeds", "3", "--b", "--train.learning-rate 0.01",
         "--c", "--train.learning-rate 0.001", "--score-at", "1", "1024", "4096",
         "--target", "0", "--parallel", "3"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["c"] == "--train.learning-rate 0.001"
    assert list(result["runs"]) == ["A3", "B3", "C3"]
    assert all(len(result["final"][k]) == 1 for k in "ABC")
    assert result["steps_to"]["C"].keys() == {"0.0"} and result["steps_to"]["C"]["0.0"][0] <= 4096
    for name, run in result["runs"].items():
        assert list(run["score_at"]) == ["1", "1024", "4096"], name
        assert run["score_at"]["1"] is None                   # before the first epoch ended
        assert run["score_at"]["1024"] is not None
        assert run["score_at"]["4096"] == run["final"]        # the last epoch ends at the budget
    text = "\n".join(lines[:-1])
    assert "seed 3 C (--train.learning-rate 0.001): " in text
    assert "at 1 steps -; at 1024 steps " in text
    for name in "ABC":                  # per-point means, only where every seed has a score
        assert f"{name}: score at 1024 steps, mean of 1 seeds " in text
        assert f"{name}: score at 4096 steps, mean of 1 seeds " in text
        assert f"{name}: score at 1 steps" not in text
    means = next(line for line in lines if line.startswith("final score, mean of seeds: "))
    assert ", C " in means and ", B / C " in means
    assert next(line for line in lines if line.startswith("steps/s, median")).endswith(", C " + str(
        round(statistics.median(result["steps_per_s"]["C"]))))
    assert ", B / C " in next(line for line in lines if line.startswith("score 0: median steps"))


def test_fused_bench_sides_pin_their_path_whatever_breakout_ships(monkeypatch):
    """Every side of benchmarks/fused_bench.py but ``shipped`` names its rollout path, overlap,
    pipeline, minibatch schedule, precision and torch threads, so its figures keep their meaning
    when breakout's shipped file changes; ``shipped`` is the file as shipped."""
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import fused_bench

    for side, over in fused_bench.SIDES.items():
        if side == "shipped":
            assert over == {}
            continue
        pinned = ("train.rollout", "train.overlap", "train.pipeline", "train.minibatches",
                  "train.precision", "train.torch_threads")
        assert set(pinned) <= set(over), side
        t = build_config("breakout", overrides=over).train
        assert (t.rollout, t.overlap, t.pipeline, t.minibatches, t.precision,
                t.torch_threads) == tuple(over[k] for k in pinned), side
    t = build_config("breakout", overrides=fused_bench.SIDES["torch"]).train
    assert (t.rollout, t.overlap, t.precision, t.torch_threads) == ("torch", False, "float32", 1)
    shipped = build_config("breakout", overrides=fused_bench.SIDES["shipped"])
    assert shipped.to_dict() == build_config("breakout").to_dict()


def test_fused_bench_run_cpu_passes_each_side_as_the_command_line_flags_of_its_overrides(
        monkeypatch):
    """``fused_bench.py --mode run-cpu`` starts ``shoal train breakout`` with each side's
    overrides as flags: parsed as the CLI parses them, they give the config the side's
    overrides give."""
    from shoal.trainer.cli import parse_args

    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import fused_bench

    for side, over in fused_bench.SIDES.items():
        parsed = parse_args(["breakout", *fused_bench._cli_flags(over)])
        assert parsed["env"] == "breakout" and not parsed["files"], side
        assert build_config("breakout", overrides=parsed["overrides"]).to_dict() == \
            build_config("breakout", overrides=over).to_dict(), side
