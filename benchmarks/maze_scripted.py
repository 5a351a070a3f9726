"""Scripted maze policies that read only the observation: how far the walls around the agent and
its heading (the previous action, `prev_action`) go on their own.

    python benchmarks/maze_scripted.py --size 15 --episodes 1500

Policies: the right-hand rule (the first open of right, ahead, left, back of the heading); a
uniform choice among the open neighbours except the way back (back only at a dead end); a
uniform choice among the open neighbours (no heading); uniform random moves. Each is run in
256 mazes (5x5 window with the previous-action row) until ``--episodes`` episodes have ended;
printed: the share that reached the goal and the mean episode length, from the env's log.
Used in BENCHMARKS.md ("maze on 15x15", "The heading").
"""

from __future__ import annotations

import argparse

import numpy as np

import shoal

UP, DOWN, LEFT, RIGHT = 1, 2, 3, 4
CLOCKWISE = {UP: RIGHT, RIGHT: DOWN, DOWN: LEFT, LEFT: UP}
BACK = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}
WALL, GOAL = 1, 2


def act(policy: str, obs: np.ndarray, rng: np.random.Generator) -> int:
    """One env's action from its observation: a 5x5 window, then the previous-action row."""
    c = 2
    around = {UP: obs[c - 1, c], DOWN: obs[c + 1, c], LEFT: obs[c, c - 1], RIGHT: obs[c, c + 1]}
    heading = int(np.argmax(obs[5])) if obs[5].any() else 0
    if policy == "random":
        return int(rng.integers(5))
    goal = [d for d, cell in around.items() if cell == GOAL]
    if goal:
        return goal[0]
    open_ = [d for d, cell in around.items() if cell != WALL]
    if policy == "right-hand":
        h = heading or UP
        right = CLOCKWISE[h]
        for d in (right, h, BACK[right], BACK[h]):
            if d in open_:
                return d
    if policy == "no-turning-back" and heading:
        ahead = [d for d in open_ if d != BACK[heading]]
        open_ = ahead or open_
    return open_[int(rng.integers(len(open_)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=15)
    p.add_argument("--episodes", type=int, default=1500)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    for policy in ("right-hand", "no-turning-back", "open-neighbours", "random"):
        rng = np.random.default_rng(a.seed)
        env = shoal.make("maze", num_envs=256, seed=a.seed, size=a.size, view=5, prev_action=True)
        obs, _ = env.reset(a.seed)
        ended = 0
        while ended < a.episodes:
            actions = np.array([act(policy, o, rng) for o in obs], np.int32)
            obs, _, terminals, truncations, _ = env.step(actions)
            ended += int((terminals | truncations).sum())
        log = env.log()
        env.close()
        print(f"{policy}: success {log['score']:.3f}, mean length {log['episode_length']:.0f} "
              f"({log['n']:.0f} episodes, {a.size}x{a.size})", flush=True)


if __name__ == "__main__":
    main()
