"""How a trained maze policy moves: the shares of "stay" and of moves into a wall, whether it
steps onto a goal next to it, whether it turns back the way it came, and whether it acts
differently when the goal is in view.

    python benchmarks/maze_behaviour.py RUN_DIR_OR_CHECKPOINT [--steps 3000] [--num-envs 64]
    python benchmarks/maze_behaviour.py --random --size 15

Samples the policy's actions (as training and `shoal eval` do) in ``--num-envs`` mazes of the
size the run trained on for ``--steps`` steps each. A move into a wall is an action other than
"stay" after which the view is unchanged. Uniformly random moves (``--random``): 20% stay, and
on 15x15 mazes ~41% of the steps go into a wall; a step onto an adjacent goal has probability
0.2; a move that reverses the previous step's move happens on 20% of the steps after a move.
The mazes have the run's env parameters (size, view, prev_action). Used in BENCHMARKS.md ("maze
on 15x15").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from shoal.vector import make as make_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="run directory or checkpoint file")
    p.add_argument("--random", action="store_true", help="uniformly random actions instead")
    p.add_argument("--size", type=int, default=15, help="maze size with --random")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args()
    if not a.random and not a.checkpoint:
        p.error("give a run directory or checkpoint, or --random")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(a)
    finally:
        torch.set_num_threads(threads)


def run(a: argparse.Namespace) -> None:
    model = None
    params = {"size": a.size}
    if not a.random:
        from shoal.trainer.checkpoint import load_checkpoint
        from shoal.trainer.eval_cli import load_policy

        ckpt = load_checkpoint(a.checkpoint)
        if ckpt["config"]["env"]["name"] != "maze":
            trained_on = ckpt["config"]["env"]["name"]
            raise SystemExit(f"{a.checkpoint} was trained on {trained_on}: give a maze run")
        params = {k: ckpt["config"]["env"][k] for k in ("size", "view", "max_steps", "prev_action")
                  if k in ckpt["config"]["env"]}
    size = params["size"]
    env = make_env("maze", a.num_envs, seed=a.seed, **params)
    rng = np.random.default_rng(a.seed)
    generator = torch.Generator().manual_seed(a.seed)
    if not a.random:
        model = load_policy(ckpt, env, None, "cpu")
    obs, _ = env.reset(a.seed)
    n = a.num_envs
    stay = bump = steps = adjacent = reverse = after_move = 0
    onto_goal = 0.0
    entropy = {True: [], False: []}
    view = obs.shape[2]  # with prev_action one more row (the previous action) follows the window
    v = view // 2
    opposite = np.array([0, 2, 1, 4, 3])
    last_move = np.zeros(n, np.int64)  # the previous step's move if it moved the agent, else 0
    for _ in range(a.steps):
        if model is None:
            probs = np.full((n, 5), 0.2)
        else:
            with torch.inference_mode():
                logits, _, _ = model(torch.as_tensor(obs).unsqueeze(1), None, None)
            probs = torch.softmax(logits[:, 0].double(), -1).numpy()
        actions = np.array([rng.choice(5, p=row / row.sum()) for row in probs]) if model is None \
            else torch.multinomial(torch.as_tensor(probs), 1, generator=generator)[:, 0].numpy()
        actions = actions.astype(np.int32)
        for action, (dr, dc) in ((1, (-1, 0)), (2, (1, 0)), (3, (0, -1)), (4, (0, 1))):
            next_to = obs[:, v + dr, v + dc] == 2
            adjacent += int(next_to.sum())
            onto_goal += float(probs[next_to, action].sum())
        in_view = (obs[:, :view] == 2).reshape(n, -1).any(1)
        h = -(probs * np.log(probs + 1e-12)).sum(1)
        entropy[True] += list(h[in_view])
        entropy[False] += list(h[~in_view])
        before = obs[:, :view].copy()
        obs, _, terminals, truncations, _ = env.step(actions)
        ended = terminals | truncations
        unchanged = (obs[:, :view] == before).reshape(n, -1).all(1) & ~ended
        stay += int((actions == 0).sum())
        bump += int(((actions != 0) & unchanged).sum())
        after_move += int((last_move != 0).sum())
        reverse += int(((last_move != 0) & (actions == opposite[last_move])).sum())
        moved = (actions != 0) & ~unchanged & ~ended
        last_move = np.where(moved, actions, 0)
        steps += n
    env.close()
    shown = len(entropy[True]) / steps
    name = "random moves" if model is None else a.checkpoint
    print(f"{name} ({size}x{size}): stay {stay / steps:.3f}, into a wall {bump / steps:.3f}, "
          f"onto an adjacent goal {onto_goal / max(adjacent, 1):.3f} ({adjacent} steps), "
          f"back the way it came {reverse / max(after_move, 1):.3f} of the steps after a move; "
          f"action entropy with the goal in view {np.mean(entropy[True]):.2f}, "
          f"out of view {np.mean(entropy[False]):.2f} (goal in view on {shown:.0%} of the steps)")


if __name__ == "__main__":
    main()
