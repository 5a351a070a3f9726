"""Trainer configuration: defaults, shipped per-env TOML files, CLI flags, errors, --help."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib

import pytest

from shoal.envs import list_envs
from shoal.trainer import cli
from shoal.trainer.config import (CONFIG_DIR, SECTIONS, ConfigError, Config, build_config,
                                  default_config, from_dict, section_fields,
                                  shipped_config_names, to_toml)


def test_default_toml_matches_dataclass_defaults():
    with open(os.path.join(CONFIG_DIR, "default.toml"), "rb") as fh:
        shipped = tomllib.load(fh)
    assert shipped == default_config().to_dict()


def test_every_key_has_a_meaning():
    for section in SECTIONS:
        for name, f in section_fields(section).items():
            assert f.metadata.get("help"), f"{section}.{name} has no help text"


@pytest.mark.parametrize("name", shipped_config_names())
def test_shipped_configs_are_valid(name):
    # configs/ENV.toml holds ENV's defaults; any other file is a named config (`--config NAME`)
    # that names its env in [env] name and applies on top of that env's defaults
    with open(os.path.join(CONFIG_DIR, f"{name}.toml"), "rb") as fh:
        data = tomllib.load(fh)
    env = data.get("env", {}).get("name", name)
    assert env in list_envs(), (f"configs/{name}.toml is for an unknown env: name the file after "
                                f"its env, or set [env] name")
    files = [] if env == name else [cli.parse_args(["--config", name])["files"][0]]
    cfg = build_config(env, files)
    assert cfg.env.name == env
    # the file only uses known keys and is applied on top of the defaults
    flat = cfg.to_dict()
    for section, table in data.items():
        for key, value in table.items():
            assert flat[section][key] == value


def test_config_flag_takes_a_shipped_name_or_a_path(tmp_path, monkeypatch):
    assert cli.parse_args(["breakout", "--config", "breakout_lstm"])["files"] == [
        os.path.join(CONFIG_DIR, "breakout_lstm.toml")]
    mine = tmp_path / "breakout_lstm"  # an existing file wins over the shipped name
    mine.write_text("[train]\ngamma = 0.9\n")
    monkeypatch.chdir(tmp_path)
    assert cli.parse_args(["--config", "breakout_lstm"])["files"] == ["breakout_lstm"]
    assert cli.parse_args(["--config", "sub/x.toml"])["files"] == ["sub/x.toml"]
    with pytest.raises(ConfigError, match="no shipped config of that name.*breakout_lstm"):
        cli.parse_args(["--config", "breakout_lstmm"])


def test_precedence_defaults_env_file_user_file_flags(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text("[train]\nlearning_rate = 0.02\ngamma = 0.9\n[env]\nlength = 12\n")
    cfg = build_config("template", [str(user)], {"train.gamma": "0.8"})
    assert cfg.train.learning_rate == 0.02           # from the user's file
    assert cfg.train.gamma == 0.8                    # flag beats file
    assert cfg.env.params == {"length": 12}          # env param from the file
    assert cfg.train.clip_coef == default_config().train.clip_coef


def test_cli_parsing_forms():
    args = cli.parse_args(["template", "--train.learning-rate", "0.01", "--env.num_envs=2048",
                           "--train.anneal-lr", "--env.length", "5", "--run-dir", "x",
                           "--train.total-steps", "1e6"])
    assert args["env"] == "template"
    cfg = build_config(args["env"], args["files"], args["overrides"], origin="flag")
    assert cfg.train.learning_rate == 0.01
    assert cfg.env.num_envs == 2048
    assert cfg.train.anneal_lr is True
    assert cfg.env.params["length"] == 5
    assert cfg.log.run_dir == "x"
    assert cfg.train.total_steps == 1_000_000 and isinstance(cfg.train.total_steps, int)
    off = cli.parse_args(["template", "--train.anneal-lr", "false"])["overrides"]
    assert build_config("template", overrides=off).train.anneal_lr is False


@pytest.mark.parametrize("argv, message", [
    (["--train.learnin-rate", "3"], "Did you mean --train.learning-rate"),
    (["--env.lenght", "3"], "Did you mean --env.length"),
    (["--trian.gamma", "0.9"], "Did you mean --train.gamma"),
    (["--train.gamma", "x"], "needs a number"),
    (["--train.gamma", "1.5"], "in [0.0, 1.0]"),
    (["--env.num-envs", "2.5"], "needs an integer"),
    (["--policy.name", "rnn"], "must be one of mlp, lstm, cnn"),
    (["--env.length", "1"], "out of range"),
    (["--train.minibatch-size", "100"], "multiple of train.horizon"),
    (["--env.num-envs", "7", "--env.num-buffers", "2"], "multiple of env.num_buffers"),
    (["--train.batch-size", "1000"], "train.batch_size"),
])
def test_bad_flags_are_errors_with_the_fix(argv, message):
    args = cli.parse_args(["template", *argv])
    with pytest.raises(ConfigError) as info:
        build_config("template", args["files"], args["overrides"], origin="flag")
    assert message in str(info.value)


@pytest.mark.parametrize("clip", ["0", "-1", "0.0"])
def test_norm_obs_clip_must_be_positive_where_the_config_is_parsed(clip, tmp_path):
    fix = "train.norm_obs_clip must be > 0; got "
    args = cli.parse_args(["template", "--train.norm-obs-clip", clip])
    with pytest.raises(ConfigError) as info:
        build_config("template", args["files"], args["overrides"], origin="flag")
    assert fix in str(info.value) and "set it above 0, e.g. the default 10.0" in str(info.value)
    path = tmp_path / "clip.toml"                    # a config file is checked the same way
    path.write_text(f"[train]\nnorm_obs = true\nnorm_obs_clip = {clip}\n")
    with pytest.raises(ConfigError, match=fix):
        build_config("template", [str(path)])
    with pytest.raises(ConfigError, match=fix):
        build_config("template", overrides={"train_norm_obs_clip": float(clip)})
    assert build_config("template", overrides={"train_norm_obs_clip": 1e-3}).train.norm_obs_clip \
        == 1e-3


def test_unknown_env_names_close_matches():
    with pytest.raises(ConfigError, match="templat"):
        build_config("templat")


def test_python_overrides_flat_keywords():
    cfg = build_config("template", overrides={"train_learning_rate": 0.1, "env_length": 9,
                                              "policy_name": "lstm"})
    assert (cfg.train.learning_rate, cfg.env.params["length"], cfg.policy.name) == (0.1, 9, "lstm")
    with pytest.raises(ConfigError, match="'train.learning_rate'"):
        build_config("template", overrides={"train_learnin_rate": 0.1})
    with pytest.raises(ConfigError, match="needs a number"):
        build_config("template", overrides={"train_gamma": "high"})
    with pytest.raises(ConfigError, match="must be an integer"):
        build_config("template", overrides={"env_num_envs": 2.5})


def test_toml_round_trip(tmp_path):
    cfg = build_config("template", overrides={"env.length": 6, "train.learning_rate": 1e-4,
                                              "log.run_dir": 'a "quoted" dir'})
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    back = from_dict(tomllib.loads(path.read_text()))
    assert back == cfg


def test_help_lists_every_key_with_default_and_env_params(capsys):
    assert cli.main(["template", "--help"]) == 0
    out = capsys.readouterr().out
    cfg = build_config("template")
    for section in SECTIONS:
        for name, f in section_fields(section).items():
            flag = f"--{section}.{name.replace('_', '-')}"
            line = next((ln for ln in out.splitlines() if ln.strip().startswith(flag + " ")), None)
            assert line is not None, flag
            assert f.metadata["help"][:20] in line
    assert "--env.length" in out and "--env.max-steps" in out
    assert str(cfg.env.num_envs) in out
    assert cli.main(["--help"]) == 0
    assert "--env.<param>" in capsys.readouterr().out


def test_cli_errors_exit_2(capsys):
    assert cli.main(["template", "--train.gama", "0.9"]) == 2
    assert "--train.gamma" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["template", "extra"]) == 2
    assert cli.main(["template", "--train.gamma"]) == 2


def test_importing_shoal_does_not_import_torch():
    code = ("import sys, shoal, shoal.trainer, shoal.trainer.config, shoal.trainer.cli; "
            "shoal.trainer.cli.help_text('template'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_sections_are_dataclasses():
    cfg = Config()
    assert all(dataclasses.is_dataclass(getattr(cfg, s)) for s in SECTIONS)


@pytest.mark.parametrize("key", ["train.torch_threads", "train.overlap_tail_threads",
                                 "train.rollout_threads", "train.learner_threads",
                                 "env.num_workers"])
def test_a_config_file_cannot_ask_for_absurd_thread_counts(tmp_path, key):
    """torch.set_num_threads(100000) segfaults in torch's first parallel product: a config file
    asking for that many threads is refused, naming the key and its range."""
    section, name = key.split(".")
    path = tmp_path / "threads.toml"
    path.write_text(f"[{section}]\n{name} = 100000\n")
    with pytest.raises(ConfigError, match=rf"{key} must be in \[\d, 1024\]; got 100000"):
        build_config("breakout", files=[str(path)])
    assert getattr(getattr(build_config("breakout", overrides={key: 1024}), section),
                   name) == 1024
