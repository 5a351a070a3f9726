"""shoal export: the generated main.c plays the env with the exported C policy. Parity over
recorded episodes: the program's observations are the ones shoal's env gives for the same seed
and actions, its greedy actions are torch's, and its logits (or Gaussian means) and values are
within 1e-5 of torch's (relative to the step's largest magnitude). MLP, CNN and LSTM policies;
Discrete and Box heads (MultiDiscrete, which no C env uses, is covered by tests/test_net.py);
single- and multi-agent envs. Every C env's program builds with exactly the documented
`cc -O2 main.c -o play` (no -lm) and replays its env bit for bit. The program also runs under
AddressSanitizer and UBSan."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import shoal
from shoal.tools import export
from shoal.trainer.action_masks import mask_logits
from shoal.trainer.eval_cli import load_policy
from shoal.tools.runs import load_run
from shoal.trainer.checkpoint import load_checkpoint
from tools_runs import write_run

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")]

FLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-function", "-Werror"]


def build(out_dir: str, flags: list[str] = FLAGS, name: str = "play",
          libs: tuple[str, ...] = ()) -> str:
    """Compiles main.c; no -lm (shoal_libm.h looks glibc's libm up at run time)."""
    exe = os.path.join(out_dir, name)
    run = subprocess.run(["cc", *flags, "main.c", "-o", name, *libs], cwd=out_dir,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return exe


def replay(run_dir: str, exe: str, env_name: str, params: dict, seed: int, steps: int) -> int:
    """Runs the program greedily for ``steps`` steps with --record, then checks every step
    against shoal's env and the torch policy; returns the episodes that ended."""
    record = os.path.join(os.path.dirname(exe), "steps.bin")
    out = subprocess.run([exe, "--greedy", "--quiet", "--seed", str(seed), "--episodes",
                          "1000", "--max-steps", str(steps), "--record", record],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    env = shoal.make(env_name, 1, seed=seed, **params)
    try:
        policy = load_policy(load_checkpoint(run_dir), env)
        dist = policy.distribution
        A, obs_shape = env.num_agents, env.single_observation_space.shape
        obs_dtype = env.observations.dtype
        P = dist.num_params
        box = dist.kind == "box"
        D = dist.action_dim if box else len(dist.nvec)
        row = np.dtype([("obs", obs_dtype, (A, *obs_shape)), ("params", "<f4", (A, P)),
                        ("values", "<f4", (A,)), ("actions", "<f4" if box else "<i4", (A, D))])
        steps_c = np.fromfile(record, dtype=row)
        assert len(steps_c) == steps
        obs, _ = env.reset(seed)
        state = policy.initial_state(A) if hasattr(policy, "initial_state") else None
        starts = torch.ones(A)
        ended = 0
        values_c: list[np.ndarray] = []
        values_torch: list[np.ndarray] = []
        for t, rec in enumerate(steps_c):
            assert np.array_equal(rec["obs"], obs), f"step {t}: the program's env diverged"
            with torch.no_grad():
                params_t, values_t, state = policy(torch.from_numpy(obs.copy()).unsqueeze(1),
                                                   state, starts.unsqueeze(1))
            params_t, values_t = params_t[:, 0], values_t[:, 0]
            scale = float(params_t.abs().max())
            np.testing.assert_allclose(rec["params"], params_t.numpy(), rtol=0,
                                       atol=1e-5 * max(scale, 1e-30), err_msg=f"step {t} params")
            values_c.append(rec["values"])
            values_torch.append(values_t.numpy())
            greedy = dist.mode(mask_logits(params_t, torch.from_numpy(env.action_masks),
                                           dist.nvec))
            if box:
                np.testing.assert_allclose(rec["actions"].reshape(greedy.shape), greedy.numpy(),
                                           rtol=0, atol=1e-5 * max(scale, 1e-30))
                env_actions = dist.to_env(torch.from_numpy(rec["actions"].reshape(greedy.shape)))
            else:
                assert np.array_equal(rec["actions"].reshape(greedy.shape), greedy.numpy()), \
                    f"step {t}: greedy actions differ"
                env_actions = greedy.to(torch.int32)
            obs, _, terminals, truncations, _ = env.step(env_actions.numpy())
            done = terminals | truncations
            ended += int(done[0])
            starts = torch.from_numpy(done.astype(np.float32))
        # a value is one dot product that may cancel to near 0: relative to the episode's scale
        values_torch_all = np.stack(values_torch)
        np.testing.assert_allclose(np.stack(values_c), values_torch_all, rtol=0,
                                   atol=1e-5 * float(np.abs(values_torch_all).max()))
        return ended
    finally:
        env.close()


CASES = [
    # (env, policy, env params, steps)
    ("breakout", "mlp", {"max_steps": 100}, 250),
    ("breakout", "lstm", {"max_steps": 100}, 250),
    ("breakout", "mlp", {"continuous": True, "max_steps": 100}, 150),   # Box head
    ("maze", "cnn", {"size": 9, "view": 7, "max_steps": 60}, 200),       # uint8, one-hot CNN
    ("forage", "lstm", {"max_steps": 40}, 100),                          # 8 agents, uint8 obs
    ("drone", "mlp", {"max_steps": 60}, 100),                            # Box(4)
    ("g2048", "mlp", {"max_steps": 60}, 150),                            # action masks
]


@pytest.mark.parametrize("env_name,policy,params,steps", CASES,
                         ids=[f"{c[0]}-{c[1]}{'-box' if c[2].get('continuous') else ''}"
                              for c in CASES])
def test_main_c_matches_shoal_env_and_torch_policy(tmp_path, env_name, policy, params, steps):
    run = write_run(str(tmp_path / "run"), env_name, policy, hidden=32, actor_gain=100.0,
                    **params)
    out = str(tmp_path / "out")
    result = export.export_run(run, out)
    assert sorted(os.listdir(out)) == ["env", "main.c", "policy.bin", "policy_weights.h",
                                       "shoal_env.h", "shoal_libm.h", "shoal_net.h"]
    assert result["main_c"] == os.path.join(out, "main.c")
    exe = build(out)
    ended = replay(run, exe, env_name, load_run(run).env_params, seed=11, steps=steps)
    assert ended >= 1                                   # the recording crossed an episode end


def test_main_c_plays_in_a_terminal_and_reports_scores(tmp_path):
    run = write_run(str(tmp_path / "run"), "breakout", "mlp", hidden=16, max_steps=60)
    out = str(tmp_path / "out")
    assert export.main([run, "-o", out]) == 0
    exe = build(out, ["-O2"])                        # the documented command
    play = subprocess.run([exe, "--fps", "0", "--episodes", "2", "--seed", "3"],
                          capture_output=True, text=True, timeout=60)
    assert play.returncode == 0, play.stderr
    assert play.stdout.count("bricks left") >= 2     # breakout's own text render, every step
    assert "breakout  episode 1/2  step 1  return" in play.stdout
    assert play.stdout.count("episode 1: score") == 1 and "episode 2: score" in play.stdout
    bad = subprocess.run([exe, "--episodes", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--episodes must be >= 1" in bad.stderr
    assert subprocess.run([exe, "--bogus"], capture_output=True, text=True).returncode == 2


# every C env: a folder of shoal/envs with a binding.c
C_ENVS = sorted(name for name in os.listdir(export.ENVS_DIR)
                if os.path.exists(os.path.join(export.ENVS_DIR, name, "binding.c")))


@pytest.mark.parametrize("env_name", C_ENVS)
def test_every_c_env_builds_with_plain_cc_and_replays_shoal_env(tmp_path, env_name):
    """`cc -O2 main.c -o play`, exactly: glibc's libm is not linked (shoal_libm.h finds it at run
    time), and the program's env still plays shoal's episodes bit for bit: its sinf, cosf,
    sqrtf, hypotf... are the same libm's (breakout's serve angles, drone's yaw, target's
    distances), which no other implementation would reproduce."""
    run = write_run(str(tmp_path / "run"), env_name, "mlp", hidden=16, actor_gain=100.0)
    out = str(tmp_path / "out")
    export.export_run(run, out)
    exe = build(out, ["-O2"])
    if shutil.which("ldd"):
        linked = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        assert "libm.so" not in linked, linked
    # the env's parameters as the run has them (its shipped config's, e.g. maze's prev_action)
    replay(run, exe, env_name, load_run(run).env_params, seed=5, steps=120)


def test_libm_can_be_linked_the_usual_way(tmp_path):
    """-lm -DSHOAL_LINK_LIBM (for a glibc before 2.34, whose dlopen is not in libc): the
    program calls libm directly and plays the same episodes."""
    run = write_run(str(tmp_path / "run"), "breakout", "mlp", hidden=16, actor_gain=100.0)
    out = str(tmp_path / "out")
    export.export_run(run, out)
    exe = build(out, [*FLAGS, "-DSHOAL_LINK_LIBM"], libs=("-lm",))
    if shutil.which("ldd"):
        assert "libm.so" in subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    replay(run, exe, "breakout", {}, seed=5, steps=120)


def _runtime(lib: str) -> str | None:
    found = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True)
    path = found.stdout.strip()
    return path if found.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(shutil.which("gcc") is None or _runtime("libasan.so") is None,
                    reason="needs gcc with the AddressSanitizer runtime")
@pytest.mark.parametrize("env_name,policy,params", [
    ("breakout", "lstm", {"max_steps": 100}), ("forage", "cnn", {"max_steps": 30}),
    ("g2048", "mlp", {"max_steps": 40})])
def test_main_c_under_address_and_undefined_behaviour_sanitizers(tmp_path, env_name, policy,
                                                                 params):
    run = write_run(str(tmp_path / "run"), env_name, policy, hidden=16, **params)
    out = str(tmp_path / "out")
    export.export_run(run, out)
    exe = build(out, ["-std=c11", "-O1", "-g", "-fsanitize=address,undefined",
                      "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
                      "-Wall", "-Wextra", "-Wno-unused-function", "-Werror"], name="play_asan")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    for args in (["--fps", "0", "--max-steps", "150"],
                 ["--quiet", "--episodes", "3", "--record", os.path.join(out, "r.bin")]):
        play = subprocess.run([exe, "--seed", "5", *args], capture_output=True, text=True,
                              env=env, timeout=300)
        assert play.returncode == 0, play.stderr[-4000:]
        assert "runtime error" not in play.stderr and "Sanitizer" not in play.stderr


def test_python_env_exports_the_policy_only(tmp_path):
    run = write_run(str(tmp_path / "run"), "gym:CartPole-v1", hidden=16)
    out = str(tmp_path / "out")
    result = export.export_run(run, out)
    assert result["main_c"] is None
    assert sorted(os.listdir(out)) == ["policy.bin", "policy_weights.h", "shoal_net.h"]
    words = np.fromfile(os.path.join(out, "policy.bin"), dtype="<u4")
    assert words[0] == 0x544E4853                        # the blob's magic number
    assert f"shoal_policy_words[{len(words)}]" in open(os.path.join(out, "policy_weights.h")).read()
    with pytest.raises(export.ExportError, match="Python env: --web needs one of shoal's C envs"):
        export.export_run(run, str(tmp_path / "web"), web=True)


def test_bad_runs_are_clear_errors(tmp_path, capsys):
    assert export.main([str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_env_sources_are_read_only_from_registered_envs(tmp_path):
    # a checkpoint's config names the env; a name that points outside shoal's envs (here an
    # absolute path to a folder laid out like one) must not have its C copied into main.c
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "binding.c").write_text("static int my_init(Env* env, PyObject* params) {\n}\n")
    (tmp_path / "crafted.h").write_text("/* not an env */\n")
    with pytest.raises(export.ExportError, match="is not one of shoal's C envs"):
        export.env_c_sources(str(crafted))
    assert "static int my_init(" in export.env_c_sources("maze")[2]
