"""Exercises the C policy (shoal.net._net, shoal_net.h) with numpy buffers only: every policy
kind and head, odd batch sizes, one and several threads, extreme and non-finite observations,
corrupted blobs (every header word, random bytes, truncations) and bad arguments. Run by
tests/test_sanitizers.py against an AddressSanitizer/UBSan build; exits non-zero (or the
sanitizer aborts) on any fault."""

import struct

import numpy as np
import torch
from gymnasium import spaces

from shoal.net import _net
from shoal.net.export import HEADER_FIELDS, export_policy
from shoal.trainer.policies import make_policy
from helped_rollout import collect_with_helper

CASES = [
    ("mlp", spaces.Box(-1.0, 1.0, (9,), np.float32), spaces.Discrete(3), {}),
    ("mlp", spaces.Box(0, 5, (6,), np.uint8), spaces.MultiDiscrete([2, 5]), {"shared": False}),
    ("mlp", spaces.Box(-9, 9, (4,), np.int32), spaces.Box(-1.0, 1.0, (2,), np.float32),
     {"activation": "silu"}),
    ("cnn", spaces.Box(0, 2, (5, 7), np.uint8), spaces.Discrete(4), {"channels": 4}),
    ("cnn", spaces.Box(-1.0, 1.0, (18, 3, 2), np.float32), spaces.Discrete(2), {"channels": 3}),
    ("lstm", spaces.Box(0, 3, (5, 5), np.uint8), spaces.MultiDiscrete([3, 3]),
     {"encoder": "cnn", "hidden": 8}),
    ("lstm", spaces.Box(-1.0, 1.0, (3,), np.float64), spaces.Box(-1.0, 1.0, (3,), np.float32),
     {"hidden": 5}),
    # with the observation normalisation stage (train.norm_obs)
    ("mlp", spaces.Box(-np.inf, np.inf, (7,), np.float32), spaces.Discrete(3),
     {"shared": False, "norm_obs_clip": 2.0}),
    ("cnn", spaces.Box(0, 255, (6, 5), np.uint8), spaces.Discrete(2),
     {"channels": 3, "norm_obs_clip": 5.0}),
    ("lstm", spaces.Box(-1.0, 1.0, (3,), np.float64), spaces.Box(-1.0, 1.0, (3,), np.float32),
     {"hidden": 5, "norm_obs_clip": 10.0}),
]


def _with_normalizer(policy, obs_space, clip):
    """Attaches the normalisation stage with statistics of some sampled observations."""
    from shoal.trainer.obs_norm import attach_observation_normalizer, preprocessed_features

    norm = attach_observation_normalizer(policy, clip)
    obs = np.stack([obs_space.sample() for _ in range(50)]).astype(obs_space.dtype)
    norm.update(preprocessed_features(policy, torch.from_numpy(np.nan_to_num(obs))) * 3 + 1)
    return policy


def _version1(blob):
    """A blob without normalisation rewritten in layout version 1 (no obs_norm word)."""
    header = struct.unpack_from("<i", blob, 8)[0]
    words = bytearray(blob[:4 * 23] + blob[4 * 24:])
    struct.pack_into("<ii", words, 4, 1, header - 1)
    return bytes(words)


def run(net, obs_space, rng):
    P, H = net.num_params, net.hidden
    for B in (1, 15, 16, 17, 130):
        obs = np.stack([obs_space.sample() for _ in range(B)]).astype(obs_space.dtype)
        if obs.dtype.kind == "f":
            obs.flat[0] = np.nan
            obs.flat[-1] = np.inf
            if obs.size > 2:
                obs.flat[1] = -1e30
        elif obs.size > 1:
            obs.flat[0] = np.iinfo(obs.dtype).max
            obs.flat[-1] = np.iinfo(obs.dtype).min
        starts = (rng.random(B) < 0.5).astype(np.float32)
        h = rng.normal(0, 50, (B, H)).astype(np.float32)
        c = rng.normal(0, 50, (B, H)).astype(np.float32)
        params = np.empty((B, P), np.float32)
        values = np.empty(B, np.float32)
        for threads in (1, 3):
            net.forward(obs, starts, h, c, params, values, threads)
            net.forward(obs, None, h, c, params, values, threads)
        params[0] = np.nan
        if B > 1:
            params[1] = np.inf
        box = net.head == "box"
        actions = np.empty((B, net.action_dims), np.float32 if box else np.int32)
        logp = np.empty(B, np.float32)
        states = np.arange(B, dtype=np.uint64)
        for greedy in (False, True):
            net.sample(params, states, greedy, actions, logp, 2)
        # action masks: random, with all-invalid rows (treated as all valid), then sampling
        masks = rng.random((B, P)) < 0.5
        masks[: max(1, B // 4)] = False
        masked = params.copy()
        if not box:   # Box heads refuse masks
            net.mask_logits(masked, masks)
            net.mask_logits(masked, masks.astype(np.uint8))
        for greedy in (False, True):
            net.sample(masked, states, greedy, actions, logp, 2)
        if box:
            net.clip_actions(actions, np.empty_like(actions))
        if not box:
            assert ((actions >= 0) | (actions < 0)).all()


def bad_calls(net, obs_space):
    B = 4
    good_obs = np.zeros((B, *obs_space.shape), obs_space.dtype)
    f = np.zeros((B, net.num_params), np.float32)
    v = np.zeros(B, np.float32)
    h = np.zeros((B, net.hidden), np.float32)
    calls = [
        lambda: net.forward(good_obs[:, ::-1] if good_obs.ndim > 1 and good_obs.shape[1] > 1
                            else np.zeros(3, np.int8), None, h, h, f, v),
        lambda: net.forward(good_obs.astype(np.complex64), None, h, h, f, v),
        lambda: net.forward(good_obs, None, h, h, f[:3], v),
        lambda: net.forward(good_obs, None, h[:2], h, f, v),
        lambda: net.forward(good_obs, np.zeros(3, np.float32), h, h, f, v),
        lambda: net.forward(good_obs, None, h, h, f, v.astype(np.float64)),
        lambda: net.forward(good_obs, None, h, h, f.T.copy()[:1], v),
        lambda: net.sample(f, np.zeros(3, np.uint64), False, np.zeros((B, 9), np.int32), v),
        lambda: net.sample(f, None, False, np.zeros((B, net.action_dims), np.int32), v),
        lambda: net.sample(f[:, :-1], np.zeros(B, np.uint64), True, np.zeros(B, np.int32), v),
        lambda: net.sample(f, np.zeros(B, np.int64), False, np.zeros(B, np.int32), v),
        lambda: net.mask_logits(f, np.ones((B, net.num_params + 1), bool)),
        lambda: net.mask_logits(f, np.ones((B, net.num_params), np.float32)),
        lambda: net.mask_logits(f[:, :-1], np.ones((B, net.num_params), bool)),
        lambda: net.mask_logits(np.zeros((B, net.num_params)), np.ones((B, net.num_params), bool)),
        lambda: net.mask_logits(np.frombuffer(bytes(4 * B * net.num_params), np.float32),
                                np.ones((B, net.num_params), bool)),   # read-only params
    ]
    for call in calls:
        try:
            call()
        except ValueError:
            pass


def corrupt(blob, rng):
    words = len(blob) // 4
    header = struct.unpack_from("<i", blob, 8)[0]
    header = min(max(header, len(HEADER_FIELDS)), words)
    for i in range(header):
        for value in (0, 1, -1, 2, 3, 2**31 - 1, -2**31, 65537, int(rng.integers(-2**31, 2**31))):
            b = bytearray(blob)
            struct.pack_into("<i", b, 4 * i, value)
            try_load(bytes(b))
    for _ in range(200):
        b = bytearray(blob)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        try_load(bytes(b))
    for n in (0, 3, 4, 92, 96, len(blob) - 4, len(blob) - 1):
        try_load(blob[:n])
    try_load(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())


def try_load(blob):
    try:
        net = _net.Net(blob)
    except ValueError as exc:
        assert str(exc).startswith("weights:"), exc
        return
    # a blob that loads must run: feed it zeros of the size it declares
    shape = net.obs_shape
    obs = np.zeros((3, *shape), np.dtype(net.obs_dtype))
    h = np.zeros((3, net.hidden), np.float32)
    params = np.zeros((3, net.num_params), np.float32)
    values = np.zeros(3, np.float32)
    if np.prod(shape, dtype=np.int64) * net.hidden > 5_000_000:
        return  # a corrupted size that is valid but huge: loading it is the check
    net.forward(obs, None, h, h.copy(), params, values)


def fused_rollouts(tmp):
    """The envs' vec_rollout (shoal/envs/vec_rollout.h) through the trainer, then bad calls."""
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    cases = [("breakout", "lstm", {"env.max_steps": 5}), ("maze", "cnn", {}),
             ("target", "lstm", {}), ("breakout", "mlp", {"env.continuous": True,
                                                          "env.max_steps": 3}),
             ("breakout", "mlp", {"train.norm_obs": True, "train.norm_obs_clip": 1.0,
                                  "env.max_steps": 4}),
             ("g2048", "lstm", {"env.max_steps": 7}),                  # action masks
             ("breakout", "lstm", {"env.max_steps": 4, "train.norm_reward": True})]  # bootstrap
    for i, (env, policy, extra) in enumerate(cases):
        for threads in (1, 3):
            cfg = build_config(env, overrides={
                "train.rollout": "fused", "train.rollout_threads": threads, "env.num_envs": 5,
                "train.horizon": 6, "train.minibatch_size": 6, "train.total_steps": 10**6,
                "policy.name": policy, "policy.hidden": 8, "log.dashboard": "off",
                "log.run_dir": f"{tmp}/r{i}-{threads}", **extra})
            trainer = Trainer(cfg)
            try:
                for epoch in range(4):
                    if epoch == 3 and trainer.reward_scaler is None:    # env range by env
                        # range (train.pipeline; reward scaling needs the whole segment)
                        E = trainer.env.num_envs
                        for lo, hi in ((0, 2), (2, 3), (3, E)):
                            trainer.fused._call(1, envs=(lo, hi), threads=threads)
                    elif epoch == 2:    # another thread joins the call (overlap's learner)
                        collect_with_helper(trainer)
                    elif epoch:     # a segment in chunks (train.overlap_chunks)
                        for first in range(1, trainer.T + 1, 4):
                            trainer.fused._call(first, None, None, min(trainer.T, first + 3))
                    else:
                        trainer.rollout()
                    if trainer.obs_norm is not None:
                        trainer.update()      # statistics for the next rollout's C policy
                    trainer.storage.shift()
                if trainer.fused.pipeline:    # breakout's shipped epoch: ranges on two threads
                    trainer.run_epoch()
                fused_bad_calls(trainer)
            finally:
                trainer.close()


def fused_bad_calls(trainer):
    env, b, fr = trainer.env, trainer.storage, trainer.fused
    state = trainer.state
    h = None if state is None else state[0].numpy()
    args = [b.obs.numpy(), b.actions.numpy(), b.logprobs.numpy(), b.values.numpy(),
            b.starts.numpy(), b.masks.numpy(), b.rewards.numpy(), b.dones.numpy(), h, h, h, h,
            h, h, trainer.agent_rng.states, env.masks]
    net = fr._refresh()
    other = _net.Net(export_policy(make_policy(
        (spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Discrete(2)), "mlp", hidden=4))).capsule()
    bad = [
        (net, 1, trainer.T + 1, 0.9, 1, args),                       # T larger than the storage
        (net, 1, trainer.T, 0.9, 0, args),                           # no threads
        (net, trainer.T + 1, trainer.T, 0.9, 1, args),               # first_step past T
        (net, -1, trainer.T, 0.9, 1, args),                          # negative first_step
        (net, 1, trainer.T, 0.9, 1, args + [None, None, trainer.T + 1]),   # last_step past T
        (net, 3, trainer.T, 0.9, 1, args + [None, None, 2]),         # last before first
        (net, 0, trainer.T, 0.9, 1, args + [None, None, 1]),         # slot 0 acts only
        (other, 1, trainer.T, 0.9, 1, args),                         # a policy of another env
        (net, 1, trainer.T, 0.9, 1, [args[0][:1]] + args[1:]),       # short obs
        (net, 1, trainer.T, 0.9, 1, args[:1] + [args[1].astype(np.float64)] + args[2:]),
        (net, 1, trainer.T, 0.9, 1, args[:14] + [args[14][:2]] + args[15:]),
        ("not a capsule", 1, trainer.T, 0.9, 1, args),
        # action masks of the wrong size (or for an env that writes none)
        (net, 1, trainer.T, 0.9, 1, args + [np.ones((b.obs.shape[0], trainer.T + 1, 1), bool)]),
        (net, 1, trainer.T, 0.9, 1, args + [np.ones(3, np.float32)]),
        # a bootstrap buffer of the wrong size, dtype or layout
        (net, 1, trainer.T, 0.9, 1, args + [None, np.zeros((b.obs.shape[0], trainer.T - 1), np.float32)]),
        (net, 1, trainer.T, 0.9, 1, args + [None, np.zeros((b.obs.shape[0], trainer.T), np.float64)]),
        (net, 1, trainer.T, 0.9, 1, args + [None, np.zeros((trainer.T, b.obs.shape[0]), np.float32).T]),
        (net, 1, trainer.T, 0.9, 1, args + [None, "not an array"]),
        # env ranges out of bounds or empty
        (net, 1, trainer.T, 0.9, 1, args + [None, None, trainer.T, 0, env.num_envs + 1]),
        (net, 1, trainer.T, 0.9, 1, args + [None, None, trainer.T, -1, 2]),
        (net, 1, trainer.T, 0.9, 1, args + [None, None, trainer.T, 3, 3]),
        (net, 1, trainer.T, 0.9, 1, args + [None, None, trainer.T, 4, 2]),
    ]
    for capsule, first, T, gamma, threads, a in bad:
        try:
            env._c.vec_rollout(env._h, capsule, first, T, gamma, threads, *a)
        except (ValueError, TypeError):
            pass
        else:
            raise AssertionError("a bad vec_rollout call was accepted")


def main():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for name, obs_space, act_space, kwargs in CASES:
        obs_space.seed(0)
        kwargs = dict(kwargs)
        clip = kwargs.pop("norm_obs_clip", None)
        policy = make_policy((obs_space, act_space), name, **kwargs)
        if clip is not None:
            policy = _with_normalizer(policy, obs_space, clip)
        blob = export_policy(policy)
        net = _net.Net(blob)
        run(net, obs_space, rng)
        bad_calls(net, obs_space)
        corrupt(blob, rng)
        if clip is None:
            old = _version1(blob)
            run(_net.Net(old), obs_space, rng)
            corrupt(old, rng)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fused_rollouts(tmp)
    print("fuzz ok")


if __name__ == "__main__":
    main()
