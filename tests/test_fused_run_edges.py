"""Edges of a training run on the fused rollout (and the trainer around it): resuming with
settings changed from the checkpoint's (the batch shape, the action masks, the observation
clip, the optimizer's settings), a hard interrupt inside an epoch, a second train() on a
finished trainer, policies the C policy cannot run, and the rollout's thread count. Each ends in
a run that trains on with what it was given, or a clear error naming the fix, never a failure
deep inside the restore or the C call."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from shoal.trainer.config import ConfigError, build_config
from shoal.trainer.policies import MLPPolicy
from shoal.trainer.ppo import Trainer
from support.training_runs import metric_rows

BASE = {"train.total_steps": 5 * 16 * 16, "env.num_envs": 16, "train.horizon": 16,
        "train.minibatch_size": 64, "log.dashboard": "off", "policy.hidden": 16,
        "train.rollout": "fused", "train.precision": "float32"}


def _stopped_run(tmp_path, env, overrides):
    """A run of ``env`` stopped (and checkpointed) after epoch 2, in ``tmp_path / "a"``."""
    cfg = build_config(env, overrides=dict(BASE, **overrides,
                                           **{"log.run_dir": str(tmp_path / "a")}))
    Trainer(cfg, callback=lambda tr, m: tr.epoch == 2).train()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    return tmp_path / "a", tmp_path / "b"


@pytest.mark.parametrize("overlap,norm_reward", [(True, False), (True, True), (False, True)])
def test_a_fused_run_resumes_with_another_number_of_envs(tmp_path, overlap, norm_reward):
    """The per-agent action streams (and the reward scaler's per-agent returns) were sized for
    the checkpoint's agents; with fewer envs they start afresh, seeded by the epoch, like the
    env's reset, while the reward scaler keeps its statistics."""
    first, second = _stopped_run(tmp_path, "breakout", {
        "train.overlap": overlap, "train.norm_reward": norm_reward, "env.max_steps": 11})
    summaries = []
    for run in (first, second):
        resumed = Trainer.resume(str(run), overrides={"env.num_envs": 8,
                                                      "train.total_steps": 3 * 16 * 16})
        assert resumed.S == 8 and resumed.epoch == 2
        if norm_reward:     # the statistics of the two epochs before the stop are kept
            assert float(resumed.reward_scaler.stats.count) >= 2 * 16 * 16
        summaries.append(resumed.train())
    assert summaries[0]["finished"] and summaries[0]["exact_resume"] is False
    assert summaries[0]["agent_steps"] == 3 * 16 * 16
    assert metric_rows(first) == metric_rows(second)


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("saved,resumed", [("auto", "off"), ("off", "auto")])
def test_a_run_resumes_with_action_masks_switched(tmp_path, overlap, saved, resumed):
    """g2048 has action masks: a checkpoint's batch collected with them (or without) is not
    continued by a run that reads none (or some); the episodes restart, with a note."""
    first, second = _stopped_run(tmp_path, "g2048", {
        "train.overlap": overlap, "train.action_masks": saved, "env.max_steps": 40})
    for run in (first, second):
        trainer = Trainer.resume(str(run), overrides={"train.action_masks": resumed})
        assert trainer.exact_resume is False
        assert "train.action_masks" in trainer.resume_note
        assert (trainer.storage.action_masks.shape[-1] == 0) == (resumed == "off")
        summary = trainer.train()
        assert summary["finished"] and summary["agent_steps"] == BASE["train.total_steps"]
    assert metric_rows(first) == metric_rows(second)


class _SharpenedMLP(MLPPolicy):
    """A user's policy: the built-in MLP with its logits sharpened in its own forward."""

    def forward(self, obs, state=None, starts=None):
        params, values, state = super().forward(obs, state, starts)
        return params * 3.0, values, state


def test_the_fused_rollout_refuses_a_policy_whose_forward_it_cannot_run(tmp_path):
    """The shipped breakout config (fused, overlap) with a subclass of the built-in MLP that
    computes something else: a ConfigError naming the override and the flags of the torch
    rollout, not a C policy acting with the built-in MLP's computation."""
    cfg = build_config("breakout", overrides=dict(BASE, **{
        "train.overlap": True, "log.run_dir": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match="_SharpenedMLP overrides MLPPolicy.forward.*"
                                          "--train.rollout torch --train.overlap false"):
        Trainer(cfg, policy=lambda obs, act: _SharpenedMLP(obs, act, hidden=16))


class _InterruptedTwice(MLPPolicy):
    """Ctrl-C pressed twice while a rollout is under way: this policy's forward sends the
    process two SIGINTs at its ``at``-th rollout step (a fixed point of the run)."""

    def __init__(self, obs_space, act_space, at: int):
        super().__init__(obs_space, act_space, hidden=16)
        self.rollout_calls, self.at = 0, at

    def forward(self, obs, state=None, starts=None):
        if obs.shape[1] == 1:
            self.rollout_calls += 1
            if self.rollout_calls in (self.at, self.at + 1):
                os.kill(os.getpid(), signal.SIGINT)
        return super().forward(obs, state, starts)


def test_a_hard_interrupt_mid_epoch_saves_no_env_state_to_continue(tmp_path,
                                                                   default_stop_signals):
    """The second Ctrl-C stops a run inside an epoch: the env has stepped past the batch the
    checkpoint's counters and carry describe, so the checkpoint written then holds no env
    state and the resumed run restarts its episodes (and says so) instead of claiming an exact
    resume and pairing the saved batch's first slot with an env several steps further on."""
    over = dict(BASE, **{"train.rollout": "torch", "train.overlap": False, "env.max_steps": 11,
                         "log.run_dir": str(tmp_path / "run")})
    cfg = build_config("breakout", overrides=over)
    trainer = Trainer(cfg, policy=lambda obs, act: _InterruptedTwice(obs, act, at=16 + 8))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.epoch == 1 and trainer.last_checkpoint.endswith("checkpoint_0000001.pt")
    resumed = Trainer.resume(str(tmp_path / "run"),
                             policy=lambda obs, act: MLPPolicy(obs, act, hidden=16))
    assert resumed.epoch == 1 and resumed.exact_resume is False
    assert resumed.train()["finished"]


@pytest.mark.parametrize("rollout,overlap", [("fused", True), ("torch", False)])
def test_a_finished_trainer_says_how_to_continue_instead_of_failing_in_its_closed_env(
        tmp_path, rollout, overlap):
    """train() closes the env (and the overlapped rollout's thread); a second train() on the
    same trainer names Trainer.resume rather than failing inside the closed env (with overlap:
    on the rollout thread, surfaced as a failed anchoring)."""
    cfg = build_config("breakout", overrides=dict(BASE, **{
        "train.rollout": rollout, "train.overlap": overlap, "train.total_steps": 2 * 16 * 16,
        "log.run_dir": str(tmp_path / "run")}))
    trainer = Trainer(cfg)
    trainer.train()
    trainer.config.train.total_steps = 4 * 16 * 16
    with pytest.raises(RuntimeError, match=r"Trainer\.resume\(.*run'\)"):
        trainer.train()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("shoal-")]
    resumed = Trainer.resume(str(tmp_path / "run"), overrides={"train.total_steps": 4 * 16 * 16})
    assert resumed.exact_resume and resumed.train()["epochs"] == 4


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a CPU affinity mask of two cores or more")
def test_the_fused_rollout_threads_fit_the_cores_a_pinned_process_may_use(tmp_path):
    """``rollout_threads = 0`` means one per core the process may run on: a process pinned to
    one core (``taskset -c 0``, a container's cpuset) takes one thread, not one per core of
    the machine."""
    one_core = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{one_core}}})\n"   # as taskset -c would
            "from shoal.trainer.config import build_config\n"
            "from shoal.trainer.ppo import Trainer\n"
            f"cfg = build_config('breakout', overrides={{'train.overlap': False, "
            f"'env.num_envs': 4, 'log.dashboard': 'off', 'log.run_dir': {str(tmp_path)!r}}})\n"
            "trainer = Trainer(cfg)\n"
            "print('threads', trainer.fused.threads)\n"
            "trainer.close()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "threads 1" in out.stdout.splitlines()


@pytest.mark.parametrize("overlap", [True, False])
def test_a_resumed_run_normalises_observations_with_the_clip_it_is_given(tmp_path, overlap):
    """The normaliser's clip is part of the saved model; resuming with another
    ``train.norm_obs_clip`` (recorded in the run's config.toml) clips with that one, in the
    learner and in the C policy, not silently with the checkpoint's; without the override the
    saved clip stays, and the resume is exact."""
    first, _ = _stopped_run(tmp_path, "breakout", {
        "train.overlap": overlap, "train.norm_obs": True, "env.max_steps": 11})
    same = Trainer.resume(str(first))
    assert float(same.obs_norm.clip) == 10.0 and same.exact_resume
    same.close()
    resumed = Trainer.resume(str(first), overrides={"train.norm_obs_clip": 0.5})
    assert float(resumed.obs_norm.clip) == 0.5
    from shoal.net.export import export_policy, read_header

    blob = export_policy(resumed.policy, resumed.env.observations.dtype)
    words = np.frombuffer(blob, "<f4")[read_header(blob)["header_words"]:]
    size = int(np.prod(resumed.env.single_observation_space.shape))
    assert words[3 * size] == 0.5       # after scale, mean and inv_std, each [size] (net.md)
    assert resumed.train()["finished"]
    assert "norm_obs_clip = 0.5" in (first / "config.toml").read_text()


def test_a_resumed_run_steps_with_the_optimizer_settings_it_is_given(tmp_path):
    """Adam's betas and epsilon (and Muon's momentum and weight decay) live in the optimizer
    state a checkpoint holds; resuming with other values of them steps with those, not
    silently with the saved ones. Without overrides the saved (equal) ones stay: exact."""
    first, _ = _stopped_run(tmp_path, "breakout", {"train.overlap": True, "env.max_steps": 11,
                                                   "train.optimizer": "muon"})
    resumed = Trainer.resume(str(first), overrides={
        "train.adam_beta1": 0.5, "train.adam_eps": 1e-5, "train.muon_momentum": 0.8,
        "train.weight_decay": 0.01})
    muon, adam = resumed.optimizer.optimizers
    assert muon.param_groups[0]["momentum"] == 0.8 and muon.param_groups[0]["weight_decay"] == 0.01
    assert adam.param_groups[0]["betas"][0] == 0.5 and adam.param_groups[0]["eps"] == 1e-5
    assert muon.state and adam.state          # the moments themselves are the checkpoint's
    resumed.close()
    same = Trainer.resume(str(first))
    assert same.optimizer.optimizers[1].param_groups[0]["eps"] == 1e-8 and same.exact_resume
    same.close()


def test_more_rollout_threads_than_the_c_rollout_runs_is_a_config_error(tmp_path):
    """vec_rollout runs at most 256 threads: more is refused when the trainer is built, naming
    the setting, not by a ValueError from the C call about its arguments."""
    cfg = build_config("breakout", overrides=dict(BASE, **{
        "train.rollout_threads": 300, "log.run_dir": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match="train.rollout_threads=300.*at most 256"):
        Trainer(cfg)


def test_overlap_chunks_without_overlap_is_a_config_error(tmp_path):
    """train.overlap_chunks only splits the batch an overlapped update collects: set without
    overlap it would be silently ignored, so the trainer refuses it, naming both fixes."""
    cfg = build_config("breakout", overrides=dict(BASE, **{
        "train.overlap": False, "train.overlap_chunks": 4, "log.run_dir": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match="overlap_chunks=4 needs train.overlap=true.*"
                                          "overlap_chunks=1"):
        Trainer(cfg)


@pytest.mark.parametrize("overlap,policy", [(True, "mlp"), (False, "lstm")])
def test_a_run_resumes_with_changed_env_parameters(tmp_path, overlap, policy):
    """A C env refuses a snapshot taken with other parameters (``env.max_steps`` here); the
    resumed run then restarts its episodes under the new parameters, with a note, as it does
    for any other change, instead of failing in the restore."""
    first, second = _stopped_run(tmp_path, "breakout", {
        "train.overlap": overlap, "policy.name": policy, "env.max_steps": 11})
    for run in (first, second):
        trainer = Trainer.resume(str(run), overrides={"env.max_steps": 5})
        assert trainer.exact_resume is False and "max_steps" in trainer.resume_note
        assert trainer.env.params["max_steps"] == 5
        assert trainer.train()["finished"]
    assert metric_rows(first) == metric_rows(second)


@pytest.mark.parametrize("overlap", [True, False])
def test_restarted_episodes_restart_their_discounted_returns(tmp_path, overlap):
    """When a resume restarts the episodes (here: changed env parameters), the reward scaler's
    per-agent discounted returns start again from 0 with them, as at a reset; its running
    statistics are kept. An exact resume keeps the returns of the episodes it continues."""
    import torch

    from shoal.trainer.checkpoint import load_checkpoint

    # drone: a shaped reward every step, so the returns at the stop are not 0
    first, second = _stopped_run(tmp_path, "drone", {
        "train.overlap": overlap, "train.norm_reward": True, "env.max_steps": 400})
    saved = load_checkpoint(str(first))["reward_scaler"]
    assert saved["returns"].abs().sum() > 0   # episodes were in progress at the stop
    exact = Trainer.resume(str(first))
    assert exact.exact_resume and torch.equal(exact.reward_scaler.returns, saved["returns"])
    exact.close()
    restarted = Trainer.resume(str(second), overrides={"env.max_steps": 300})
    assert restarted.exact_resume is False
    assert not restarted.reward_scaler.returns.any()
    assert float(restarted.reward_scaler.stats.count) == float(saved["stats"]["count"])
    restarted.close()


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_an_overlapped_run_resumes_without_overlap_from_the_end_of_its_collected_batch(
        tmp_path, policy):
    """An overlapped checkpoint holds a batch collected ahead and not trained on, the env
    stopped at its end. Resumed with ``train.overlap = false`` the run continues the env from
    there (the batch's slot T becomes slot 0, as the synchronous path carries it) and trains
    on, instead of refusing; that one collected batch is not trained on."""
    first, second = _stopped_run(tmp_path, "breakout", {
        "train.overlap": True, "policy.name": policy, "env.max_steps": 11})
    import torch

    from shoal.trainer.checkpoint import load_checkpoint

    pending = load_checkpoint(str(first))["fused"]
    for run in (first, second):
        trainer = Trainer.resume(str(run), overrides={"train.overlap": False})
        assert trainer.exact_resume and not trainer.fused.overlap
        b = trainer.storage
        for name in ("obs", "actions", "logprobs", "values", "starts", "masks"):
            assert torch.equal(getattr(b, name)[:, 0], pending[name][:, b.T]), name
        if policy == "lstm":
            assert torch.equal(b.state0[0], pending["state0_next"][0])
        assert trainer.train()["finished"]
    assert metric_rows(first) == metric_rows(second)


def test_ctrl_c_while_a_checkpoint_is_written_raises_keyboard_interrupt(tmp_path,
                                                                         default_stop_signals):
    """A Ctrl-C (KeyboardInterrupt) that lands while torch.save writes a checkpoint's records
    made torch's zip writer fail in its cleanup ('RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos ...'), which replaced the interrupt: the trainer, which
    saves what it can on KeyboardInterrupt, saw an unrelated error instead. The interrupt now
    comes out as itself, the temporary file is removed and the newest checkpoint kept."""
    import torch

    from shoal.trainer.checkpoint import latest_checkpoint, save_checkpoint

    run = tmp_path / "run"
    older = save_checkpoint(str(run / "checkpoints" / "checkpoint_0000001.pt"), {"epoch": 1})
    older_bytes = open(older, "rb").read()
    payload = {"epoch": 2, "weights": [torch.ones(1 << 20) for _ in range(16)]}   # 64 MB
    folder = run / "checkpoints"

    def writing() -> bool:
        try:
            return any(p.name.startswith(".tmp-") and p.stat().st_size > (4 << 20)
                       for p in folder.iterdir())
        except OSError:     # renamed while looked at
            return False

    def interrupt_once_writing() -> None:
        # a sixteenth of the write done, the rest to go: Ctrl-C (or give up once it ended)
        while not (folder / "checkpoint_0000002.pt").exists():
            if writing():
                os.kill(os.getpid(), signal.SIGINT)
                return

    sender = threading.Thread(target=interrupt_once_writing)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(folder / "checkpoint_0000002.pt"), payload)
    sender.join()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert latest_checkpoint(str(run)) == older and open(older, "rb").read() == older_bytes
