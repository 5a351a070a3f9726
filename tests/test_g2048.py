"""The g2048 env against a plain Python reference of the 2048 rules, step by step."""

import numpy as np
import pytest

import shoal

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def merge_row_left(row: list[int]) -> tuple[list[int], list[int]]:
    """One row of exponents slid left; also the exponents of the tiles merges created."""
    tiles = [v for v in row if v]
    out, created = [], []
    i = 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:
            out.append(tiles[i] + 1)
            created.append(tiles[i] + 1)
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return out + [0] * (4 - len(out)), created


def reference_move(board: np.ndarray, action: int) -> tuple[np.ndarray, list[int]]:
    """The board (16 exponents) after sliding, before any spawn; and the merged exponents."""
    grid = np.array(board, dtype=np.int64).reshape(4, 4)
    # A view of the grid in which the move is "left": writing through it updates grid.
    view = {LEFT: grid, RIGHT: grid[:, ::-1], UP: grid.T, DOWN: grid.T[:, ::-1]}[action]
    created = []
    for r in range(4):
        row, made = merge_row_left(list(view[r]))
        view[r] = row
        created += made
    return grid.reshape(16), created


def can_move(board: np.ndarray) -> bool:
    return any(not np.array_equal(reference_move(board, a)[0], board) for a in range(4))


def is_fresh(board: np.ndarray) -> bool:
    """A board just after reset: two tiles, each a 2 or a 4."""
    tiles = board[board != 0]
    return len(tiles) == 2 and set(tiles.tolist()) <= {1, 2}


def test_reference_rules():
    """The reference itself on hand-made rows (so the comparison below means something)."""
    assert merge_row_left([1, 1, 1, 0]) == ([2, 1, 0, 0], [2])
    assert merge_row_left([1, 1, 1, 1]) == ([2, 2, 0, 0], [2, 2])
    assert merge_row_left([2, 1, 1, 0]) == ([2, 2, 0, 0], [2])
    assert merge_row_left([0, 3, 0, 3]) == ([4, 0, 0, 0], [4])
    assert merge_row_left([1, 2, 3, 4]) == ([1, 2, 3, 4], [])
    board = np.array([1, 0, 0, 0,
                      1, 0, 0, 0,
                      1, 2, 0, 0,
                      0, 2, 0, 1])
    down, made = reference_move(board, DOWN)
    assert down.tolist() == [0, 0, 0, 0,
                             0, 0, 0, 0,
                             1, 0, 0, 0,
                             2, 3, 0, 1] and sorted(made) == [2, 3]
    right, _ = reference_move(board, RIGHT)
    assert right.tolist() == [0, 0, 0, 1,
                              0, 0, 0, 1,
                              0, 0, 1, 2,
                              0, 0, 2, 1]
    assert not can_move(np.array([1, 2, 1, 2, 2, 1, 2, 1] * 2))


@pytest.mark.parametrize("params", [{}, {"invalid_penalty": 0.5, "reward_scale": 0.25}])
def test_steps_match_reference(params):
    """Thousands of random steps: each board is the reference move plus exactly one spawned
    2 or 4 on a cell the move left empty (none after an invalid move); rewards, game over,
    final observations and the logged scores agree."""
    num_envs, steps = 8, 2500
    scale = params.get("reward_scale", 1 / 16)
    penalty = params.get("invalid_penalty", 0.0)
    env = shoal.make("g2048", num_envs=num_envs, seed=11, **params)
    rng = np.random.default_rng(11)
    obs, infos = env.reset()
    assert all(is_fresh(obs[i]) for i in range(num_envs))
    prev = obs.astype(np.int64)
    score = [0] * num_envs
    length = [0] * num_envs
    finished = []  # (score, length, max_tile) of each finished episode
    spawns = {1: 0, 2: 0}
    invalid = 0
    for t in range(steps):
        actions = rng.integers(0, 4, num_envs).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(actions)
        assert not trunc.any()  # max_steps is far away
        for i in range(num_envs):
            expected, created = reference_move(prev[i], int(actions[i]))
            done = bool(term[i])
            after = (infos["final_observation"][i] if done else obs[i]).astype(np.int64)
            length[i] += 1
            if np.array_equal(expected, prev[i]):  # invalid: nothing moves, nothing spawns
                invalid += 1
                assert np.array_equal(after, prev[i])
                assert rew[i] == np.float32(-penalty)
                assert not done
            else:
                diff = np.flatnonzero(after != expected)
                assert len(diff) == 1, f"step {t} env {i}: not exactly one spawned tile"
                cell = diff[0]
                assert expected[cell] == 0 and after[cell] in (1, 2)
                spawns[int(after[cell])] += 1
                assert rew[i] == pytest.approx(scale * sum(created), rel=1e-6, abs=1e-7)
                score[i] += sum(2**e for e in created)
                assert done == (not can_move(after))
            if done:
                assert (after != 0).all()
                finished.append((score[i], length[i], 2 ** int(after.max())))
                score[i], length[i] = 0, 0
                assert is_fresh(obs[i])
            if t % 250 == 0:  # the state's board is the observation in tile values
                values = np.array(env.state(i)["board"])
                assert np.array_equal(np.where(obs[i] > 0, 2 ** obs[i].astype(np.int64), 0), values)
        prev = obs.astype(np.int64)
    assert invalid > 100 and len(finished) > 20
    fours = spawns[2] / (spawns[1] + spawns[2])
    assert 0.07 < fours < 0.13, f"share of spawned 4s is {fours:.3f}, expected 0.1"
    stats = env.log()
    assert stats["n"] == len(finished)
    got = np.array(finished, dtype=np.float64).mean(0)
    assert stats["score"] == pytest.approx(got[0], rel=1e-5)
    assert stats["episode_length"] == pytest.approx(got[1], rel=1e-5)
    assert stats["max_tile"] == pytest.approx(got[2], rel=1e-5)
    env.close()


def test_truncation_at_max_steps():
    max_steps = 12  # a game needs at least 14 valid moves to fill the board, so none ends first
    env = shoal.make("g2048", num_envs=4, seed=0, max_steps=max_steps)
    env.reset()
    rng = np.random.default_rng(0)
    for t in range(1, 3 * max_steps + 1):
        obs, rew, term, trunc, infos = env.step(rng.integers(0, 4, 4).astype(np.int32))
        assert not term.any()
        assert trunc.all() == (t % max_steps == 0) and trunc.any() == trunc.all()
        if trunc.any():
            assert all(is_fresh(obs[i]) for i in range(4))
    stats = env.log()
    assert stats["n"] == 12 and stats["episode_length"] == max_steps
    env.close()
