"""The maze env against its rules: solvable mazes, walls, rewards, truncation, observations."""

from collections import deque

import numpy as np
import pytest

import shoal

OPEN, WALL, GOAL = 0, 1, 2
MOVES = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}


def grid_of(state: dict) -> np.ndarray:
    n = state["size"]
    return np.frombuffer(state["grid"], dtype=np.uint8).reshape(n, n)


def window(grid: np.ndarray, pos: tuple[int, int], view: int) -> np.ndarray:
    """The view x view cells centred on pos; everything outside the maze reads as wall."""
    p = view // 2
    n = grid.shape[0]
    padded = np.full((n + 2 * p, n + 2 * p), WALL, np.uint8)
    padded[p:p + n, p:p + n] = grid
    r, c = pos
    return padded[r:r + view, c:c + view]


def observation(grid: np.ndarray, pos: tuple[int, int], view: int, prev_action: bool,
                last_action: int) -> np.ndarray:
    """What the env shows: the window, then with prev_action a row with the previous action
    one-hot (all 0 when there is none, last_action = -1)."""
    cells = window(grid, pos, view)
    if not prev_action:
        return cells
    row = np.zeros((1, view), np.uint8)
    if last_action >= 0:
        row[0, last_action] = 1
    return np.concatenate([cells, row])


def reachable(grid: np.ndarray, start: tuple[int, int]) -> set[tuple[int, int]]:
    """Open cells (goal included) reachable from start by 4-neighbour moves."""
    seen = {start}
    todo = deque([start])
    while todo:
        r, c = todo.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            q = (r + dr, c + dc)
            if q not in seen and grid[q] != WALL:
                seen.add(q)
                todo.append(q)
    return seen


def check_maze(state: dict) -> None:
    grid = grid_of(state)
    n = state["size"]
    agent, goal = tuple(state["agent"]), tuple(state["goal"])
    assert agent != goal
    assert grid[agent] == OPEN and grid[goal] == GOAL
    assert (grid == GOAL).sum() == 1
    assert np.all(grid[0] == WALL) and np.all(grid[-1] == WALL)
    assert np.all(grid[:, 0] == WALL) and np.all(grid[:, -1] == WALL)
    if n % 2 == 0:  # the lattice has an odd extent: the extra row and column stay wall
        assert np.all(grid[n - 2] == WALL) and np.all(grid[:, n - 2] == WALL)
    seen = reachable(grid, agent)
    assert goal in seen, "goal not reachable from the start"
    # A perfect maze over the m x m lattice: every open cell connected, 2*m*m - 1 of them.
    m = (n - 1) // 2
    assert len(seen) == int((grid != WALL).sum()) == 2 * m * m - 1


@pytest.mark.parametrize("sizes", [range(5, 34), range(34, 64), [100, 127]])
def test_every_maze_is_solvable(sizes):
    for size in sizes:
        env = shoal.make("maze", num_envs=4, seed=size, size=size, view=5)
        for seed in (size, 1000 + size, 2000 + size, 3000 + size):
            env.reset(seed=seed)
            for i in range(env.num_envs):
                check_maze(env.state(i))
        env.close()


def test_new_maze_every_episode():
    env = shoal.make("maze", num_envs=1, seed=0, size=9, max_steps=3)
    env.reset()
    grids = {env.state(0)["grid"]}
    for _ in range(30):  # an episode ends every third step
        env.step(np.zeros(1, np.int32))
        grids.add(env.state(0)["grid"])
    assert len(grids) > 5


@pytest.mark.parametrize("size,view,max_steps,prev_action",
                         [(7, 5, 40, False), (5, 11, 25, False), (10, 3, 60, False),
                          (7, 5, 40, True), (9, 7, 30, True)])
def test_random_walk_follows_the_rules(size, view, max_steps, prev_action):
    """Every step against a model: walls block, reward 1 only at the goal, truncation at
    max_steps, observations (and final observations) are the window around the agent, with
    prev_action followed by the previous action one-hot (all 0 after a reset)."""
    num_envs = 4
    env = shoal.make("maze", num_envs=num_envs, seed=0, size=size, view=view, max_steps=max_steps,
                     prev_action=prev_action)
    assert env.single_observation_space.shape == (view + prev_action, view)
    rng = np.random.default_rng(0)
    obs, infos = env.reset()
    assert obs.shape == (num_envs, view + prev_action, view)
    states = [env.state(i) for i in range(num_envs)]
    for i, s in enumerate(states):
        assert s["last_action"] == -1
        assert np.array_equal(obs[i], observation(grid_of(s), s["agent"], view, prev_action, -1))
    counts = {"terminal": 0, "truncated": 0, "blocked": 0}
    for _ in range(1500):
        actions = rng.integers(0, 5, num_envs).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(actions)
        for i in range(num_envs):
            s = states[i]
            grid = grid_of(s)
            r, c = s["agent"]
            action = int(actions[i])
            dr, dc = MOVES[action]
            expected = (r + dr, c + dc)
            if grid[expected] == WALL:
                expected = (r, c)
                counts["blocked"] += dr != 0 or dc != 0
            at_goal = expected == tuple(s["goal"])
            tick = s["tick"] + 1
            assert bool(term[i]) == at_goal
            assert bool(trunc[i]) == (not at_goal and tick >= max_steps)
            assert rew[i] == (1.0 if at_goal else 0.0)
            new = env.state(i)
            if term[i] or trunc[i]:
                counts["terminal" if term[i] else "truncated"] += 1
                final = infos["final_observation"][i]
                assert np.array_equal(final, observation(grid, expected, view, prev_action, action))
                assert new["tick"] == 0 and new["last_action"] == -1
                check_maze(new)
            else:
                assert tuple(new["agent"]) == expected and new["tick"] == tick
                assert new["grid"] == s["grid"] and new["last_action"] == action
            assert np.array_equal(obs[i], observation(grid_of(new), new["agent"], view, prev_action,
                                                      new["last_action"]))
            states[i] = new
    assert counts["terminal"] > 0 and counts["truncated"] > 0 and counts["blocked"] > 0
    stats = env.log()
    episodes = counts["terminal"] + counts["truncated"]
    assert stats["n"] == episodes
    assert stats["score"] == pytest.approx(counts["terminal"] / episodes)
    assert stats["episode_return"] == pytest.approx(stats["score"])
    env.close()


def test_prev_action_leaves_the_mazes_and_moves_as_they_were():
    """The option only adds the row: the same seed and actions give the same mazes, windows,
    rewards and episode ends with it on and off."""
    plain = shoal.make("maze", num_envs=4, seed=5, size=9, view=7)
    headed = shoal.make("maze", num_envs=4, seed=5, size=9, view=7, prev_action=True)
    a, _ = plain.reset()
    b, _ = headed.reset()
    assert np.array_equal(a, b[:, :7]) and not b[:, 7].any()
    rng = np.random.default_rng(1)
    for _ in range(400):
        actions = rng.integers(0, 5, 4).astype(np.int32)
        a, ra, ta, ua, _ = plain.step(actions)
        b, rb, tb, ub, _ = headed.step(actions)
        assert np.array_equal(a, b[:, :7])
        assert np.array_equal(ra, rb) and np.array_equal(ta, tb) and np.array_equal(ua, ub)
        ended = ta | ua
        assert not b[ended, 7].any()
        live = np.flatnonzero(~ended)
        assert np.array_equal(b[live, 7], np.eye(7, dtype=np.uint8)[actions[live]])
    plain.close()
    headed.close()


def test_default_time_limit_truncates():
    size = 6
    env = shoal.make("maze", num_envs=2, seed=3, size=size)
    env.reset()
    limit = 4 * size * size
    assert env.state(0)["max_steps"] == limit
    before = env.observations.copy()
    stay = np.zeros(2, np.int32)
    for t in range(1, limit + 1):
        obs, rew, term, trunc, infos = env.step(stay)
        assert not term.any() and not rew.any()
        assert trunc.all() == (t == limit)
    assert np.array_equal(infos["final_observation"], before)
    stats = env.log()
    assert stats["n"] == 2 and stats["score"] == 0 and stats["episode_length"] == limit
    env.close()


def test_even_view_is_a_clear_error():
    with pytest.raises(ValueError, match="odd"):
        shoal.make("maze", view=10)


def test_prev_action_with_a_narrow_view_is_a_clear_error():
    with pytest.raises(ValueError, match="prev_action=True needs view >= 5"):
        shoal.make("maze", view=3, prev_action=True)
