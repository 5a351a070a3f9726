"""shoal_net.h (the C policy) against the torch policies: forward parity on random and recorded
observations for every policy and head, sampling that a torch reference reproduces, the blob
checks, and the header compiled alone into a C program."""

import os
import platform
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.net import header_path
from shoal.net.export import HEADER_FIELDS, export_checkpoint, export_policy, read_header
from shoal.net.runtime import CPolicy, agent_rng, agent_uniforms, sample_from_uniforms
from shoal.trainer.obs_norm import attach_observation_normalizer, preprocessed_features
from shoal.trainer.policies import MLPPolicy, make_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RTOL = 1e-5

F32 = spaces.Box(-1.0, 1.0, (29,), np.float32)
CASES = {
    # name: (policy name, observation space, action space, policy kwargs)
    "mlp-discrete": ("mlp", F32, spaces.Discrete(3), {}),
    "mlp-discrete-start": ("mlp", spaces.Box(-5.0, 5.0, (7,), np.float32),
                           spaces.Discrete(4, start=-1), {"activation": "relu"}),
    "mlp-onehot-uint8": ("mlp", spaces.Box(0, 17, (16,), np.uint8), spaces.Discrete(4), {}),
    "mlp-discrete-obs": ("mlp", spaces.Discrete(6, start=2), spaces.Discrete(2), {}),
    "mlp-int16-scaled": ("mlp", spaces.Box(-300, 300, (5,), np.int16), spaces.Discrete(2),
                         {"activation": "silu"}),
    "mlp-multidiscrete": ("mlp", F32, spaces.MultiDiscrete([3, 5, 2]), {"layers": 3}),
    "mlp-box-unshared": ("mlp", spaces.Box(-1.0, 1.0, (21,), np.float32),
                         spaces.Box(-1.0, 1.0, (4,), np.float32),
                         {"shared": False, "activation": "tanh"}),
    "cnn-grid-onehot": ("cnn", spaces.Box(0, 2, (11, 11), np.uint8), spaces.Discrete(5), {}),
    "cnn-image-strided": ("cnn", spaces.Box(0, 255, (36, 20, 3), np.uint8),
                          spaces.MultiDiscrete([3, 3]), {"channels": 8}),
    "lstm-mlp-discrete": ("lstm", F32, spaces.Discrete(3), {"hidden": 64}),
    "lstm-mlp-box": ("lstm", F32, spaces.Box(-2.0, 2.0, (3,), np.float32), {"hidden": 32}),
    "lstm-cnn-multidiscrete": ("lstm", spaces.Box(0, 3, (7, 7), np.uint8),
                               spaces.MultiDiscrete([4, 2]), {"encoder": "cnn", "hidden": 32}),
    # the observation normalisation stage (train.norm_obs), some elements clipped
    "mlp-box-unshared-norm": ("mlp", spaces.Box(-np.inf, np.inf, (13,), np.float32),
                              spaces.Box(-1.0, 1.0, (2,), np.float32),
                              {"shared": False, "norm_obs_clip": 1.5}),
    "lstm-mlp-norm-f64": ("lstm", spaces.Box(-2.0, 2.0, (6,), np.float64), spaces.Discrete(3),
                          {"hidden": 32, "norm_obs_clip": 10.0}),
    "cnn-image-norm": ("cnn", spaces.Box(0, 255, (20, 12, 3), np.uint8),
                       spaces.MultiDiscrete([3, 2]), {"channels": 8, "norm_obs_clip": 2.0}),
}


def _policy(case: str, seed: int = 0) -> torch.nn.Module:
    name, obs_space, act_space, kwargs = CASES[case]
    kwargs = dict(kwargs)
    clip = kwargs.pop("norm_obs_clip", None)
    torch.manual_seed(seed)
    policy = make_policy((obs_space, act_space), name, **kwargs)
    if clip is not None:
        # statistics of observations on another scale than the test's, so some are clipped
        norm = attach_observation_normalizer(policy, clip)
        sample = torch.from_numpy(_random_obs(obs_space, 64, seed=100 + seed))
        norm.update(preprocessed_features(policy, sample) * 0.5 + 0.25)
    # move away from the initialisation (actor weights start ~0), as training does
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def _random_obs(space: spaces.Space, n: int, seed: int) -> np.ndarray:
    space.seed(seed)
    return np.stack([np.asarray(space.sample()) for _ in range(n)])


def _assert_close(c: np.ndarray, ref: torch.Tensor, what: str) -> None:
    """|c - ref| <= 1e-5 * max|ref| elementwise (relative to the tensor's scale: float32 sums
    in a different order differ by a few ulps of the largest terms, not of each result)."""
    ref = ref.detach().numpy().reshape(c.shape)
    scale = float(np.abs(ref).max()) or 1.0
    err = float(np.abs(c - ref).max())
    assert err <= RTOL * scale, f"{what}: max error {err:.3g} > {RTOL} x {scale:.3g}"


def _torch_step(policy, obs, starts, state):
    with torch.no_grad():
        params, values, new_state = policy(
            torch.from_numpy(obs).unsqueeze(1), state,
            None if starts is None else torch.from_numpy(starts).unsqueeze(1))
    return params.reshape(len(obs), -1), values.reshape(-1), new_state


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_torch_on_random_observations(case):
    policy = _policy(case)
    obs_space = CASES[case][1]
    cpolicy = CPolicy.from_policy(policy)
    B = 45  # not a multiple of the C tile
    rng = np.random.default_rng(1)
    state_t = getattr(policy, "initial_state", lambda b: None)(B)
    state_c = cpolicy.initial_state(B)
    for step in range(4):
        obs = _random_obs(obs_space, B, seed=step).astype(CASES[case][1].dtype
                                                          if hasattr(obs_space, "dtype") else None)
        starts = (rng.random(B) < 0.3).astype(np.float32)
        params_t, values_t, state_t = _torch_step(policy, obs, starts, state_t)
        params_c, values_c = cpolicy.forward(obs, starts, state_c)
        _assert_close(params_c, params_t, f"{case} params, step {step}")
        _assert_close(values_c, values_t, f"{case} values, step {step}")
        if state_c is not None:
            _assert_close(state_c[0], state_t[0], f"{case} h, step {step}")
            _assert_close(state_c[1], state_t[1], f"{case} c, step {step}")
            # continue both from the same state, so each step checks one step's error
            state_t = tuple(torch.from_numpy(s.copy()) for s in state_c)


def _record(env_name: str, policy_name: str, steps: int, **kwargs):
    """(policy, observations [steps, N, ...], starts [steps, N]) from a real C env played by a
    random policy."""
    from shoal.vector import make

    env = make(env_name, num_envs=4, seed=3, backend="serial", **kwargs)
    try:
        torch.manual_seed(0)
        policy = make_policy(env, policy_name, hidden=32).eval()
        env.reset(3)
        obs, starts = [], []
        start = np.ones(env.num_agents, np.float32)
        rng = np.random.default_rng(0)
        space = env.single_action_space
        for _ in range(steps):
            env.recv()
            obs.append(env.observations.copy())
            starts.append(start.copy())
            if isinstance(space, spaces.Box):
                env.actions[:] = rng.uniform(-1, 1, env.actions.shape)
            else:
                env.actions[:] = rng.integers(0, space.n, env.actions.shape)
            env.send(env.actions)
            start = (env.terminals | env.truncations).astype(np.float32)
        return policy, np.stack(obs), np.stack(starts), env.observations.dtype
    finally:
        env.close()


@pytest.mark.parametrize("env_name,policy_name", [
    ("breakout", "mlp"), ("breakout", "lstm"), ("maze", "cnn"), ("g2048", "mlp"),
    ("drone", "lstm"), ("forage", "cnn"), ("tetris", "mlp")])
def test_forward_matches_torch_on_recorded_episodes(env_name, policy_name):
    policy, obs, starts, obs_dtype = _record(env_name, policy_name, steps=40)
    cpolicy = CPolicy.from_policy(policy, obs_dtype)
    N = obs.shape[1]
    state_t = getattr(policy, "initial_state", lambda b: None)(N)
    state_c = cpolicy.initial_state(N)
    # the whole sequence through torch at once (training's path) against C step by step
    with torch.no_grad():
        params_seq, values_seq, _ = policy(torch.from_numpy(obs).transpose(0, 1), state_t,
                                           torch.from_numpy(starts).transpose(0, 1))
    for t in range(obs.shape[0]):
        params_c, values_c = cpolicy.forward(obs[t], starts[t], state_c)
        _assert_close(params_c, params_seq[:, t], f"{env_name} params, step {t}")
        _assert_close(values_c, values_seq[:, t], f"{env_name} values, step {t}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampling_is_reproduced_by_the_torch_reference(case):
    policy = _policy(case)
    cpolicy = CPolicy.from_policy(policy)
    B = 300
    obs = _random_obs(CASES[case][1], B, seed=9)
    params, _ = cpolicy.forward(obs, None, cpolicy.initial_state(B))
    rng_c = agent_rng(B, seed=7)
    rng_ref = rng_c.copy()
    for _ in range(3):
        actions_c, logp_c = cpolicy.sample(params, rng_c)
        uniforms = agent_uniforms(rng_ref, cpolicy.num_params)
        actions_t, logp_t = sample_from_uniforms(policy.distribution, torch.from_numpy(params),
                                                 torch.from_numpy(uniforms))
        actions_t = actions_t.reshape(actions_c.shape).numpy()
        if cpolicy.head == "box":
            np.testing.assert_allclose(actions_c, actions_t, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(actions_c, actions_t)
        np.testing.assert_allclose(logp_c, logp_t.numpy(), rtol=1e-5, atol=1e-5)
        # the log-probs are the distribution's, of the actions taken
        scored = policy.distribution.log_prob(
            torch.from_numpy(params),
            torch.from_numpy(actions_c).reshape(B, *policy.distribution.action_shape))
        np.testing.assert_allclose(logp_c, scored.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(rng_c, rng_ref)   # both consumed num_params uniforms per row


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_is_the_distribution_mode(case):
    policy = _policy(case)
    cpolicy = CPolicy.from_policy(policy)
    B = 64
    obs = _random_obs(CASES[case][1], B, seed=4)
    params, _ = cpolicy.forward(obs, None, cpolicy.initial_state(B))
    actions, logp = cpolicy.sample(params, None, greedy=True)
    p = torch.from_numpy(params)
    mode = policy.distribution.mode(p)
    np.testing.assert_allclose(actions.reshape(mode.shape), mode.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(logp, policy.distribution.log_prob(p, mode).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_sampled_actions_follow_the_softmax():
    policy = _policy("mlp-multidiscrete")
    cpolicy = CPolicy.from_policy(policy)
    params = np.tile(np.array([[0.0, 1.0, -1.0, 0.5, 0.5, 0.5, 2.0, -2.0, 0.0, 1.0]], np.float32),
                     (20000, 1))
    actions, _ = cpolicy.sample(params, agent_rng(len(params), seed=1))
    for k, (lo, hi) in enumerate(((0, 3), (3, 8), (8, 10))):
        expected = torch.softmax(torch.from_numpy(params[0, lo:hi]), -1).numpy()
        freq = np.bincount(actions[:, k], minlength=hi - lo) / len(actions)
        np.testing.assert_allclose(freq, expected, atol=0.015)


def test_box_noise_is_standard_normal():
    policy = _policy("lstm-mlp-box")
    cpolicy = CPolicy.from_policy(policy)
    params = np.zeros((20000, 6), np.float32)        # mean 0, log_std 0
    actions, logp = cpolicy.sample(params, agent_rng(len(params), seed=2))
    assert abs(actions.mean()) < 0.02 and abs(actions.std() - 1.0) < 0.02
    assert np.isfinite(logp).all()


def _splitmix_reference(seed: int, agents: int, draws: int) -> np.ndarray:
    """The documented RNG in plain Python integers."""
    mask = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    out = np.empty((agents, draws), np.float32)
    for i in range(agents):
        state = mix((seed + 0xD1B54A32D192ED03 * (i + 1)) & mask)
        for j in range(draws):
            state = (state + 0x9E3779B97F4A7C15) & mask
            out[i, j] = np.float32(((mix(state) >> 40) | 1) * 2.0**-24)
    return out


def test_rng_is_the_documented_splitmix64():
    states = agent_rng(5, seed=123)
    np.testing.assert_array_equal(agent_uniforms(states, 7), _splitmix_reference(123, 5, 7))
    # agent i's stream depends only on (seed, i): seeding a slice gives the same states
    np.testing.assert_array_equal(agent_rng(3, seed=9, first=2), agent_rng(5, seed=9)[2:])


def test_results_do_not_depend_on_the_thread_count():
    policy = _policy("lstm-cnn-multidiscrete")
    blob = export_policy(policy)
    obs = _random_obs(CASES["lstm-cnn-multidiscrete"][1], 300, seed=5)
    outs = []
    for threads in (1, 2, 3):
        cp = CPolicy(blob, threads=threads)
        state = cp.initial_state(300)
        params, values = cp.forward(obs, None, state)
        actions, logp = cp.sample(params, agent_rng(300, 4))
        outs.append((params, values, state[0], actions, logp))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


# ---- bad weights and bad arguments: clear errors ----

def _blob(case: str = "mlp-discrete") -> bytes:
    return export_policy(_policy(case))


def _set_word(blob: bytes, index: int, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<i", b, 4 * index, value)
    return bytes(b)


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b[:-4], "size mismatch"),
    (lambda b: b + b"\0\0\0\0", "size mismatch"),
    (lambda b: b[:-2], "whole 32-bit words"),
    (lambda b: b[:40], "too short"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: _set_word(b, 1, 99), "layout version 99"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("hidden"), 100), "weights"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("activation"), 9), "unknown activation 9"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("head"), 7), "unknown action head 7"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("obs_dtype"), -3), "dtype code -3"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("hidden"), -1), "hidden width -1"),
    (lambda b: _set_word(b, HEADER_FIELDS.index("header_words"), 2**30), "header length"),
    (lambda b: _set_word(b, len(HEADER_FIELDS), 4), "add up"),
    (lambda b: _set_word(b, len(HEADER_FIELDS) + 5, 0x7FC00000), "NaN or infinite"),
    (lambda b: _set_word(b, len(HEADER_FIELDS) + 5, 0x7F800000), "NaN or infinite"),
])
def test_bad_blobs_are_clear_errors(mutate, message):
    with pytest.raises(ValueError, match=message):
        CPolicy(mutate(_blob()))


def _as_version1(blob: bytes) -> bytes:
    """A blob without the normalisation stage rewritten in layout version 1 (23 fixed header
    words: no obs_norm word), as exports made before version 2 were."""
    assert read_header(blob)["obs_norm"] == 0
    header_words = read_header(blob)["header_words"]
    old = bytearray(blob[:4 * 23] + blob[4 * 24:])
    struct.pack_into("<ii", old, 4, 1, header_words - 1)
    return bytes(old)


@pytest.mark.parametrize("case", ["mlp-multidiscrete", "lstm-mlp-box", "cnn-grid-onehot"])
def test_version1_blobs_still_load_and_run_the_same(case):
    policy = _policy(case)
    blob = export_policy(policy)
    old = _as_version1(blob)
    fields = read_header(old)
    assert fields["version"] == 1 and fields["obs_norm"] == 0
    assert fields.get("nvec") == read_header(blob).get("nvec")
    B = 20
    obs = _random_obs(CASES[case][1], B, seed=3)
    new_c, old_c = CPolicy(blob), CPolicy(old)
    out_new = new_c.forward(obs, None, new_c.initial_state(B))
    out_old = old_c.forward(obs, None, old_c.initial_state(B))
    for a, b in zip(out_new, out_old):
        np.testing.assert_array_equal(a, b)


def test_the_normalisation_stage_is_checked_on_load():
    blob = export_policy(_policy("mlp-box-unshared-norm"))
    fields = read_header(blob)
    assert fields["version"] == 2 and fields["obs_norm"] == 1
    flag = HEADER_FIELDS.index("obs_norm")
    with pytest.raises(ValueError, match="obs_norm flag 2"):
        CPolicy(_set_word(blob, flag, 2))
    with pytest.raises(ValueError, match="fewer than the architecture|more than the architecture"):
        CPolicy(_set_word(blob, flag, 0))            # the stage's weights are then left over
    E = 13
    clip_word = fields["header_words"] + E + 2 * E   # scale [E], mean [E], inv_std [E], clip
    b = bytearray(blob)
    struct.pack_into("<f", b, 4 * clip_word, -1.0)
    with pytest.raises(ValueError, match="clip must be positive"):
        CPolicy(bytes(b))
    onehot = export_policy(_policy("mlp-onehot-uint8"))
    with pytest.raises(ValueError, match="one-hot"):
        CPolicy(_set_word(onehot, flag, 1))
    with pytest.raises(ValueError, match="one-hot|observations read as numbers"):
        attach_observation_normalizer(_policy("mlp-onehot-uint8"))
    with pytest.raises(ValueError, match="one-hot"):
        attach_observation_normalizer(_policy("mlp-discrete-obs"))


def test_random_corruption_never_faults():
    """Flipped words anywhere in the header: load either fails with a message or gives a net
    that runs (checked further under the sanitizers by tests/support/fuzz_net.py)."""
    blob = _blob("lstm-cnn-multidiscrete")
    rng = np.random.default_rng(0)
    words = len(read_header(blob)["nvec"]) + len(HEADER_FIELDS)
    for _ in range(300):
        b = _set_word(blob, int(rng.integers(0, words)), int(rng.integers(-2**31, 2**31)))
        try:
            cp = CPolicy(b)
        except ValueError as exc:
            assert str(exc).startswith("weights:")


def test_unsupported_policies_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="cannot be exported"):
        export_policy(torch.nn.Linear(3, 3))
    gelu_tanh = _policy("mlp-discrete")
    gelu_tanh.encoder.net[1] = torch.nn.GELU(approximate="tanh")
    with pytest.raises(ValueError, match="approximate"):
        export_policy(gelu_tanh)
    cp = CPolicy(_blob())
    with pytest.raises(ValueError, match="float32"):
        cp.forward(np.zeros((3, 29), np.float64))
    with pytest.raises(ValueError, match="29 values per row|B, 29"):
        cp.forward(np.zeros((3, 28), np.float32))
    with pytest.raises(ValueError, match="rng"):
        cp.sample(np.zeros((3, 3), np.float32), None)
    lstm = CPolicy(_blob("lstm-mlp-discrete"))
    with pytest.raises(ValueError, match="recurrent"):
        lstm.forward(np.zeros((3, 29), np.float32))
    nan_policy = _policy("mlp-discrete")
    with torch.no_grad():
        nan_policy.heads.critic.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        export_policy(nan_policy)


def test_export_checkpoint_of_a_trained_run(tmp_path):
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    cfg = build_config("breakout", overrides={
        "train.total_steps": 2 * 16 * 8, "env.num_envs": 16, "train.horizon": 8,
        "train.minibatch_size": 64, "log.dashboard": "off", "policy.name": "lstm",
        "policy.hidden": 16, "log.run_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    trainer.train()
    blob = export_checkpoint(str(tmp_path / "run"), out=str(tmp_path / "policy.bin"))
    assert open(tmp_path / "policy.bin", "rb").read() == blob
    assert read_header(blob)["lstm"] == 1
    cp = CPolicy(blob)
    obs = trainer.storage.obs[:, 0].numpy()
    state = cp.initial_state(len(obs))
    params, values = cp.forward(obs, None, state)
    ref = export_policy(trainer.policy, trainer.env.observations.dtype)
    assert ref == blob


# ---- the header alone, in a C program ----

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "shoal_net.h"

int main(int argc, char** argv) {
    if (argc != 3) return 4;
    FILE* f = fopen(argv[1], "rb");
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    float* blob = malloc((size_t)n);
    if (fread(blob, 1, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    shoal_net net; char err[256];
    if (shoal_net_load(&net, blob, (size_t)n, err, sizeof err) != 0) { printf("error %s\n", err); return 2; }
    int B = atoi(argv[2]);
    float* obs = malloc(sizeof(float) * (size_t)(B * net.obs_elems));
    for (int i = 0; i < B * net.obs_elems; i++) obs[i] = (float)((i * 37) % 200) / 100.0f - 1.0f;
    float* scratch = malloc(sizeof(float) * (size_t)shoal_net_scratch_floats(&net));
    float* h = calloc((size_t)(B * net.hidden), sizeof(float));
    float* c = calloc((size_t)(B * net.hidden), sizeof(float));
    float* params = malloc(sizeof(float) * (size_t)(B * net.num_params));
    float* values = malloc(sizeof(float) * (size_t)B);
    int32_t* actions = malloc(sizeof(int32_t) * (size_t)(B * net.action_dims));
    float* logp = malloc(sizeof(float) * (size_t)B);
    uint64_t* rng = malloc(sizeof(uint64_t) * (size_t)B);
    shoal_net_rng_seed(rng, B, 11, 0);
    for (int step = 0; step < 3; step++) {
        shoal_net_forward(&net, B, obs, NULL, h, c, params, values, scratch);
        shoal_net_sample(&net, B, params, rng, 0, actions, NULL, logp);
        for (int r = 0; r < B; r++) printf("%d %.9g %.9g\n", actions[r], logp[r], values[r]);
    }
    return 0;
}
"""


# the portable kernels under AddressSanitizer and UBSan (the extension's sanitizer build,
# tests/test_sanitizers.py, checks the kernels -march=native selects)
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-g"]


def _cpu_has(flags: list[str]) -> bool:
    """Whether this CPU runs code built with these -m flags (from /proc/cpuinfo's flag list)."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = {w for line in f if line.startswith("flags") for w in line.split(":")[1].split()}
    except OSError:
        return False
    return all(f[2:] in cpu for f in flags if f.startswith("-m"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("flags", [[], ["-DSHOAL_NET_FREESTANDING"], ["-mavx2", "-mfma"],
                                   ["-mavx512f", "-mavx512vl", "-mfma"], SANITIZE],
                         ids=["portable", "freestanding", "avx2-fma", "avx512-fma",
                              "portable-asan-ubsan"])
def test_header_compiles_alone_and_matches_the_binding(tmp_path, flags):
    header = open(header_path()).read()
    includes = {line.split()[1] for line in header.splitlines() if line.startswith("#include")}
    # <immintrin.h> (the compiler's, not a library) only where AVX and FMA are enabled
    assert includes == {"<math.h>", "<stddef.h>", "<stdint.h>", "<string.h>", "<immintrin.h>"}
    guard = header[:header.index("#include <immintrin.h>")].rsplit("#if", 1)[1].split("\n")[0]
    assert "__AVX__" in guard and "__FMA__" in guard
    if flags == SANITIZE and (shutil.which("gcc") is None or subprocess.run(
            ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
            ).stdout.strip() in ("", "libasan.so")):
        pytest.skip("needs gcc with the AddressSanitizer runtime")
    x86 = any(f.startswith("-m") for f in flags)
    if x86 and (platform.machine() not in ("x86_64", "AMD64") or not _cpu_has(flags)):
        pytest.skip("needs an x86-64 CPU with " + " ".join(flags))
    src = tmp_path / "play.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "play"
    build = subprocess.run(
        ["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2",
         *flags, "-I", os.path.dirname(header_path()), str(src), "-o", str(exe), "-lm"],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    policy = _policy("lstm-mlp-discrete")
    blob = export_policy(policy)
    (tmp_path / "w.bin").write_bytes(blob)
    B = 20
    # the program frees nothing at exit (leaks are not what the sanitizer run is for)
    run_env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), str(tmp_path / "w.bin"), str(B)], capture_output=True, env=run_env,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = np.array([line.split() for line in run.stdout.split("\n") if line], float)
    cp = CPolicy(blob)
    obs = (((np.arange(B * 29) * 37) % 200) / 100.0 - 1.0).astype(np.float32).reshape(B, 29)
    state, rng = cp.initial_state(B), agent_rng(B, 11)
    expected = []
    for _ in range(3):
        params, values = cp.forward(obs, None, state)
        actions, logp = cp.sample(params, rng)
        expected += list(zip(actions[:, 0], logp, values))
    np.testing.assert_array_equal(rows[:, 0], np.array([e[0] for e in expected]))
    # the program is built -O2 with other target flags than the binding's -O3 -march=native:
    # with or without fused multiply-adds, the products round a little differently
    np.testing.assert_allclose(rows[:, 1:], np.array([e[1:] for e in expected], float),
                               rtol=1e-5, atol=1e-6)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(blob[:-8])
    run = subprocess.run([str(exe), str(bad), "2"], capture_output=True, text=True, timeout=60,
                         env=run_env)
    assert run.returncode == 2 and "size mismatch" in run.stdout


WASM_MODULE = r"""
#include "shoal_net.h"
static shoal_net net;
static char err[256];
int load(const void* blob, unsigned long n) { return shoal_net_load(&net, blob, n, err, sizeof err); }
void step(long b, const float* obs, float* h, float* c, float* params, float* values,
          float* scratch, uint64_t* rng, int32_t* actions, float* logp) {
    shoal_net_forward(&net, b, obs, 0, h, c, params, values, scratch);
    shoal_net_sample(&net, b, params, rng, 0, actions, 0, logp);
}
"""


def test_header_builds_for_wasm32_freestanding(tmp_path):
    ziglang = pytest.importorskip("ziglang", reason="needs the ziglang package (pip install "
                                  "ziglang) for a WebAssembly compiler")
    zig = os.path.join(os.path.dirname(ziglang.__file__), "zig")
    src = tmp_path / "policy.c"
    src.write_text(WASM_MODULE)
    build = subprocess.run(
        [zig, "cc", "-target", "wasm32-freestanding", "-O2", "-std=c99", "-Wall", "-Wextra",
         "-Werror", "-DSHOAL_NET_FREESTANDING", "-I", os.path.dirname(header_path()), str(src),
         "-o", str(tmp_path / "policy.wasm"), "-nostdlib", "-Wl,--no-entry",
         "-Wl,--export=step", "-Wl,--export=load"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "policy.wasm").read_bytes()[:4] == b"\0asm"


MATH_PROGRAM = r"""
#include <stdio.h>
#include "shoal_net.h"
int main(void) {
    for (int i = 1; i < 4000; i++) {
        float u = (float)i / 4000.0f;
        float big = u * 1.0e6f, tiny = u * 1.0e-30f, angle = 6.2831855f * u;
        printf("%.9g %.9g %.9g %.9g %.9g\n", shoal__logf(u), shoal__logf(big), shoal__logf(tiny),
               shoal__cosf(angle), shoal__expf(-20.0f * u + 10.0f));
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_freestanding_math_is_accurate(tmp_path):
    """The header's own logf/cosf/expf (SHOAL_NET_FREESTANDING) against float64 references."""
    (tmp_path / "m.c").write_text(MATH_PROGRAM)
    build = subprocess.run(["gcc", "-std=c99", "-O2", "-DSHOAL_NET_FREESTANDING", "-I",
                            os.path.dirname(header_path()), str(tmp_path / "m.c"), "-o",
                            str(tmp_path / "m")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(tmp_path / "m")], capture_output=True, text=True, timeout=60)
    got = np.array([line.split() for line in out.stdout.splitlines()], float)
    u = (np.arange(1, 4000) / 4000.0).astype(np.float32).astype(float)
    np.testing.assert_allclose(got[:, 0], np.log(u), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], np.log(np.float32(u * 1e6).astype(float)), rtol=2e-6)
    np.testing.assert_allclose(got[:, 2], np.log(np.float32(u * 1e-30).astype(float)), rtol=2e-6)
    angle = (np.float32(6.2831855) * u.astype(np.float32)).astype(float)
    np.testing.assert_allclose(got[:, 3], np.cos(angle), atol=2e-6)
    x = (np.float32(-20.0) * u.astype(np.float32) + np.float32(10.0)).astype(float)
    np.testing.assert_allclose(got[:, 4], np.exp(x), rtol=1e-6)


def _random_masks(nvec, B: int, seed: int) -> np.ndarray:
    """Random action masks [B, sum(nvec)]: each dimension keeps at least one valid action,
    except some rows whose first dimension is all invalid (treated as all valid)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((B, int(sum(nvec)))) < 0.5
    col = 0
    for n in nvec:
        none = ~masks[:, col:col + n].any(1)
        masks[none, col + rng.integers(n, size=int(none.sum()))] = True
        col += n
    masks[:7, :nvec[0]] = False
    return masks


@pytest.mark.parametrize("case", ["mlp-discrete", "mlp-discrete-start", "mlp-multidiscrete",
                                  "lstm-cnn-multidiscrete"])
def test_masked_sampling_is_reproduced_by_the_torch_reference(case):
    from shoal.trainer.action_masks import mask_logits

    policy = _policy(case)
    dist = policy.distribution
    cpolicy = CPolicy.from_policy(policy)
    B = 300
    obs = _random_obs(CASES[case][1], B, seed=5)
    params, _ = cpolicy.forward(obs, None, cpolicy.initial_state(B))
    masks = _random_masks(dist.nvec, B, seed=3)
    masked = mask_logits(torch.from_numpy(params), torch.from_numpy(masks), dist.nvec)
    rng_c = agent_rng(B, seed=11)
    rng_ref = rng_c.copy()
    for _ in range(3):
        actions_c, logp_c = cpolicy.sample(params, rng_c, action_masks=masks)
        uniforms = agent_uniforms(rng_ref, cpolicy.num_params)
        actions_t, logp_t = sample_from_uniforms(dist, masked, torch.from_numpy(uniforms))
        np.testing.assert_array_equal(actions_c, actions_t.reshape(actions_c.shape).numpy())
        np.testing.assert_allclose(logp_c, logp_t.numpy(), rtol=1e-5, atol=1e-5)
        # every action taken is valid (rows with an all-invalid dimension: any action of it)
        zero_based = actions_c - (dist._offset if dist.kind == "discrete" else 0)
        col = 0
        for k, n in enumerate(dist.nvec):
            m = masks[:, col:col + n]
            ok = m[np.arange(B), zero_based[:, k]] | ~m.any(1)
            assert ok.all(), f"dimension {k}: a masked action was sampled"
            col += n
    greedy, logp_g = cpolicy.sample(params, None, greedy=True, action_masks=masks)
    mode = dist.mode(masked)
    np.testing.assert_array_equal(greedy.reshape(mode.shape), mode.numpy())
    np.testing.assert_allclose(logp_g, dist.log_prob(masked, mode).numpy(), rtol=1e-5, atol=1e-5)
    assert np.isfinite(logp_c).all() and np.isfinite(logp_g).all()
    np.testing.assert_array_equal(params, cpolicy.forward(obs, None, cpolicy.initial_state(B))[0])


def test_masked_sampling_never_takes_an_invalid_action_over_many_draws():
    policy = _policy("mlp-multidiscrete")
    cpolicy = CPolicy.from_policy(policy)
    B = 20000
    # the invalid actions have the largest logits: unmasked they would be drawn most
    params = np.tile(np.array([[5.0, 0.0, -1.0, 0.5, 9.0, 0.5, 2.0, -2.0, 8.0, 1.0]], np.float32),
                     (B, 1))
    masks = np.ones_like(params, dtype=bool)
    masks[:, [0, 4, 8]] = False
    actions, logp = cpolicy.sample(params, agent_rng(B, seed=4), action_masks=masks)
    assert (actions[:, 0] != 0).all() and (actions[:, 1] != 1).all() and (actions[:, 2] != 0).all()
    for k, (lo, hi) in enumerate(((0, 3), (3, 8), (8, 10))):
        logits = torch.from_numpy(params[0, lo:hi]).masked_fill(~torch.from_numpy(masks[0, lo:hi]),
                                                                float("-inf"))
        expected = torch.softmax(logits, -1).numpy()
        freq = np.bincount(actions[:, k], minlength=hi - lo) / B
        np.testing.assert_allclose(freq, expected, atol=0.015)


def test_action_masks_on_a_box_policy_are_refused():
    cpolicy = CPolicy.from_policy(_policy("lstm-mlp-box"))
    params = np.zeros((4, cpolicy.num_params), np.float32)
    masks = np.ones((4, cpolicy.num_params), bool)
    with pytest.raises(ValueError, match="continuous \\(Box\\): pass no masks"):
        cpolicy.sample(params, agent_rng(4, seed=1), action_masks=masks)


class _TemperedPolicy(MLPPolicy):
    """A user's policy: the built-in MLP with its logits sharpened in its own forward."""

    def forward(self, obs, state=None, starts=None):
        params, values, state = super().forward(obs, state, starts)
        return params * 3.0, values, state


class _NoisyLinear(torch.nn.Linear):
    def forward(self, x):
        return super().forward(x) + 0.1


class _OtherHeads(torch.nn.Module):
    """Heads with the built-in's attributes (actor, critic) but another computation."""

    def __init__(self, heads):
        super().__init__()
        self.actor, self.critic, self.distribution = heads.actor, heads.critic, heads.distribution

    def forward(self, features, critic_features=None):
        return self.actor(features).tanh(), self.critic(features).squeeze(-1)


def test_a_policy_computing_other_than_its_built_in_layout_is_refused():
    """The C policy computes the built-in policies' own forward passes from their weights: a
    subclass that overrides one (the policy's, a layer's) or a part swapped for another module
    would be exported as the built-in one, a net that acts differently from the torch policy,
    so it is refused with the part named."""
    _, obs_space, act_space, kwargs = CASES["mlp-discrete"]
    tempered = _TemperedPolicy(obs_space, act_space, **kwargs)
    with pytest.raises(ValueError, match="_TemperedPolicy overrides MLPPolicy.forward"):
        export_policy(tempered)
    noisy = _policy("mlp-discrete")
    old = noisy.encoder.net[0]
    noisy.encoder.net[0] = _NoisyLinear(old.in_features, old.out_features)
    with pytest.raises(ValueError, match=r"encoder\.net\.0: _NoisyLinear overrides Linear"):
        export_policy(noisy)
    swapped = _policy("mlp-discrete")
    swapped.heads = _OtherHeads(swapped.heads)
    with pytest.raises(ValueError, match="heads is a _OtherHeads, which the C policy cannot run"):
        export_policy(swapped)
    lstm = _policy("lstm-mlp-discrete")
    lstm.cell = type("_PeepholeCell", (torch.nn.LSTMCell,), {"forward": lambda s, x, hc: hc})(
        lstm.cell.input_size, lstm.cell.hidden_size)
    with pytest.raises(ValueError, match="cell: _PeepholeCell overrides LSTMCell.forward"):
        export_policy(lstm)


def test_a_forward_assigned_to_a_module_is_refused():
    """A forward set on one module instance replaces what torch computes there, and the C
    policy would compute the built-in layer: export names the module, and once the instance's
    forward is gone the same policy exports again."""
    policy = _policy("mlp-discrete")
    policy.heads.actor.forward = lambda x: torch.zeros(x.shape[0], 4)
    with pytest.raises(ValueError, match=r"heads\.actor: Linear overrides Linear\.forward"):
        export_policy(policy)
    del policy.heads.actor.forward
    assert read_header(export_policy(policy))["encoder"] == 0
