"""Fuzzes the C snapshot loader of every env: corrupted and random snapshots are loaded, and each
one that loads is stepped, rendered, logged and saved again. Run by tests/test_sanitizers.py
against an AddressSanitizer/UBSan build, where any out-of-bounds access or undefined behaviour
aborts; exits non-zero on any other failure (a crash, a hang, an error other than the ValueError
that refuses a snapshot, or a refused snapshot that changed the env).

    python tests/support/fuzz_snapshots.py [MUTATIONS_PER_ENV] [SEED]

Mutations of a real snapshot taken mid-episode: every 4-byte word of the struct and of each
array set in turn to boundary values (a sweep: every field is hit), then random ones: bit flips,
random bytes, random words set to boundary values, whole random snapshots, and wrong lengths.
Also checks that worker threads never step actions written into env.actions after send().
"""

from __future__ import annotations

import struct
import sys
import time

import numpy as np

import shoal
from shoal.envs import list_envs

from fuzz_envs import actions_for  # a sibling script: this file runs as tests/support/fuzz_snapshots.py

MUTATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0
QUICK = MUTATIONS < 1000          # the CI-sized run: a thinner sweep, shorter runs after a load
STEPS_AFTER_LOAD = 16 if QUICK else 256
NUM_ENVS = 2

# boundary values of 32-bit fields: small ints (indices, counts, flags), extremes, and floats
# (0, 1, -1, huge, inf, -inf, NaN, the smallest subnormal)
WORDS = [0, 1, 2, 3, 7, 0xFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x3F800000,
         0xBF800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x00000001, 0x4B000000]


class Stats:
    def __init__(self) -> None:
        self.loaded = self.refused = 0


def try_snapshot(env, base_state, blob: bytes, rng, stats: Stats) -> None:
    """Loads a snapshot whose C part is `blob`: refused (ValueError, env unchanged) or loaded and
    then exercised."""
    state = dict(base_state)
    state["c_envs"] = np.frombuffer(blob, dtype=np.uint8).copy()
    before = env.save_state()["c_envs"]
    try:
        env.load_state(state)
    except ValueError as exc:
        if "refused" not in str(exc) and "bytes but" not in str(exc):
            raise AssertionError(f"{env.name}: unexpected error text: {exc}") from None
        after = env.save_state()["c_envs"]
        if not np.array_equal(before, after):
            raise AssertionError(f"{env.name}: a refused snapshot changed the env") from None
        stats.refused += 1
        return
    stats.loaded += 1
    space = env.single_action_space
    for _ in range(STEPS_AFTER_LOAD):
        _, rew, _, _, _ = env.step(actions_for(space, env.num_agents, rng))
        if not np.isfinite(rew).all():
            raise AssertionError(f"{env.name}: a loaded snapshot gave a non-finite reward")
    for i in range(env.num_envs):
        env.render(index=i)
        env.render(mode="ansi", index=i)
        env.state(i)
    env.log()
    env.save_state()


def mutate(blob: bytes, rng) -> bytes:
    b = bytearray(blob)
    kind = int(rng.integers(7))
    if kind == 0:      # flip a few bits
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:    # a few random bytes
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == 2:    # an aligned word set to a boundary value
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(b) // 4)) * 4
            b[i:i + 4] = struct.pack("<I", WORDS[int(rng.integers(len(WORDS)))])
    elif kind == 3:    # a small signed int anywhere (indices just out of range)
        i = int(rng.integers(len(b) // 4)) * 4
        b[i:i + 4] = struct.pack("<i", int(rng.integers(-4, 4096)))
    elif kind == 4:    # a run of random bytes
        i = int(rng.integers(len(b)))
        n = int(rng.integers(1, 64))
        b[i:i + n] = rng.integers(0, 256, len(b[i:i + n]), dtype=np.uint8).tobytes()
    elif kind == 5:    # wholly random
        b = bytearray(rng.integers(0, 256, len(b), dtype=np.uint8).tobytes())
    else:              # a wrong length
        b = b[:int(rng.integers(len(b)))] if rng.integers(2) else b + b[:int(rng.integers(1, 64))]
    return bytes(b)


def fuzz(name: str, rng, **params) -> Stats:
    stats = Stats()
    env = shoal.make(name, num_envs=NUM_ENVS, seed=int(rng.integers(1 << 30)), **params)
    env.reset()
    space = env.single_action_space
    for _ in range(int(rng.integers(20, 200))):    # mid-episode, with some state to corrupt
        env.step(actions_for(space, env.num_agents, rng))
    base = env.save_state()
    blob = base["c_envs"].tobytes()
    per_env = len(blob) // NUM_ENVS
    # the sweep: every word of env 1's part (struct and arrays) set to each boundary value; the
    # arrays can be long, so words past the first 4 KiB are sampled
    offsets = list(range(per_env, per_env + min(per_env, 4096) - 3, 4))
    if per_env > 4096:
        offsets += [per_env + int(o) * 4 for o in rng.integers(1024, per_env // 4, 512)]
    for off in offsets:
        for word in WORDS[:: 3 if QUICK or len(offsets) > 300 else 1]:
            b = bytearray(blob)
            b[off:off + 4] = struct.pack("<I", word)
            try_snapshot(env, base, bytes(b), rng, stats)
    for _ in range(MUTATIONS):
        try_snapshot(env, base, mutate(blob, rng), rng, stats)
    env.load_state(base)                            # the original still loads
    env.close()
    return stats


def late_writes(name: str, rng) -> None:
    """Writes out-of-range actions into env.actions while worker threads step: they must step the
    values send() checked (for maze and forage an unchecked action indexes a table)."""
    env = shoal.make(name, num_envs=64, seed=1, backend="threads", num_workers=2, num_buffers=2)
    env.reset()
    space = env.single_action_space
    for _ in range(200):
        *_, rows = env.recv()
        env.send(actions_for(space, rows.stop - rows.start, rng))
        env.actions[rows] = 1 << 30
    env.close()


def main() -> None:
    rng = np.random.default_rng(SEED)
    total = Stats()
    # every env at its defaults, and the options that change what a step writes
    for name, params in [(name, {}) for name in list_envs()] + [("maze", {"prev_action": True})]:
        t = time.perf_counter()
        stats = fuzz(name, rng, **params)
        total.loaded += stats.loaded
        total.refused += stats.refused
        print(f"{name}{params or ''}: {stats.loaded + stats.refused} snapshots, "
              f"{stats.loaded} loaded and stepped, {stats.refused} refused "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    for name in ("maze", "forage"):
        late_writes(name, rng)
    print(f"all envs: {total.loaded + total.refused} snapshots, {total.loaded} loaded and stepped, "
          f"{total.refused} refused")
    print("fuzz ok")


if __name__ == "__main__":
    main()
