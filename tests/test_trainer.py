"""The trainer's correctness points, each on an env whose outcome we control:

- a truncated episode bootstraps from V(final observation) (with the state it ended with); a
  terminated one does not;
- the recurrent state is reset at the same boundaries in the rollout and in training (replayed
  values/log-probs equal the stored ones before any update);
- masked (padded or dead) agents contribute nothing to the loss;
- exact resume: stopped after k epochs and resumed == uninterrupted;
- Ctrl-C checkpoints and closes the env; run directory files; checkpoints load with
  weights_only=True and bad ones give clear errors; `shoal eval`; Adam and Muon.

``ScriptedEnv`` is a pure-numpy vector env following the VecEnv interface: agent i's episodes
last ``lengths[i]`` steps and end as *terminal* for even i and *truncated* for odd i; the reward
is the action taken (0 or 1); rows listed in ``dead`` are padding (mask 0 always).
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

import shoal
from shoal.trainer import ppo
from shoal.trainer.advantage import compute_advantages
from shoal.trainer.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from shoal.trainer.config import build_config, default_config
from shoal.trainer.distributions import make_distribution
from shoal.trainer.policies import LSTMPolicy, MLPPolicy
from shoal.trainer.ppo import Minibatch, Trainer, ppo_loss, replay
from shoal.vector.base import VecEnv, allocate_buffers, buffer_layout

GAMMA = 0.9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ScriptedEnv(VecEnv):
    """See the module docstring. obs = [tick, row, 1, final-marker]."""

    def __init__(self, num_envs: int = 8, num_buffers: int = 1, seed: int = 0,
                 lengths: list[int] | None = None, dead: tuple[int, ...] = ()) -> None:
        obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        act_space = spaces.Discrete(2)
        buffers = allocate_buffers(buffer_layout(num_envs, obs_space, act_space, np.int32))
        self._setup(name="scripted", obs_space=obs_space, act_space=act_space, num_envs=num_envs,
                    agents_per_env=1, num_buffers=num_buffers, seed=seed, buffers=buffers)
        self.lengths = np.array(lengths or [3 + i % 5 for i in range(num_envs)])
        self.tick = np.zeros(num_envs, np.int64)
        self.ret = np.zeros(num_envs)
        self.log_sum = np.zeros((num_envs, 3))       # return, length, count
        self.dead = np.zeros(num_envs, bool)
        self.dead[list(dead)] = True
        self.masks[:] = ~self.dead
        self.closed_count = 0

    def _observe(self, rows: np.ndarray, out: np.ndarray, marker: float) -> None:
        out[rows, 0] = self.tick[rows]
        out[rows, 1] = rows
        out[rows, 2] = 1.0
        out[rows, 3] = marker

    def _reset(self, seed: int) -> None:
        self.tick[:] = 0
        self.ret[:] = 0
        self.log_sum[:] = 0
        self._observe(np.arange(self.num_envs), self.observations, 0.0)

    def _send(self, group: int) -> None:
        lo, hi = self.env_groups[group]
        rows = np.arange(lo, hi)
        self.rewards[rows] = self.actions[rows].astype(np.float32)
        self.terminals[rows] = False
        self.truncations[rows] = False
        self.tick[rows] += 1
        self.ret[rows] += self.rewards[rows]
        ended = rows[self.tick[rows] >= self.lengths[rows]]
        self.terminals[ended] = ended % 2 == 0
        self.truncations[ended] = ended % 2 == 1
        self._observe(ended, self.final_observations, 1.0)
        self.log_sum[ended] += np.stack([self.ret[ended], self.tick[ended], np.ones(len(ended))], 1)
        self.tick[ended] = 0
        self.ret[ended] = 0
        self._observe(rows, self.observations, 0.0)
        self._stepping[group] = False

    def _recv(self, group: int) -> None:
        pass

    def _log(self, group: int) -> dict[str, float]:
        lo, hi = self.env_groups[group]
        s = self.log_sum[lo:hi][~self.dead[lo:hi]].sum(0)
        self.log_sum[lo:hi] = 0
        if s[2] == 0:
            return {}
        return {"episode_return": s[0] / s[2], "episode_length": s[1] / s[2],
                "score": s[0] / s[1], "n": s[2]}

    def _render(self, index: int, mode: str):
        return ""

    def _close(self) -> None:
        self.closed_count += 1

    def save_state(self) -> dict:
        state = {f: getattr(self, f).copy() for f in ("observations", "rewards", "terminals",
                                                       "truncations", "final_observations",
                                                       "masks", "tick", "ret", "log_sum")}
        state["next_group"] = self._next
        return state

    def load_state(self, state: dict) -> None:
        for k, v in state.items():
            if k != "next_group":
                np.copyto(getattr(self, k), np.asarray(v))
        self._next = int(state["next_group"])
        self._held, self._ready = None, True


class ProbePolicy(nn.Module):
    """A policy whose value we control: a step counter ``h`` (reset at episode starts) is its
    recurrent state, value = 10 * final-marker + h after the step. Actions: learnable logits."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))
        self.distribution = make_distribution(spaces.Discrete(2))

    def initial_state(self, batch: int, device=None):
        return (torch.zeros(batch, 1, device=device),)

    def forward(self, obs, state, starts):
        B, L = obs.shape[:2]
        (h,) = state
        values = []
        for t in range(L):
            if starts is not None:
                h = h * (1 - starts[:, t:t + 1].float())
            h = h + 1
            values.append(10.0 * obs[:, t, 3:4] + h)
        values = torch.cat(values, 1)
        params = self.logits.expand(B, L, 2) + 0 * values.unsqueeze(-1)
        return params, values, (h,)


def small_config(**overrides) -> "ppo.Config":
    cfg = default_config()
    base = {"train.horizon": 8, "train.minibatch_size": 32, "train.total_steps": 10_000,
            "train.gamma": GAMMA, "log.dashboard": "off", "train.device": "cpu"}
    base.update(overrides)
    from shoal.trainer.config import apply_overrides

    apply_overrides(cfg, base)
    return cfg


def make_trainer(tmp_path, env=None, policy=None, name="run", **overrides) -> Trainer:
    cfg = small_config(**overrides)
    env = env if env is not None else ScriptedEnv()
    return Trainer(cfg, env=env, policy=policy, run_dir=str(tmp_path / name))


# ---- truncation bootstrapping ----

def test_truncation_bootstraps_from_final_value_and_termination_does_not(tmp_path):
    env = ScriptedEnv(num_envs=8, lengths=[3, 3, 4, 4, 5, 5, 2, 2])
    # raw rewards (reward scaling, on by default, would divide them), to check the bootstrap
    trainer = make_trainer(tmp_path, env, ProbePolicy(), **{"train.norm_reward": False})
    trainer.rollout()
    b = trainer.storage
    actions = b.actions[:, :8].float()
    checked = {"terminal": 0, "truncated": 0, "running": 0}
    for row in range(8):
        length = env.lengths[row]
        for t in range(8):
            ends = (t + 1) % length == 0
            assert b.dones[row, t] == float(ends)
            got = float(b.rewards[row, t])
            if ends and row % 2 == 1:
                # V(final obs) with the state the episode ended with: 10 * marker + (length + 1)
                want = float(actions[row, t]) + GAMMA * (10.0 + length + 1)
                checked["truncated"] += 1
            else:
                want = float(actions[row, t])
                checked["terminal" if ends else "running"] += 1
            assert got == pytest.approx(want, abs=1e-5), (row, t)
    assert checked["terminal"] > 0 and checked["truncated"] > 0
    trainer.close()


# ---- recurrent state boundaries ----

def _replay_matches(trainer: Trainer, idx: torch.Tensor, atol: float) -> None:
    b = trainer.storage
    mb = Minibatch(b, idx, torch.ones(len(idx)))
    with torch.no_grad():
        logp, _, values = replay(trainer.policy, trainer.distribution, mb)
    torch.testing.assert_close(values, b.values[idx, :trainer.T], atol=atol, rtol=0)
    torch.testing.assert_close(logp, b.logprobs[idx, :trainer.T], atol=atol, rtol=0)


def test_recurrent_boundaries_probe_exact(tmp_path):
    """The probe's value is the step count since the episode start: any boundary mismatch
    between rollout and training changes it by at least 1."""
    env = ScriptedEnv(num_envs=8, lengths=[3, 5, 2, 7, 4, 6, 9, 3])
    trainer = make_trainer(tmp_path, env, ProbePolicy())
    for epoch in range(3):  # epochs 2 and 3 start from the carried state (no update between)
        trainer.rollout()
        _replay_matches(trainer, torch.arange(8), atol=0.0)
        trainer.storage.shift()
    trainer.close()


def test_recurrent_boundaries_lstm_first_minibatch(tmp_path):
    """An LSTM on recall (episodes of 4 steps, so several per segment): the first minibatch's
    replayed values and log-probs equal the rollout's before any update."""
    env = shoal.make("recall", 16, seed=1, delay=2, num_buffers=2)
    torch.manual_seed(0)
    policy = LSTMPolicy(env.single_observation_space, env.single_action_space, hidden=32)
    trainer = make_trainer(tmp_path, env, policy, **{"train.horizon": 16,
                                                    "train.minibatch_size": 128})
    trainer.rollout()
    assert trainer.storage.starts[:, 1:].sum() > 16       # several episodes per segment
    draw = ppo.sample_segments(trainer.storage.advantages, trainer.storage.masks[:, :16], 8,
                               0.0, 1.0, trainer.sampler_generator)
    _replay_matches(trainer, draw.indices, atol=1e-5)
    # the check has teeth: ignoring the boundaries breaks it
    b = trainer.storage
    saved = b.starts.clone()
    b.starts.zero_()
    with pytest.raises(AssertionError):
        _replay_matches(trainer, draw.indices, atol=1e-5)
    b.starts.copy_(saved)
    trainer.close()


# ---- masks ----

def _grads(policy, distribution, storage, t) -> list[torch.Tensor]:
    policy.zero_grad()
    # the estimates the minibatch is drawn with, as Trainer.update computes them first
    compute_advantages(storage.values, storage.rewards, storage.dones, None, t.gamma,
                       t.gae_lambda, t.rho_clip, t.c_clip, out=storage.advantages)
    mb = Minibatch(storage, torch.arange(storage.S), torch.ones(storage.S))
    loss, _, _ = ppo_loss(policy, distribution, mb, t)
    loss.backward()
    return [p.grad.clone() for p in policy.parameters()]


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_masked_agents_contribute_nothing(tmp_path, kind):
    env = ScriptedEnv(num_envs=8, dead=(2, 5))
    torch.manual_seed(0)
    cls = MLPPolicy if kind == "mlp" else LSTMPolicy
    policy = cls(env.single_observation_space, env.single_action_space, hidden=16)
    trainer = make_trainer(tmp_path, env, policy)
    trainer.rollout()
    b, T = trainer.storage, trainer.T
    # also mask the steps of row 0 after its first terminal (a dead agent within a segment)
    first_end = int(torch.nonzero(b.dones[0])[0])
    b.masks[0, first_end + 1:] = 0
    b.starts[0, first_end + 1:] = 0
    t_cfg = trainer.config.train
    before = _grads(trainer.policy, trainer.distribution, b, t_cfg)

    masked = b.masks[:, :T] == 0
    assert masked[2].all() and masked[5].all() and masked[0].any()
    g = torch.Generator().manual_seed(1)
    obs = b.obs[:, :T]
    obs[masked] = torch.randn(obs[masked].shape, generator=g) * 100
    b.actions[:, :T][masked] = torch.randint(0, 2, (int(masked.sum()),), generator=g)
    b.logprobs[:, :T][masked] = torch.randn(int(masked.sum()), generator=g)
    b.rewards[masked] = torch.randn(int(masked.sum()), generator=g) * 10
    b.values[:, :T][masked] = torch.randn(int(masked.sum()), generator=g) * 10
    b.values[[2, 5], T] = 123.0
    after = _grads(trainer.policy, trainer.distribution, b, t_cfg)
    for x, y in zip(before, after):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)

    # control: changing a live step does change the gradient
    b.rewards[1, 0] += 5.0
    changed = _grads(trainer.policy, trainer.distribution, b, t_cfg)
    assert any(not torch.allclose(x, y) for x, y in zip(after, changed))
    trainer.close()


# ---- training runs: run directory, resume, interrupts ----

def _metrics(run_dir) -> list[tuple]:
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            m = json.loads(line)
            out.append((m["epoch"], m["agent_steps"], m["losses"], m["episodes"], m["score100"]))
    return out


RUN = {"train.total_steps": 8 * 8 * 10, "train.prio_alpha": 0.6, "log.checkpoint_interval": 3,
       "policy.name": "lstm", "policy.hidden": 16}


def test_plain_output_notes_routine_checkpoints_at_most_once_a_minute(tmp_path, capsys):
    trainer = make_trainer(tmp_path, **{**RUN, "log.checkpoint_interval": 1,
                                        "log.dashboard": "plain"})
    trainer.train()
    out = capsys.readouterr().out
    assert len(list_checkpoints(str(tmp_path / "run"))) >= 3     # one per epoch was written
    assert out.count("checkpoint: ") == 1, out


def test_run_directory_files(tmp_path):
    trainer = make_trainer(tmp_path, **RUN)
    summary = trainer.train()
    run = tmp_path / "run"
    assert summary["finished"] and summary["epochs"] == 10 and summary["agent_steps"] == 640
    for key in ("env", "agent_steps", "wall_seconds", "sps", "score", "episodes"):
        assert key in summary
    # score and episode_return are means over the last 100 episodes, not over the last epoch
    # (the scripted score is return / length: in [0, 1] and at most the return)
    assert 0 <= summary["score"] <= 1 and summary["episode_return"] >= summary["score"]
    trainer.last_metrics["episodes"] = {}          # an epoch in which no episode ended
    assert trainer.summary()["episode_return"] == summary["episode_return"]
    assert json.loads((run / "summary.json").read_text())["agent_steps"] == 640
    lines = _metrics(run)
    assert [line[0] for line in lines] == list(range(1, 11))
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first["time"]) == {"env", "inference", "learn", "other"}
    assert {"policy", "value", "entropy", "approx_kl", "clipfrac"} <= set(first["losses"])
    import tomllib

    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["train"]["total_steps"] == 640 and saved["policy"]["name"] == "lstm"
    ckpts = list_checkpoints(str(run))
    assert [os.path.basename(p) for p in ckpts] == [
        "checkpoint_0000006.pt", "checkpoint_0000009.pt", "checkpoint_0000010.pt"]
    assert not [f for f in os.listdir(run / "checkpoints") if f.startswith(".tmp")]
    data = torch.load(ckpts[-1], weights_only=True)
    for key in ("model", "optimizer", "rng", "config", "agent_steps", "carry", "env_state"):
        assert key in data
    assert env_closed(trainer)


def test_default_run_directory_is_one_safe_path_component(tmp_path, monkeypatch):
    """runs/<env>-<timestamp>: a gym:/pz: name with '/' or ':' gives one directory level."""
    monkeypatch.chdir(tmp_path)
    cfg = small_config(**{"train.total_steps": 64})
    cfg.env.name = "gym:ALE/Pong-v5"
    trainer = Trainer(cfg, env=ScriptedEnv())
    try:
        assert os.path.dirname(trainer.run_dir) == str(tmp_path / "runs")
        assert os.path.basename(trainer.run_dir).startswith("gym-ALE-Pong-v5-")
        assert os.listdir(tmp_path / "runs") == [os.path.basename(trainer.run_dir)]
        assert (tmp_path / "runs" / os.path.basename(trainer.run_dir) / "config.toml").exists()
    finally:
        trainer.close()
    from shoal.envs import list_envs
    from shoal.trainer.ppo import run_dir_label

    assert run_dir_label("gym:mod:Thing-v0") == "gym-mod-Thing-v0"
    assert run_dir_label("pz:butterfly/pistonball-v6") == "pz-butterfly-pistonball-v6"
    assert run_dir_label("pz:pettingzoo.butterfly.pistonball_v6") == \
        "pz-pettingzoo.butterfly.pistonball_v6"
    assert run_dir_label("gym:<lambda>") == "gym-lambda" and run_dir_label("") == "env"
    for name in list_envs():                      # C env names stay as they are
        assert run_dir_label(name) == name


def env_closed(trainer) -> bool:
    return trainer.env._closed


def test_resume_is_exact(tmp_path):
    make_trainer(tmp_path, name="whole", **RUN).train()
    stop_at_4 = lambda tr, m: tr.epoch == 4  # noqa: E731
    cfg = small_config(**RUN)
    part = Trainer(cfg, env=ScriptedEnv(), run_dir=str(tmp_path / "part"), callback=stop_at_4)
    summary = part.train()
    assert not summary["finished"] and summary["epochs"] == 4
    resumed = Trainer.resume(str(tmp_path / "part"), env=ScriptedEnv())
    assert resumed.epoch == 4
    summary = resumed.train()
    assert summary["finished"] and resumed.exact_resume
    assert _metrics(tmp_path / "whole") == _metrics(tmp_path / "part")


def test_resume_with_an_unregistered_env_object_keeps_its_params(tmp_path):
    """An env built outside the registry (an out-of-tree C env, a custom VecEnv) carries its own
    parameters; resuming with the env object must not look them up in the registry."""
    def env():
        e = ScriptedEnv()
        e.params = {"corridor": 7}
        return e

    cfg = small_config(**RUN)
    Trainer(cfg, env=env(), run_dir=str(tmp_path / "r"),
            callback=lambda tr, m: tr.epoch == 2).train()
    resumed = Trainer.resume(str(tmp_path / "r"), env=env())
    assert resumed.config.env.params == {"corridor": 7}
    assert resumed.train()["finished"]
    assert [m[0] for m in _metrics(tmp_path / "r")] == list(range(1, 11))


def test_resume_real_env_is_exact(tmp_path):
    """With a C env: needs env snapshots (VecEnv.save_state/load_state)."""
    probe = shoal.make("template", 2)
    has = callable(getattr(probe, "save_state", None))
    probe.close()
    if not has:
        pytest.skip("this build's vector envs cannot snapshot their state yet")
    over = {"train.total_steps": 6 * 32 * 16, "env.num_envs": 32, "env.num_buffers": 2,
            "train.horizon": 16, "train.minibatch_size": 128, "log.dashboard": "off",
            "train.prio_alpha": 0.5, "policy.name": "lstm", "policy.hidden": 16}
    whole = build_config("recall", overrides=dict(over, **{"log.run_dir": str(tmp_path / "a")}))
    Trainer(whole).train()
    part = build_config("recall", overrides=dict(over, **{"log.run_dir": str(tmp_path / "b")}))
    Trainer(part, callback=lambda tr, m: tr.epoch == 2).train()
    Trainer.resume(str(tmp_path / "b")).train()
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


@pytest.mark.usefixtures("default_stop_signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_checkpoints_and_closes(tmp_path, signum):
    """Ctrl-C, and SIGTERM (what schedulers and containers send), finish the epoch, checkpoint
    and return; the handlers are put back afterwards."""
    def interrupt(tr, m):
        if tr.epoch == 3:
            os.kill(os.getpid(), signum)

    env = ScriptedEnv()
    trainer = Trainer(small_config(**RUN), env=env, run_dir=str(tmp_path / "r"),
                      callback=interrupt)
    summary = trainer.train()
    assert not summary["finished"] and summary["epochs"] == 3
    assert summary["stopped_by"] == signal.Signals(signum).name
    assert os.path.basename(list_checkpoints(str(tmp_path / "r"))[-1]) == "checkpoint_0000003.pt"
    assert env.closed_count == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ignored_signals_stay_ignored(tmp_path):
    """A process that ignores SIGTERM (or handles it itself) keeps doing so while training."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        seen = []
        trainer = Trainer(small_config(**RUN), env=ScriptedEnv(), run_dir=str(tmp_path / "r"),
                          callback=lambda tr, m: seen.append(signal.getsignal(signal.SIGTERM)))
        assert trainer.train()["finished"]
        assert seen and all(h == signal.SIG_IGN for h in seen)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_hard_interrupt_closes_env_and_reraises(tmp_path):
    def abort(tr, m):
        if tr.epoch == 2:
            raise KeyboardInterrupt

    env = ScriptedEnv()
    trainer = Trainer(small_config(**RUN), env=env, run_dir=str(tmp_path / "r"), callback=abort)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert env.closed_count == 1
    assert list_checkpoints(str(tmp_path / "r"))           # something to resume from


def test_ctrl_c_closes_threaded_env(tmp_path):
    cfg = build_config("template", overrides={
        "env.num_envs": 16, "env.backend": "threads", "env.num_workers": 2,
        "env.num_buffers": 2, "train.horizon": 8, "train.minibatch_size": 64,
        "train.total_steps": 10_000, "log.dashboard": "off", "log.run_dir": str(tmp_path / "r")})
    trainer = Trainer(cfg, callback=lambda tr, m: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.env._closed


def test_threads_backend_matches_serial(tmp_path):
    def run(backend, name):
        cfg = build_config("template", overrides={
            "env.num_envs": 16, "env.backend": backend, "env.num_workers": 2,
            "env.num_buffers": 2, "train.horizon": 8, "train.minibatch_size": 64,
            "train.total_steps": 16 * 8 * 4, "log.dashboard": "off",
            "log.run_dir": str(tmp_path / name)})
        Trainer(cfg).train()
        return _metrics(tmp_path / name)

    assert run("serial", "s") == run("threads", "t")


# ---- checkpoints and eval ----

def test_checkpoint_errors(tmp_path):
    trainer = make_trainer(tmp_path, **dict(RUN, **{"train.total_steps": 128}))
    trainer.train()
    path = list_checkpoints(str(tmp_path / "run"))[-1]
    assert load_checkpoint(path)["epoch"] == 2

    bad = tmp_path / "bad.pt"
    bad.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(bad))
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointError, match="not a shoal checkpoint"):
        load_checkpoint(str(junk))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_checkpoint(str(tmp_path))
    # a different architecture: a clear error naming the likely cause
    with pytest.raises(CheckpointError, match="policy"):
        Trainer.resume(str(tmp_path / "run"), env=ScriptedEnv(),
                       overrides={"policy.hidden": 32})


def test_eval_cli(tmp_path, capsys):
    from shoal.trainer.eval_cli import evaluate, main

    cfg = build_config("template", overrides={
        "env.num_envs": 32, "train.horizon": 16, "train.minibatch_size": 128,
        "train.total_steps": 32 * 16 * 30, "log.dashboard": "off",
        "log.run_dir": str(tmp_path / "r")})
    summary = Trainer(cfg).train()
    assert summary["score"] > 0.9
    assert main(["template", "--checkpoint", str(tmp_path / "r"), "--episodes", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("score ") and float(out.split()[1]) > 0.9
    assert evaluate(str(tmp_path / "r"), episodes=20, greedy=True)["score"] == 1.0
    assert main(["bandit", "--checkpoint", str(tmp_path / "r")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["template", "--checkpoint", str(tmp_path / "junk.pt")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_muon_updates_matrices_with_muon(tmp_path):
    trainer = make_trainer(tmp_path, **{"train.optimizer": "muon", "train.total_steps": 128,
                                        "policy.hidden": 16})
    # (the Adam is shoal.trainer.optim.FusedAdam, an Adam)
    kinds = {"Adam" if isinstance(o, torch.optim.Adam) else type(o).__name__: o
             for o in trainer.optimizer.optimizers}
    assert set(kinds) == {"Muon", "Adam"}
    assert all(p.ndim == 2 for g in kinds["Muon"].param_groups for p in g["params"])
    assert all(p.ndim != 2 for g in kinds["Adam"].param_groups for p in g["params"])
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    summary = trainer.train()
    assert summary["finished"]
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.policy.parameters()))


def test_muon_on_a_torch_without_it_is_a_config_error(tmp_path):
    """pyproject allows torch >= 2.4; torch.optim.Muon arrived in 2.9. The child process removes
    Muon from torch.optim before shoal runs, as an older torch lacks it."""
    import subprocess
    import sys

    code = ("import sys, torch; del torch.optim.Muon\n"
            "from shoal.trainer.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "template", "--train.optimizer", "muon",
         "--train.total-steps", "64", "--log.dashboard", "off", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch.optim.Muon" in lines[0] and "2.9" in lines[0], proc.stderr


def test_shoal_train_function(tmp_path):
    summary = shoal.train("template", env_num_envs=16, train_horizon=8,
                          train_minibatch_size=64, train_total_steps=16 * 8 * 3,
                          log_dashboard="off", log_run_dir=str(tmp_path / "r"))
    assert summary["env"] == "template" and summary["agent_steps"] == 384
    with pytest.raises(ValueError, match="train.learning_rate"):
        shoal.train("template", train_learnin_rate=0.1, log_dashboard="off")


def test_adam_runs_fused_and_takes_the_steps_of_the_default_adam():
    """make_optimizer's Adam is torch's fused kernel on the CPU (one kernel per step instead of
    ~10 ops per parameter tensor), and it moves the weights as the default Adam does, to float32
    rounding, whatever the gradients' layout; a checkpoint saved by code that used the default
    kernel keeps the fused one."""
    from shoal.trainer.config import TrainConfig

    torch.manual_seed(0)
    t = TrainConfig()
    policy = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 3))
    initial = [p.detach().clone() for p in policy.parameters()]
    reference = [p.detach().clone().requires_grad_() for p in policy.parameters()]
    opt = ppo.make_optimizer(policy, t)
    assert all(g["fused"] for g in opt.param_groups)
    default = torch.optim.Adam(reference, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                               eps=t.adam_eps)
    for _ in range(20):
        grads = [torch.randn_like(p) for p in reference]
        for p, q, g in zip(policy.parameters(), reference, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        default.step()
    for p, q, p0 in zip(policy.parameters(), reference, initial):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        assert float((p.detach() - p0).abs().max()) > 3 * t.learning_rate   # steps were taken
    # a gradient laid out unlike its parameter (a transposed view, as torch.autograd.grad can
    # return and train.learner_threads assigns): torch's fused CPU kernel alone scrambles it
    for p, q in zip(policy.parameters(), reference):
        g = torch.randn(tuple(reversed(p.shape))).t() if p.ndim == 2 else torch.randn(p.shape)
        p.grad, q.grad = g.clone(memory_format=torch.preserve_format), g.contiguous()
    assert any(p.grad.stride() != p.stride() for p in policy.parameters())
    opt.step()
    default.step()
    for p, q in zip(policy.parameters(), reference):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    saved = {"optimizers": [default.state_dict()]}
    assert not saved["optimizers"][0]["param_groups"][0]["fused"]
    opt.load_state_dict(saved)
    assert all(g["fused"] for g in opt.param_groups)


def test_compiled_policy_trains_and_matches_the_eager_run(tmp_path):
    """train.compile = true: the compiled forward replays minibatches (a compiled module has no
    truth value, so the replay must not test it for one) and, with every op the same, training
    follows the eager run's losses."""
    over = {"train.total_steps": 8 * 8 * 3, "policy.hidden": 16}
    eager = make_trainer(tmp_path, name="eager", **over).train()
    compiled = make_trainer(tmp_path, name="compiled", **over, **{"train.compile": True}).train()
    assert eager["finished"] and compiled["finished"]
    e, c = _metrics(tmp_path / "eager"), _metrics(tmp_path / "compiled")
    assert len(e) == len(c) == 3
    for a, b in zip(e, c):                       # (epoch, agent_steps, losses, ...)
        assert b[:2] == a[:2]
        assert b[2] == pytest.approx(a[2], rel=1e-3, abs=1e-5)
