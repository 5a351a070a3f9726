"""gym:/pz: names through the config system and the command line: `shoal train` (config, --help),
`shoal bench` (every backend) and `shoal check` (run as a command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import gymnasium
import numpy as np
import pytest

from shoal.tools import bench
from shoal.trainer import cli
from shoal.trainer.config import ConfigError, build_config, from_dict, to_toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the config system ----

def test_config_takes_gymnasium_kwargs_as_env_params():
    args = cli.parse_args(["gym:CartPole-v1", "--env.max-episode-steps", "200",
                           "--env.render-mode", "rgb_array", "--env.num-envs", "8",
                           "--env.sutton_barto_reward", "true"])
    cfg = build_config(args["env"], args["files"], args["overrides"], origin="flag")
    assert cfg.env.name == "gym:CartPole-v1" and cfg.env.num_envs == 8
    assert cfg.env.params == {"max_episode_steps": 200, "render_mode": "rgb_array",
                              "sutton_barto_reward": True}
    kwargs = cfg.make_env_kwargs()
    assert kwargs["max_episode_steps"] == 200 and kwargs["num_envs"] == 8
    # Python keywords keep their types; a saved config.toml reads back the same
    cfg = build_config("gym:CartPole-v1", overrides={"env_max_episode_steps": 9,
                                                     "env_render_mode": "ansi"})
    assert cfg.env.params == {"max_episode_steps": 9, "render_mode": "ansi"}
    assert from_dict(tomllib.loads(to_toml(cfg))) == cfg


def test_config_pettingzoo_name_and_batch_size_counts_its_agents():
    cfg = build_config("pz:pettingzoo.butterfly.pistonball_v6",
                       overrides={"env.n_pistons": 4, "env.num_envs": 2, "train.horizon": 8,
                                  "train.batch_size": 64, "train.minibatch_size": 64})
    assert cfg.env.params == {"n_pistons": 4}
    with pytest.raises(ConfigError, match=r"num_envs x agents x horizon = 2 x 4 x 8 = 64"):
        build_config("pz:pettingzoo.butterfly.pistonball_v6",
                     overrides={"env.n_pistons": 4, "env.num_envs": 2, "train.horizon": 8,
                                "train.batch_size": 128, "train.minibatch_size": 64})


@pytest.mark.parametrize("name, message", [
    ("gym:CartPol-v1", "Did you mean: `CartPole`"),
    ("gym:no_such_module_xyz:Thing-v0", "cannot import 'no_such_module_xyz'"),
    ("pz:no_such_module_xyz.some_env_v0", "check the path"),
    ("gym:", "names no env"),
])
def test_config_rejects_python_env_names_that_do_not_resolve(name, message):
    with pytest.raises(ConfigError, match=message):
        build_config(name)


def test_config_rejects_values_a_run_cannot_save():
    with pytest.raises(ConfigError, match="cannot be written to a run's config.toml"):
        build_config("gym:CartPole-v1", overrides={"env_render_mode": None})


def test_c_envs_still_check_their_params_and_switching_env_drops_kwargs(tmp_path):
    with pytest.raises(ConfigError, match="unknown override key 'env.max_episode_steps'"):
        build_config("template", overrides={"env.max_episode_steps": 5})
    mine = tmp_path / "mine.toml"
    mine.write_text('[env]\nname = "gym:CartPole-v1"\nmax_episode_steps = 5\n')
    assert build_config(files=[str(mine)]).env.params == {"max_episode_steps": 5}
    cfg = build_config(files=[str(mine)], overrides={"env.name": "template"})
    assert cfg.env.name == "template" and cfg.env.params == {}


def test_train_help_for_python_envs(capsys):
    assert cli.main(["gym:CartPole-v1", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--env.num-envs" in out and "could not apply" not in out
    assert cli.main(["gym:CartPol-v1", "--help"]) == 0          # help still shows, with why
    assert "could not apply gym:CartPol-v1's defaults" in capsys.readouterr().out


def test_train_cli_bad_python_env_name_exits_2(capsys):
    assert cli.main(["gym:CartPol-v1", "--log.dashboard", "off"]) == 2
    err = capsys.readouterr().err
    assert "shoal train:" in err and "Did you mean" in err and "Fix:" in err


class PickyEnv(gymnasium.Env):
    """Takes ``size`` >= 1 only; ``renderer="fancy"`` needs a package that is not installed."""

    observation_space = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, size: int = 3, renderer: str = "plain") -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if renderer == "fancy":
            import no_such_renderer_pkg_xyz  # noqa: F401

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


gymnasium.register("ShoalPicky-v0", entry_point=PickyEnv)
PICKY = "gym:test_python_env_cli:ShoalPicky-v0"


@pytest.mark.parametrize("flags, message", [
    (["gym:CartPole-v1", "--env.foo", "3"], "keyword arguments {'foo': 3} .*Fix: pass only"),
    ([PICKY, "--env.size", "0"], "size must be >= 1, got 0"),
    ([PICKY, "--env.renderer", "fancy"], "No module named 'no_such_renderer_pkg_xyz'"),
    # a PettingZoo env that checks its arguments with assert
    (["pz:pettingzoo.butterfly.pistonball_v6", "--env.n-pistons", "1"],
     r"rejected the keyword arguments \{'n_pistons': 1\}: n_pistons must be greater than 1"),
])
def test_train_cli_env_construction_errors_are_one_line_exit_2(flags, message, capsys, tmp_path,
                                                               monkeypatch):
    """TypeError / ValueError / ImportError while making the env: `shoal train: error: ...`,
    one line, exit status 2, no traceback and no run directory."""
    import re

    monkeypatch.chdir(tmp_path)
    assert cli.main([*flags, "--log.dashboard", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shoal train: error: ") and err.count("\n") == 1, err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_train_cli_keeps_tracebacks_of_errors_during_training(tmp_path, monkeypatch):
    """Only construction is wrapped: a TypeError raised by training itself is a bug, not a bad
    argument, and propagates."""
    from shoal.trainer import ppo

    def broken_train(self):
        raise TypeError("a bug inside training")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ppo.Trainer, "train", broken_train)
    with pytest.raises(TypeError, match="a bug inside training"):
        cli.main([PICKY, "--env.num-envs", "2", "--train.horizon", "4",
                  "--train.minibatch-size", "8", "--train.total-steps", "8",
                  "--log.dashboard", "off"])


def test_train_help_explains_python_env_keyword_flags(capsys):
    assert cli.main(["gym:CartPole-v1", "--help"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "--env.<KEY>" in line)
    assert "keyword argument of gymnasium.make" in row
    assert cli.main(["pz:pettingzoo.butterfly.pistonball_v6", "--help"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "--env.<KEY>" in line)
    assert "keyword argument of the PettingZoo creator" in row
    assert cli.main(["template", "--help"]) == 0             # C envs list their own parameters
    assert "--env.<KEY>" not in capsys.readouterr().out


# ---- shoal envs ----

def test_envs_mentions_python_env_names_at_the_end(capsys):
    from shoal.tools import envs_cmd

    assert envs_cmd.main([]) == 0
    out = capsys.readouterr().out
    assert out.index("template") < out.index("gym:ID")          # after the C envs
    tail = "\n".join(out.rstrip().splitlines()[-5:])
    assert "gym:ID" in tail and "Gymnasium id" in tail
    assert "pz:MODULE.ENV" in tail and "PettingZoo" in tail and "docs/emulation.md" in tail
    assert envs_cmd.main(["--json"]) == 0                       # JSON stays JSON
    assert "template" in {e["name"] for e in json.loads(capsys.readouterr().out)}
    with pytest.raises(SystemExit) as exit_:
        envs_cmd.main(["gym:CartPole-v1"])
    assert exit_.value.code == 2
    assert "shoal check gym:CartPole-v1" in capsys.readouterr().err


# ---- shoal bench ----

@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_bench_measures_python_envs_on_every_backend(backend, capsys):
    argv = ["gym:CartPole-v1", "--num-envs", "4", "--backend", backend, "--seconds", "0.2",
            "--json", "--max-episode-steps", "50"]
    if backend != "serial":
        argv += ["--num-workers", "2"]
    assert bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env"] == "gym:CartPole-v1" and result["backend"] == backend
    assert result["num_agents"] == 4 and result["agent_steps_per_second"] > 0
    assert result["params"] == {"max_episode_steps": 50}


def test_bench_pettingzoo_env(capsys):
    assert bench.main(["pz:butterfly/knights_archers_zombies-v11", "--num-envs", "2",
                       "--seconds", "0.2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_agents"] == 8 and result["agent_steps_per_second"] > 0


# ---- shoal check, as a command ----

def _shoal(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_shoal_check_command():
    good = _shoal("check", "gym:CartPole-v1", "--steps", "50")
    assert good.returncode == 0, good.stderr
    assert "no problems found" in good.stdout and "deterministic under a seed" in good.stdout
    bad = _shoal("check", "tests.test_checker:make_wrong_dtype")
    assert bad.returncode == 1
    assert "dtype float64" in bad.stdout and "fix: return obs.astype(np.float32)" in bad.stdout
    unknown = _shoal("check", "gym:NoSuchEnv-v0", "--json")
    assert unknown.returncode == 1
    report = json.loads(unknown.stdout)
    assert not report["ok"] and "pprint_registry" in report["problems"][0]["fix"]
    usage = _shoal("check")
    assert usage.returncode == 2 and "usage: shoal check" in usage.stderr
    listed = _shoal("--help")
    assert listed.returncode == 0 and "check" in listed.stdout
