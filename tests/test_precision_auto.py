"""``train.precision = "auto"`` and breakout's shipped fast path.

"auto" is resolved once, when the Trainer is built: bfloat16 on a CPU with native bfloat16 units
(AMX-BF16 or AVX512-BF16), float32 elsewhere. The resolved precision is what the run uses and
records (config.toml, checkpoints), so a resumed run keeps it on any machine. Breakout ships the
fused overlapped rollout with precision auto; the synchronous torch path is one switch away and
the errors around the switch name the fix.
"""

from __future__ import annotations

import tomllib

import pytest

torch = pytest.importorskip("torch")

from shoal.trainer.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from shoal.trainer.config import ConfigError, build_config, config_file_path  # noqa: E402
from shoal.trainer.policies import (PRECISIONS, autocast, cpu_bfloat16_units,  # noqa: E402
                                    resolve_precision)
from shoal.trainer.ppo import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH_PATH = {"train.rollout": "torch", "train.overlap": False, "train.precision": "float32"}
SMALL = {"train.total_steps": 3 * 8 * 16, "env.num_envs": 8, "train.horizon": 16,
         "train.minibatch_size": 64, "policy.hidden": 16, "log.dashboard": "off"}


def _cpuinfo_bf16_flags() -> set[str] | None:
    """The bfloat16 flags /proc/cpuinfo lists (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"}
    except OSError:
        return None
    return set()


def test_auto_resolves_to_what_the_cpu_has():
    units = cpu_bfloat16_units()
    assert set(units) <= {"AMX-BF16", "AVX512-BF16"}
    flags = _cpuinfo_bf16_flags()
    if flags is not None:   # torch's capability query and the kernel's flags agree
        assert units == [{"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}[f]
                         for f in ("amx_bf16", "avx512_bf16") if f in flags]
    precision, note = resolve_precision("auto", "cpu")
    assert precision in PRECISIONS
    assert precision == ("bfloat16" if units else "float32")
    assert note.startswith(f"precision auto -> {precision} (")
    # off the CPU "auto" stays float32 (bfloat16 there is untested); no GPU is needed to ask
    assert resolve_precision("auto", "cuda") == (
        "float32", "precision auto -> float32 (train.device is cuda)")
    # an explicit precision is kept, with nothing to say
    assert resolve_precision("float32", "cpu") == ("float32", None)
    assert resolve_precision("bfloat16", "cuda") == ("bfloat16", None)


def test_bad_precisions_are_clear_errors():
    with pytest.raises(ConfigError, match="train.precision must be one of float32, bfloat16, auto"):
        build_config("bandit", overrides={"train.precision": "fp16"})
    with pytest.raises(ValueError, match="float32, bfloat16, got 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolved first"):  # autocast never sees "auto"
        autocast("cpu", "auto")


def test_a_run_records_and_resumes_with_the_resolved_precision(tmp_path, capsys):
    expected, _ = resolve_precision("auto", "cpu")
    run = tmp_path / "auto"
    cfg = build_config("breakout", overrides={**SMALL, "train.precision": "auto",
                                              "train.device": "cpu", "log.dashboard": "plain",
                                              "log.run_dir": str(run)})
    tr = Trainer(cfg)
    assert tr.config.train.precision == expected and tr.inference.precision == expected
    with open(run / "config.toml", "rb") as f:
        assert tomllib.load(f)["train"]["precision"] == expected
    summary = tr.train()
    out = capsys.readouterr().out
    assert out.count("precision auto -> ") == 1 and f"precision auto -> {expected} (" in out
    assert load_checkpoint(summary["checkpoint"])["config"]["train"]["precision"] == expected
    resumed = Trainer.resume(str(run), overrides={"train.total_steps": 10**6})
    try:
        assert resumed.config.train.precision == expected and resumed.precision_note is None
    finally:
        resumed.close()


def test_a_resumed_run_keeps_a_precision_auto_would_not_choose(tmp_path):
    """A run recorded on another machine (here: the precision "auto" does not pick on this one)
    continues in its own precision."""
    other = "float32" if resolve_precision("auto", "cpu")[0] == "bfloat16" else "bfloat16"
    run = tmp_path / "other"
    Trainer(build_config("breakout", overrides={**SMALL, "train.precision": other,
                                                "log.run_dir": str(run)})).train()
    resumed = Trainer.resume(str(run), env_name="breakout",
                             overrides={"train.total_steps": 10**6})
    try:
        assert resumed.config.train.precision == other and resumed.inference.precision == other
    finally:
        resumed.close()


def test_breakout_ships_the_pipelined_fused_path_with_precision_auto():
    cfg = build_config("breakout")
    t = cfg.train
    assert (t.rollout, t.overlap, t.pipeline, t.minibatches, t.precision) == (
        "fused", False, True, "ranges", "auto")
    # the synchronous path is one switch away
    t = build_config("breakout", overrides=TORCH_PATH).train
    assert (t.rollout, t.overlap, t.precision) == ("torch", False, "float32")
    # what the shipped file does not set keeps the defaults' value
    assert build_config("bandit").train.precision == "float32"
    # the named config on top of it keeps the path it was tuned on
    t = build_config(None, [config_file_path("breakout_lstm")]).train
    assert (t.rollout, t.overlap, t.precision) == ("torch", False, "float32")
    # with the prioritised draws it was tuned with, not breakout.toml's row ranges
    assert (t.minibatches, t.pipeline) == ("draws", False) and t.prio_alpha > 0.9


def test_the_fused_rollout_off_the_cpu_names_the_fix():
    with pytest.raises(ConfigError, match=r"train.device is 'cuda'.*--train.device cpu.*"
                                          r"\(--train.rollout torch\)"):
        build_config("breakout", overrides={"train.device": "cuda"})
    with pytest.raises(ConfigError, match=r"--train.rollout torch --train.overlap false"):
        build_config("breakout", overrides={"train.device": "cuda", "train.overlap": True})
    with pytest.raises(ConfigError, match="train.device is 'cuda:1'"):
        build_config("breakout", overrides={"train.device": "cuda:1"})
    # the torch path takes a cuda learner as before (the Trainer checks CUDA is there)
    assert build_config("breakout", overrides={**TORCH_PATH, "train.device": "cuda"})


def test_leaving_the_shipped_path_names_every_switch(tmp_path):
    with pytest.raises(ConfigError, match=r"\(--train.rollout torch\)"):
        Trainer(build_config("breakout", overrides={
            **SMALL, "env.backend": "processes", "env.num_workers": 2,
            "log.run_dir": str(tmp_path / "p")}))
    with pytest.raises(ConfigError, match="--train.rollout torch --train.overlap false"):
        Trainer(build_config("breakout", overrides={
            **SMALL, "env.backend": "processes", "env.num_workers": 2, "train.overlap": True,
            "log.run_dir": str(tmp_path / "q")}))
    with pytest.raises(ConfigError, match="with the torch rollout pass --train.overlap false"):
        Trainer(build_config("breakout", overrides={
            **SMALL, "train.rollout": "torch", "train.overlap": True,
            "log.run_dir": str(tmp_path / "o")}))
    # the shipped pipeline is how the fused path runs, not another path: the torch rollout is
    # one switch away, and the run says it is not pipelined
    tr = Trainer(build_config("breakout", overrides={
        **SMALL, "train.rollout": "torch", "log.run_dir": str(tmp_path / "t")}))
    try:
        assert tr.fused is None and "train.rollout is torch" in tr.pipeline_note
    finally:
        tr.close()


def test_a_torch_path_checkpoint_resumes_on_its_own_path(tmp_path):
    """A breakout run saved before the shipped file chose the fused rollout recorded
    train.rollout = "torch": resuming it keeps that path (the saved config, not the shipped
    file, is what a resume starts from); asking for the fused path is a clear error."""
    run = tmp_path / "old"
    Trainer(build_config("breakout", overrides={**SMALL, **TORCH_PATH,
                                                "log.run_dir": str(run)})).train()
    resumed = Trainer.resume(str(run), env_name="breakout",
                             overrides={"train.total_steps": 10**6})
    try:
        t = resumed.config.train
        assert (t.rollout, t.overlap, t.precision) == ("torch", False, "float32")
        assert resumed.exact_resume and resumed.fused is None
    finally:
        resumed.close()
    with pytest.raises(CheckpointError, match=r"saved by train.rollout='torch': resume it with "
                                              r"the same rollout path \(--train.rollout torch"):
        Trainer.resume(str(run), env_name="breakout",
                       overrides={"train.rollout": "fused", "train.overlap": True})
