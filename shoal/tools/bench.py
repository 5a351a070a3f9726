"""``shoal bench ENV``: agent-steps per second of random-action stepping (no policy).

Env parameters are given as extra flags, e.g. ``shoal bench maze --size 31``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from gymnasium import spaces

from ..vector import BACKENDS


def random_action_cache(space: spaces.Space, rows: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` arrays of random actions for ``rows`` agents, drawn once so timing excludes them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if isinstance(space, spaces.Discrete):
            out.append(rng.integers(0, space.n, rows).astype(np.int32))
        elif isinstance(space, spaces.MultiDiscrete):
            out.append(np.stack([rng.integers(0, k, rows) for k in space.nvec.ravel()], -1).astype(np.int32))
        else:
            low, high = np.maximum(space.low, -1.0), np.minimum(space.high, 1.0)
            out.append(rng.uniform(low, high, (rows, *space.shape)).astype(np.float32))
    return out


def measure(env: Any, seconds: float, warmup: float = 0.5) -> float:
    """Agent-steps/s of ``env`` under random actions; double-buffered when num_buffers > 1."""
    env.reset(seed=0)
    group_rows = env.num_agents // env.num_buffers
    cache = random_action_cache(env.single_action_space, group_rows, 64)
    if env.num_buffers == 1:
        def tick(i: int) -> None:
            env.step(cache[i % 64])
    else:
        def tick(i: int) -> None:
            env.recv()
            env.send(cache[i % 64])
    i = 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        tick(i)
        i += 1
    steps = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        tick(steps)
        steps += 1
    return steps * group_rows / elapsed


def parse_env_params(extra: list[str]) -> dict[str, Any]:
    """``--size 31 --view 7`` -> {"size": 31, "view": 7} (values parsed as int, float or bool)."""
    params: dict[str, Any] = {}
    it = iter(extra)
    for flag in it:
        if not flag.startswith("--"):
            raise ValueError(f"unexpected argument {flag!r}: env parameters are given as --name value")
        key = flag[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
        else:
            raw = next(it, None)
            if raw is None:
                raise ValueError(f"{flag} needs a value")
        params[key] = _parse_value(raw)
    return params


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def main(argv: list[str]) -> int:
    from .. import make

    parser = argparse.ArgumentParser(prog="shoal bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", help="env name (`shoal envs` lists them)")
    parser.add_argument("--num-envs", type=int, default=1024, help="envs stepped together (default 1024)")
    parser.add_argument("--backend", choices=BACKENDS, default="serial", help="vectorisation backend")
    parser.add_argument("--num-workers", type=int, default=None, help="threads/processes (default: cores)")
    parser.add_argument("--num-buffers", type=int, default=1, help="groups for double buffering (1 or 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed duration (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args, extra = parser.parse_known_args(argv)
    try:
        params = parse_env_params(extra)
        env = make(args.env, args.num_envs, seed=0, backend=args.backend,
                   num_workers=args.num_workers, num_buffers=args.num_buffers, **params)
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"shoal bench: {exc}\n")
    try:
        sps = measure(env, args.seconds)
    finally:
        env.close()
    result = {"env": args.env, "backend": args.backend, "num_envs": args.num_envs,
              "num_agents": env.num_agents, "num_workers": args.num_workers or (1 if args.backend == "serial" else None),
              "num_buffers": args.num_buffers, "params": params,
              "agent_steps_per_second": round(sps)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.env}: {sps / 1e6:.2f} M agent-steps/s ({args.backend}, {args.num_envs} envs, "
              f"{env.num_agents} agents)")
    return 0
