"""breakout: its rules, checked step by step against the C env's exposed state."""

from __future__ import annotations

import numpy as np
import pytest

import shoal

STAY, LEFT, RIGHT = 0, 1, 2


def follow(s: dict, jitter: float = 0.0) -> int:
    """A scripted policy: move the paddle's centre to where the ball will cross the paddle's row
    (walls folded in), or under the ball while it rises; ``jitter`` offsets the aim."""
    size, right = s["ball_size"], s["width"] - s["ball_size"]
    x = s["ball_x"]
    if s["vy"] > 0:
        x += s["vx"] * (s["paddle_y"] - s["ball_y"] - size) / s["vy"]
        x = abs(x) % (2 * right)
        x = 2 * right - x if x > right else x
    target = x + size / 2 + jitter
    centre = s["paddle_x"] + s["paddle_w"] / 2
    reach = s["paddle_speed"] * s["frameskip"] / 2
    if target < centre - reach:
        return LEFT
    if target > centre + reach:
        return RIGHT
    return STAY


def step1(env, a) -> tuple:
    dtype = np.int32 if env.single_action_space.shape == () else np.float32
    obs, rew, term, trunc, infos = env.step(np.array([a], dtype))
    return obs[0].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]), infos


def bricks_of(s: dict) -> np.ndarray:
    return np.frombuffer(s["bricks"], np.uint8).copy()


def near_bricks(s: dict, margin: float, rows: int) -> bool:
    top = s["brick_top"] - margin
    bottom = s["brick_top"] + s["brick_h"] * rows + margin
    return s["ball_y"] + s["ball_size"] > top and s["ball_y"] < bottom


def test_ball_reflects_off_walls():
    """Side and top walls mirror the ball's path and flip one velocity component."""
    env = shoal.make("breakout", num_envs=1, seed=3, frameskip=1, brick_rows=1)
    env.reset()
    rng = np.random.default_rng(0)
    side = top = 0
    prev = env.state(0)
    for _ in range(6000):
        _, _, term, trunc, _ = step1(env, follow(prev, rng.uniform(-6, 6)))
        s = env.state(0)
        if term or trunc or s["lives"] != prev["lives"] or near_bricks(prev, 8, 1) or \
                prev["ball_y"] > prev["paddle_y"] - 12:
            prev = s
            continue
        nx = prev["ball_x"] + prev["vx"]
        ny = prev["ball_y"] + prev["vy"]
        right = s["width"] - s["ball_size"]
        if nx < 0 or nx > right:
            want = -nx if nx < 0 else 2 * right - nx
            assert s["ball_x"] == pytest.approx(want, abs=1e-3)
            assert s["vx"] == pytest.approx(-prev["vx"], abs=1e-5) and s["vy"] == prev["vy"]
            assert s["ball_y"] == pytest.approx(ny, abs=1e-3)
            side += 1
        elif ny < 0:
            assert s["ball_y"] == pytest.approx(-ny, abs=1e-3)
            assert s["vy"] == pytest.approx(-prev["vy"], abs=1e-5) and s["vx"] == prev["vx"]
            top += 1
        else:  # free flight: straight line, same velocity
            assert (s["ball_x"], s["ball_y"]) == (pytest.approx(nx, abs=1e-3), pytest.approx(ny, abs=1e-3))
            assert (s["vx"], s["vy"]) == (prev["vx"], prev["vy"])
        prev = s
    assert side >= 20 and top >= 1, (side, top)
    env.close()


def test_breaking_a_brick_rewards_and_removes_it():
    env = shoal.make("breakout", num_envs=1, seed=5)
    env.reset()
    rng = np.random.default_rng(1)
    points = {0: 7, 1: 7, 2: 4, 3: 4, 4: 1, 5: 1}
    prev = env.state(0)
    broken_total = 0
    for _ in range(3000):
        _, rew, term, trunc, _ = step1(env, follow(prev, rng.uniform(-6, 6)))
        s = env.state(0)
        if term or trunc:
            break
        before, after = bricks_of(prev), bricks_of(s)
        assert np.all(after <= before), "a broken brick came back"
        gone = np.flatnonzero(before != after)
        assert rew == len(gone), "reward must be 1 per brick broken"
        assert s["score"] - prev["score"] == sum(points[i // 18] for i in gone)
        assert s["bricks_left"] == int(after.sum())
        for i in gone:  # the ball is close to every brick it broke
            bx, by = (i % 18) * s["brick_w"], s["brick_top"] + (i // 18) * s["brick_h"]
            cx, cy = s["ball_x"] + 1.5, s["ball_y"] + 1.5
            reach = 4 * s["speed_max"] + 8
            assert bx - reach < cx < bx + s["brick_w"] + reach and by - reach < cy < by + s["brick_h"] + reach
        broken_total += len(gone)
        prev = s
    assert broken_total >= 20
    env.close()


def brick_boxes(bricks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and top edges of the given (live) brick indices, in a 6 x 18 layout."""
    return (bricks % 18) * 8.0, 24.0 + (bricks // 18) * 6.0


def test_no_tunnelling_at_top_speed():
    """Between steps without a bounce, the ball's swept box never crosses a live brick."""
    env = shoal.make("breakout", num_envs=1, seed=2)
    env.reset()
    rng = np.random.default_rng(2)
    prev = env.state(0)
    fast = 0
    eps = 1e-3
    for _ in range(8000):
        _, _, term, trunc, _ = step1(env, follow(prev, rng.uniform(-6, 6)))
        s = env.state(0)
        if term or trunc or s["lives"] != prev["lives"]:
            prev = s
            continue
        sz = s["ball_size"]
        bx, by = brick_boxes(np.flatnonzero(bricks_of(s)))
        x, y = s["ball_x"], s["ball_y"]
        assert not np.any((x < bx + 8) & (x + sz > bx) & (y < by + 6) & (y + sz > by)), \
            "the ball rests inside a live brick"
        straight = (s["vx"], s["vy"]) == (prev["vx"], prev["vy"]) and s["bricks"] == prev["bricks"]
        if straight and s["speed"] == s["speed_max"]:
            fast += 1
            bx, by = brick_boxes(np.flatnonzero(bricks_of(prev)))
            t = np.linspace(0, 1, 65)[:, None]
            x = prev["ball_x"] + t * (s["ball_x"] - prev["ball_x"])
            y = prev["ball_y"] + t * (s["ball_y"] - prev["ball_y"])
            hit = (x < bx + 8 - eps) & (x + sz > bx + eps) & (y < by + 6 - eps) & (y + sz > by + eps)
            assert not hit.any(), "the ball passed through a brick"
        prev = s
    assert fast >= 20, "the ball never flew at top speed"
    env.close()


def test_losing_the_ball_costs_a_life_and_the_last_one_ends_the_episode():
    env = shoal.make("breakout", num_envs=1, seed=7, lives=3)
    env.reset()
    lives = [env.state(0)["lives"]]
    for t in range(5000):
        obs, rew, term, trunc, infos = step1(env, STAY)
        s = env.state(0)
        if term:
            break
        if s["lives"] != lives[-1]:
            assert s["lives"] == lives[-1] - 1
            assert obs[5] == pytest.approx(s["lives"] / 3)
            assert s["paddle_w"] == s["paddle_full_w"] and s["speed"] == 2.0 and s["vy"] > 0
            lives.append(s["lives"])
    assert term and not trunc
    assert lives == [3, 2, 1]
    assert infos["final_observation"][0][5] == pytest.approx(0.0)
    assert env.state(0)["lives"] == 3 and env.state(0)["tick"] == 0
    stats = env.log()
    assert stats["n"] == 1 and stats["episode_length"] == t + 1
    env.close()


def test_clearing_every_brick_is_terminal():
    env = shoal.make("breakout", num_envs=1, seed=1, brick_rows=1, brick_cols=4, lives=50)
    env.reset()
    rng = np.random.default_rng(1)
    s = env.state(0)
    for _ in range(20000):
        _, rew, term, trunc, infos = step1(env, follow(s, rng.uniform(-8, 8)))
        s = env.state(0)
        if term:
            break
    assert term
    assert infos["final_observation"][0][8:].sum() == 0, "all bricks broken in the final observation"
    stats = env.log()
    assert stats["cleared"] == 1 and stats["bricks"] == 4 and stats["episode_return"] == 4
    env.close()


def test_continuous_mode_moves_paddle_proportionally():
    env = shoal.make("breakout", num_envs=1, seed=0, continuous=True, frameskip=2)
    assert env.single_action_space.shape == (1,)
    env.reset()
    for a in (0.5, -0.25, 1.0, -1.0, 0.0, 0.1):
        x0 = env.state(0)["paddle_x"]
        step1(env, a)
        assert env.state(0)["paddle_x"] - x0 == pytest.approx(a * 4.0 * 2, abs=1e-4)
    x0 = env.state(0)["paddle_x"]
    step1(env, 7.0)  # clipped to 1
    assert env.state(0)["paddle_x"] - x0 == pytest.approx(8.0, abs=1e-4)
    env.close()

    disc = shoal.make("breakout", num_envs=1, seed=0, frameskip=2)
    disc.reset()
    x0 = disc.state(0)["paddle_x"]
    step1(disc, RIGHT)
    assert disc.state(0)["paddle_x"] - x0 == pytest.approx(8.0)
    step1(disc, LEFT)
    step1(disc, LEFT)
    assert disc.state(0)["paddle_x"] - x0 == pytest.approx(-8.0)
    with pytest.raises(ValueError, match="outside the action space"):
        disc.step(np.array([1.5], np.float32).astype(np.int32) + 5)
    disc.close()


def test_discrete_actions_must_be_integral():
    env = shoal.make("breakout", num_envs=1, seed=0)
    env.reset()
    env.actions[:] = 1.5  # written straight into the float buffer: the binding rejects it
    with pytest.raises(ValueError, match="integer"):
        env.step(env.actions)
    env.close()


def test_paddle_is_clipped_to_the_walls():
    env = shoal.make("breakout", num_envs=1, seed=0, lives=100)
    env.reset()
    for _ in range(60):
        step1(env, LEFT)
    assert env.state(0)["paddle_x"] == 0.0
    for _ in range(60):
        step1(env, RIGHT)
    s = env.state(0)
    assert s["paddle_x"] == s["width"] - s["paddle_w"]
    env.close()


def test_observation_matches_state():
    env = shoal.make("breakout", num_envs=2, seed=4)
    env.reset()
    space = env.single_observation_space
    rng = np.random.default_rng(4)
    for _ in range(500):
        obs, *_ = env.step(rng.integers(0, 3, 2).astype(np.int32))
        for i in range(2):
            s = env.state(i)
            o = obs[i]
            assert space.contains(o)
            w, h, b = s["width"], s["height"], s["ball_size"]
            assert o[0] == pytest.approx((s["paddle_x"] + s["paddle_w"] / 2) / w)
            assert o[1] == pytest.approx((s["ball_x"] + b / 2) / w)
            assert o[2] == pytest.approx(min((s["ball_y"] + b / 2) / h, 1.0))
            assert o[3] == pytest.approx(s["vx"] / 4) and o[4] == pytest.approx(s["vy"] / 4)
            assert o[5] == pytest.approx(s["lives"] / 5)
            assert o[6] == pytest.approx(s["paddle_w"] / 16) and o[7] == pytest.approx(s["level"] / 4)
            assert np.array_equal(o[8:], bricks_of(s).astype(np.float32))
    env.close()


def test_ball_speeds_up_and_paddle_angle_depends_on_hit_offset():
    env = shoal.make("breakout", num_envs=1, seed=8, frameskip=1)
    env.reset()
    rng = np.random.default_rng(8)
    prev = env.state(0)
    bounces, levels = 0, set()
    for _ in range(8000):
        _, _, term, trunc, _ = step1(env, follow(prev, rng.uniform(-9, 9)))
        s = env.state(0)
        if term or trunc:
            prev = s
            continue
        levels.add(s["level"])
        if s["level"] != prev["level"] and s["hits"] == prev["hits"]:  # a brick speed-up
            assert np.hypot(s["vx"], s["vy"]) == pytest.approx(s["speed"], rel=1e-5)
        if s["hits"] == prev["hits"] + 1:  # a paddle bounce: up, at the angle of the hit offset
            speed = np.hypot(s["vx"], s["vy"])
            assert s["vy"] < 0 and speed == pytest.approx(s["speed"], rel=1e-5)
            # where the ball met the paddle's top edge (if nothing else came first that frame)
            t = (s["paddle_y"] - prev["ball_y"] - 3) / prev["vy"]
            x = prev["ball_x"] + t * prev["vx"]
            if 4 <= x <= s["width"] - 7:  # no wall contact in that frame
                half = (s["paddle_w"] + 3) / 2
                rel = np.clip((x + 1.5 - s["paddle_x"] - s["paddle_w"] / 2) / half, -1, 1)
                assert s["vx"] / speed == pytest.approx(np.sin(rel * np.pi / 3), abs=2e-3)
                bounces += 1
        prev = s
    assert bounces >= 20 and max(levels) >= 3, (bounces, levels)
    env.close()


def test_scripted_policy_beats_random():
    n, steps = 32, 1500
    scores = {}
    for name in ("follow", "random"):
        env = shoal.make("breakout", num_envs=n, seed=10)
        obs, _ = env.reset()
        rng = np.random.default_rng(10)
        for _ in range(steps):
            if name == "follow":
                diff = obs[:, 1] - obs[:, 0] + rng.uniform(-0.04, 0.04, n)
                a = np.where(diff < -0.014, LEFT, np.where(diff > 0.014, RIGHT, STAY))
            else:
                a = rng.integers(0, 3, n)
            obs, *_ = env.step(a.astype(np.int32))
        stats = env.log()
        scores[name] = stats.get("score", 0.0) if stats else 0.0
        if name == "follow" and not stats:  # no episode finished: count bricks broken so far
            scores[name] = float(np.mean([108 - env.state(i)["bricks_left"] for i in range(n)]))
        env.close()
    assert scores["follow"] > 2 * scores["random"] + 5, scores


def test_paddle_shrinks_after_the_ball_reaches_the_top_wall_behind_the_red_row():
    env = shoal.make("breakout", num_envs=1, seed=6, brick_rows=1)
    env.reset()
    rng = np.random.default_rng(6)
    s = env.state(0)
    shrunk = regrown = 0
    for _ in range(4000):
        prev = s
        _, _, term, trunc, _ = step1(env, follow(prev, rng.uniform(-6, 6)))
        s = env.state(0)
        if term or trunc:
            break
        if s["paddle_w"] < prev["paddle_w"]:
            assert s["paddle_w"] == s["paddle_full_w"] / 2 and s["red_broken"] and s["lives"] == prev["lives"]
            assert s["ball_y"] < 4 * s["speed_max"], "the ball must be at the top wall"
            shrunk += 1
        if s["paddle_w"] > prev["paddle_w"]:
            assert s["lives"] == prev["lives"] - 1, "the paddle regrows only with a new ball"
            regrown += 1
    assert shrunk >= 1 and regrown >= 1, (shrunk, regrown)
    env.close()
