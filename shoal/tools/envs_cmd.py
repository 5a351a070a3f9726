"""``shoal envs``: every registered env with its spaces, agents and parameters."""

from __future__ import annotations

import argparse
import json

from ..envs import get_spec, list_envs


def describe(name: str) -> dict:
    """A JSON-able description of env ``name`` at its default parameters."""
    spec = get_spec(name)
    params = spec.resolve()
    return {
        "name": name,
        "doc": spec.doc,
        "observation_space": str(spec.observation_space(params)),
        "action_space": str(spec.action_space(params)),
        "agents_per_env": int(spec.agents_per_env(params)),
        "params": {k: {"default": p.default, "low": p.low, "high": p.high, "doc": p.doc}
                   for k, p in spec.params.items()},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shoal envs", description=__doc__)
    parser.add_argument("name", nargs="?", help="show only this env, with its parameters")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    names = [args.name] if args.name else list_envs()
    try:
        infos = [describe(n) for n in names]
    except ValueError as exc:
        parser.exit(2, f"shoal envs: {exc}\n")
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        agents = f", {info['agents_per_env']} agents/env" if info["agents_per_env"] > 1 else ""
        print(f"{info['name']:<11} obs {info['observation_space']}  act {info['action_space']}{agents}")
        print(f"{'':<11} {info['doc']}")
        if args.name:
            for k, p in info["params"].items():
                rng = f"[{p['low']}, {p['high']}]" if p["low"] is not None else ""
                print(f"{'':<11}   --{k} {p['default']!r:<8} {rng:<16} {p['doc']}")
    return 0
