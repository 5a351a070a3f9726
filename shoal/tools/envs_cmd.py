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
        "action_mask": bool(spec.action_mask),
        "params": {k: {"default": p.default, "low": p.low, "high": p.high, "doc": p.doc}
                   for k, p in spec.params.items()},
    }


PYTHON_ENVS_NOTE = (
    "Any Python env works too, wherever an env name is taken (train, bench, eval, check):\n"
    "  gym:ID         any Gymnasium id (gym:CartPole-v1; gym:module:ID imports module first)\n"
    "  pz:MODULE.ENV  a PettingZoo parallel env (pz:pettingzoo.butterfly.pistonball_v6)\n"
    "Their keyword arguments are --env.KEY VALUE flags in `shoal train` (--KEY VALUE in bench\n"
    "and check); `shoal check NAME` shows their spaces. See docs/emulation.md."
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shoal envs", description=__doc__,
                                     epilog=PYTHON_ENVS_NOTE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="show only this env, with its parameters")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    names = [args.name] if args.name else list_envs()
    if args.name and args.name.startswith(("gym:", "pz:")):
        parser.exit(2, f"shoal envs: {args.name} is a Python env: it has no parameter spec to "
                       f"list here. `shoal check {args.name}` builds it and shows its spaces "
                       f"(see docs/emulation.md)\n")
    try:
        infos = [describe(n) for n in names]
    except ValueError as exc:
        parser.exit(2, f"shoal envs: {exc}\n")
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    for info in infos:
        agents = f", {info['agents_per_env']} agents/env" if info["agents_per_env"] > 1 else ""
        agents += ", action mask" if info["action_mask"] else ""
        print(f"{info['name']:<11} obs {info['observation_space']}  act {info['action_space']}{agents}")
        print(f"{'':<11} {info['doc']}")
        if args.name:
            for k, p in info["params"].items():
                rng = f"[{p['low']}, {p['high']}]" if p["low"] is not None else ""
                print(f"{'':<11}   --{k} {p['default']!r:<8} {rng:<16} {p['doc']}")
    if not args.name:
        print()
        print(PYTHON_ENVS_NOTE)
    return 0
