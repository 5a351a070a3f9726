"""Rules of the forage env: shared grid, no overlap, food rewards, windows, joint truncation."""

import numpy as np
import pytest

import shoal

EMPTY, WALL, FOOD, AGENT = 0, 1, 2, 3
MOVES = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}


def make(num_envs=2, seed=0, **params):
    env = shoal.make("forage", num_envs=num_envs, seed=seed, **params)
    env.reset()
    return env


def grid_of(s, size):
    return np.frombuffer(s["grid"], np.uint8).reshape(size, size)


def window(grid, row, col, view):
    """The view x view window around (row, col), walls outside the grid."""
    r = view // 2
    padded = np.pad(grid, r, constant_values=WALL)
    return padded[row:row + view, col:col + view]


def check_world(s, size, num_agents, num_food):
    grid = grid_of(s, size)
    agents = s["agents"]
    assert len(set(agents)) == num_agents, "two agents share a cell"
    for row, col in agents:
        assert 0 <= row < size and 0 <= col < size
        assert grid[row, col] == AGENT
    assert (grid == AGENT).sum() == num_agents
    assert (grid == FOOD).sum() == num_food
    assert not (grid == WALL).any()


def test_layout_and_spaces():
    env = make(num_envs=3, num_agents=5, view=9)
    assert env.num_agents == 15 and env.observations.shape == (15, 9, 9)
    assert env.observations.dtype == np.uint8
    for i in range(3):
        check_world(env.state(i), 24, 5, 16)
    env.close()


def test_agents_never_overlap_and_moves_follow_the_rules():
    size, n, food = 10, 12, 10
    env = make(num_envs=3, seed=1, size=size, num_agents=n, num_food=food)
    rng = np.random.default_rng(0)
    moved = blocked = 0
    for _ in range(300):
        before = [env.state(i) for i in range(3)]
        actions = rng.integers(0, 5, env.num_agents).astype(np.int32)
        env.step(actions)
        for i in range(3):
            s, b = env.state(i), before[i]
            if s["tick"] == 0:
                continue  # the world was reset
            check_world(s, size, n, food)
            grid_before = grid_of(b, size)
            ends = set(s["agents"])
            for k in range(n):
                a = int(actions[i * n + k])
                (r0, c0), (r1, c1) = b["agents"][k], s["agents"][k]
                dr, dc = MOVES[a]
                assert (r1 - r0, c1 - c0) in ((0, 0), (dr, dc)), "moved other than its action"
                tr, tc = r0 + dr, c0 + dc
                outside = not (0 <= tr < size and 0 <= tc < size)
                if a == 0 or outside:
                    assert (r1, c1) == (r0, c0)
                elif (r1, c1) == (r0, c0):
                    blocked += 1
                    # blocked only by an agent: one that ends there, or one that sat there all step
                    assert (tr, tc) in ends or grid_before[tr, tc] == AGENT
                else:
                    moved += 1
                if not outside and a != 0 and grid_before[tr, tc] in (EMPTY, FOOD) \
                        and (tr, tc) not in ends - {(r1, c1)}:
                    assert (r1, c1) == (tr, tc), "a free destination must be taken"
    assert moved > 1000 and blocked > 50
    env.close()


def test_food_gives_exactly_one_and_respawns():
    size, n, food = 8, 6, 12
    env = make(num_envs=4, seed=2, size=size, num_agents=n, num_food=food)
    rng = np.random.default_rng(1)
    eaten = 0
    for _ in range(200):
        before = [env.state(i) for i in range(4)]
        _, rew, term, trunc, _ = env.step(rng.integers(0, 5, env.num_agents).astype(np.int32))
        assert set(np.unique(rew)) <= {0.0, 1.0}
        assert not term.any()
        for i in range(4):
            s, b = env.state(i), before[i]
            if s["tick"] == 0:
                continue
            r = rew[i * n:(i + 1) * n]
            assert r.sum() == s["food_collected"] - b["food_collected"]
            grid_before = grid_of(b, size)
            for k in range(n):
                start, end = b["agents"][k], s["agents"][k]
                if grid_before[end] == FOOD and end != start:
                    assert r[k] == 1.0, "moving onto food pays 1"
                if r[k] == 1.0:
                    assert end != start, "only a move onto food pays"
                    eaten += 1
            assert (grid_of(s, size) == FOOD).sum() == food, "eaten food respawns"
    assert eaten > 50
    env.close()


def test_observation_windows_match_state():
    for view in (1, 3, 7, 11):
        size, n = 9, 5
        env = make(num_envs=2, seed=3, size=size, num_agents=n, num_food=6, view=view)
        rng = np.random.default_rng(view)
        for t in range(60):
            obs, *_ = env.step(rng.integers(0, 5, env.num_agents).astype(np.int32))
            for i in range(2):
                s = env.state(i)
                grid = grid_of(s, size)
                for k, (row, col) in enumerate(s["agents"]):
                    want = window(grid, row, col, view)
                    assert np.array_equal(obs[i * n + k], want), (view, t, i, k)
                    assert obs[i * n + k][view // 2, view // 2] == AGENT
        env.close()


def test_all_rows_truncate_together_and_log():
    n = 6
    env = make(num_envs=3, seed=4, num_agents=n, max_steps=40, size=10, num_food=20)
    rng = np.random.default_rng(2)
    totals = np.zeros(env.num_agents)
    for t in range(40):
        before = [env.state(i) for i in range(3)]
        obs, rew, term, trunc, infos = env.step(rng.integers(0, 5, env.num_agents).astype(np.int32))
        totals += rew
        assert not term.any()
        if t < 39:
            assert not trunc.any()
        else:
            assert trunc.all()
            for i in range(3):
                s = env.state(i)
                assert s["tick"] == 0 and s["food_collected"] == 0
                grid = grid_of(s, 10)
                for k, (row, col) in enumerate(s["agents"]):
                    assert np.array_equal(obs[i * n + k], window(grid, row, col, 7))
                fin = infos["final_observation"][i * n:(i + 1) * n]
                assert np.all(fin[:, 3, 3] == AGENT)
                # the final windows show the last step's world, not the new one
                assert before[i]["tick"] == 39
    stats = env.log()
    assert stats["n"] == 3 and stats["episode_length"] == 40
    assert stats["episode_return"] == pytest.approx(totals.sum() / env.num_agents)
    assert stats["score"] == pytest.approx(stats["episode_return"])
    env.close()


def test_final_observation_is_the_last_world():
    n, size = 4, 8
    env = make(num_envs=1, seed=5, num_agents=n, size=size, num_food=4, max_steps=3)
    stay = np.zeros(n, np.int32)
    env.step(stay)
    env.step(stay)
    s = env.state(0)  # staying changes nothing, so this is the world of the last step
    _, _, _, trunc, infos = env.step(stay)
    assert trunc.all()
    grid = grid_of(s, size)
    for k, (row, col) in enumerate(s["agents"]):
        assert np.array_equal(infos["final_observation"][k], window(grid, row, col, 7))
    env.close()


def test_determinism_across_backends():
    def run(**kw):
        env = shoal.make("forage", num_envs=4, seed=9, **kw)
        env.reset()
        rng = np.random.default_rng(3)
        out = []
        for _ in range(100):
            obs, rew, *_ = env.step(rng.integers(0, 5, env.num_agents).astype(np.int32))
            out += [obs.copy(), rew.copy()]
        env.close()
        return out

    a, b = run(), run(backend="threads", num_workers=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="odd"):
        shoal.make("forage", num_envs=1, view=6)
    with pytest.raises(ValueError, match="more than half"):
        shoal.make("forage", num_envs=1, size=4, num_agents=6, num_food=4)
