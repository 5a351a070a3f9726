"""Rules of the drone env: hover, thrust and torque signs, the quaternion, targets, the arena."""

import numpy as np
import pytest

import shoal

DT = 0.02
MASS, GRAVITY, ARM, IXX, IYY, IZZ = 1.0, 9.81, 0.1, 0.01, 0.01, 0.02
MAX_THRUST = 2.0 * MASS * GRAVITY / 4.0  # thrust-to-weight 2: action 0 is hover
LIN_DRAG, ANG_DRAG, K_YAW = 0.1, 0.02, 0.02
MAX_VEL, MAX_OMEGA = 20.0, 30.0


def make(num_envs=1, seed=0, **params):
    env = shoal.make("drone", num_envs=num_envs, seed=seed, **params)
    env.reset()
    return env


def act(env, *rotors):
    """The same four rotor commands for every env."""
    return np.tile(np.asarray(rotors, np.float32), (env.num_agents, 1))


def expected_obs(s, arena=10.0):
    """The observation the header documents, rebuilt from the state."""
    pos, tgt = np.array(s["pos"]), np.array(s["target"])
    obs = np.concatenate([
        (tgt - pos) / (2 * arena),
        [pos[0] / arena, pos[1] / arena, pos[2] / arena - 1.0],
        np.array(s["vel"]) / MAX_VEL,
        np.array(s["rot"]),
        np.array(s["omega"]) / MAX_OMEGA,
    ])
    return np.clip(obs, -1, 1).astype(np.float32)


def rotation(q):
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def test_reset_is_level_at_rest_inside_the_arena():
    env = make(num_envs=16, seed=3)
    for i in range(16):
        s = env.state(i)
        assert s["tick"] == 0 and s["vel"] == (0.0, 0.0, 0.0) and s["omega"] == (0.0, 0.0, 0.0)
        w, x, y, z = s["quat"]
        assert x == 0.0 and y == 0.0 and w * w + z * z == pytest.approx(1.0, abs=1e-6)
        pos, tgt = np.array(s["pos"]), np.array(s["target"])
        for p in (pos, tgt):
            assert np.all(np.abs(p[:2]) <= 9.0) and 1.0 <= p[2] <= 19.0
        assert s["distance"] == pytest.approx(np.linalg.norm(tgt - pos), rel=1e-5)
    env.close()


def test_zero_action_hovers():
    env = make(num_envs=8, seed=1)
    start = [env.state(i) for i in range(8)]
    for _ in range(50):
        _, rew, term, trunc, _ = env.step(act(env, 0, 0, 0, 0))
        assert not term.any() and not trunc.any()
    for i in range(8):
        s = env.state(i)
        assert abs(s["pos"][2] - start[i]["pos"][2]) < 1e-3
        assert np.allclose(s["pos"], start[i]["pos"], atol=1e-3)
        assert np.allclose(s["quat"], start[i]["quat"], atol=1e-6)
        assert np.allclose(s["omega"], 0.0, atol=1e-6)
    env.close()


def test_full_symmetric_thrust_accelerates_straight_up():
    env = make(num_envs=4, seed=2)
    start = [env.state(i) for i in range(4)]
    vz = 0.0
    for _ in range(10):
        env.step(act(env, 1, 1, 1, 1))
        # semi-implicit Euler: net force 4*MAX_THRUST - m g - drag * v
        vz += DT * (4 * MAX_THRUST / MASS - GRAVITY - LIN_DRAG / MASS * vz)
    for i in range(4):
        s = env.state(i)
        assert s["vel"][2] == pytest.approx(vz, rel=1e-4)
        assert abs(s["vel"][0]) < 1e-5 and abs(s["vel"][1]) < 1e-5
        assert s["pos"][2] > start[i]["pos"][2] + 0.15
        assert np.allclose(s["omega"], 0.0, atol=1e-6)
    env.close()


@pytest.mark.parametrize(
    "rotors, axis, inertia, torque_per_unit",
    [
        ((0.0, 0.1, 0.0, -0.1), 0, IXX, ARM * 2),     # roll: rotor 1 (left) up, 3 (right) down
        ((-0.1, 0.0, 0.1, 0.0), 1, IYY, ARM * 2),     # pitch: rotor 2 (back) up, 0 (front) down
        ((0.1, -0.1, 0.1, -0.1), 2, IZZ, K_YAW * 4),  # yaw: clockwise rotors 0, 2 up
    ],
)
def test_differential_thrust_turns_the_documented_way(rotors, axis, inertia, torque_per_unit):
    env = make(num_envs=2, seed=4)
    env.step(act(env, *rotors))
    s = env.state(0)
    # one step from rest: omega = dt * torque / I, torque = lever * (difference of thrusts)
    torque = torque_per_unit * MAX_THRUST * 0.5 * 0.1
    want = np.zeros(3)
    want[axis] = DT * torque / inertia
    assert np.allclose(s["omega"], want, rtol=1e-4, atol=1e-7)
    assert want[axis] > 0
    for _ in range(5):
        env.step(act(env, *rotors))
    s = env.state(0)
    rot = np.array(s["rot"]).reshape(3, 3)
    if axis == 0:  # positive roll: the left side (body +y) rises, thrust tilts to body -y
        assert rot[2, 1] > 0.01
    elif axis == 1:  # positive pitch: the nose (body +x) drops, thrust tilts to body +x
        assert rot[2, 0] < -0.01
    else:  # positive yaw: counter-clockwise seen from above; net thrust unchanged, so it hovers
        assert s["omega"][2] > 0 and abs(s["vel"][2]) < 1e-4
    env.close()


def test_roll_moves_the_drone_sideways():
    """Positive roll tilts the thrust toward body -y; a level drone facing +x then drifts to -y."""
    env = make(num_envs=64, seed=5)
    start = [env.state(i) for i in range(64)]
    for _ in range(3):
        env.step(act(env, 0, 0.1, 0, -0.1))
    for _ in range(15):
        env.step(act(env, 0.05, 0.05, 0.05, 0.05))  # hold the tilt, a little extra lift
    for i in range(64):
        s = env.state(i)
        heading = rotation(start[i]["quat"])
        body_y = heading[:, 1]
        drift = np.array(s["vel"]) @ body_y
        assert drift < -0.05, (i, s)
    env.close()


def test_quaternion_stays_unit_and_matches_the_rotation():
    env = make(num_envs=32, seed=6)
    rng = np.random.default_rng(0)
    for t in range(400):
        env.step(rng.uniform(-1, 1, (32, 4)).astype(np.float32))
        if t % 20 == 0:
            for i in range(0, 32, 4):
                s = env.state(i)
                q = np.array(s["quat"])
                assert abs(np.linalg.norm(q) - 1.0) < 2e-6
                assert np.allclose(rotation(q).ravel(), s["rot"], atol=1e-6)
                r = np.array(s["rot"]).reshape(3, 3)
                assert np.allclose(r @ r.T, np.eye(3), atol=1e-5)
    env.close()


def test_observation_matches_state():
    env = make(num_envs=8, seed=7)
    rng = np.random.default_rng(1)
    for t in range(120):
        obs, _, term, trunc, _ = env.step(rng.uniform(-0.3, 0.3, (8, 4)).astype(np.float32))
        for i in range(8):
            assert np.allclose(obs[i], expected_obs(env.state(i)), atol=1e-6), (t, i)
    env.close()


def test_progress_reward_and_bonus_with_a_new_target():
    # a radius larger than the arena: every step reaches the target
    env = make(num_envs=4, seed=8, target_radius=100.0, target_bonus=5.0)
    before = [env.state(i) for i in range(4)]
    _, rew, term, trunc, _ = env.step(act(env, 0.2, 0.2, 0.2, 0.2))
    for i in range(4):
        s, b = env.state(i), before[i]
        old_target = np.array(b["target"])
        progress = np.linalg.norm(old_target - b["pos"]) - np.linalg.norm(old_target - np.array(s["pos"]))
        assert rew[i] == pytest.approx(5.0 + progress, abs=1e-5)
        assert s["score"] == 1 and s["tick"] == 1
        assert s["target"] != b["target"], "a new target is drawn"
        assert s["distance"] == pytest.approx(np.linalg.norm(np.array(s["target"]) - s["pos"]), rel=1e-5)
    assert not term.any() and not trunc.any(), "reaching a target does not end the episode"
    env.step(act(env, 0, 0, 0, 0))
    assert all(env.state(i)["score"] == 2 for i in range(4))
    env.close()


def test_reward_is_progress_toward_the_target():
    env = make(num_envs=16, seed=9)
    rng = np.random.default_rng(2)
    for _ in range(30):
        before = [env.state(i) for i in range(16)]
        _, rew, term, trunc, _ = env.step(rng.uniform(-0.2, 0.4, (16, 4)).astype(np.float32))
        for i in range(16):
            s = env.state(i)
            if term[i] or trunc[i] or s["score"] != before[i]["score"]:
                continue
            assert rew[i] == pytest.approx(before[i]["distance"] - s["distance"], abs=1e-5)
    env.close()


@pytest.mark.parametrize("rotors, side", [((-1, -1, -1, -1), "floor"), ((1, 1, 1, 1), "ceiling")])
def test_leaving_the_arena_terminates(rotors, side):
    env = make(num_envs=4, seed=10, crash_penalty=7.0)
    ended = np.zeros(4, bool)
    for t in range(400):
        prev = [env.state(i) for i in range(4)]
        obs, rew, term, trunc, infos = env.step(act(env, *rotors))
        assert not trunc.any()
        for i in np.flatnonzero(term):
            assert not ended[i]
            ended[i] = True
            z = prev[i]["pos"][2] + DT * prev[i]["vel"][2]  # close to where it left
            assert (z < 0.5) if side == "floor" else (z > 19.5)
            assert -7.5 < rew[i] < -6.5, "crash penalty plus at most one step of progress"
            fin = infos["final_observation"][i]
            assert fin[5] == (-1.0 if side == "floor" else 1.0), "final observation is outside"
            s = env.state(i)
            assert s["tick"] == 0 and s["vel"] == (0.0, 0.0, 0.0), "reset on the same step"
            assert np.allclose(obs[i], expected_obs(s), atol=1e-6)
        if ended.all():
            break
    assert ended.all()
    stats = env.log()
    assert stats["n"] == 4 and stats["crashed"] == 1.0 and stats["score"] == 0.0
    env.close()


def test_truncation_at_max_steps():
    env = make(num_envs=3, seed=11, max_steps=25)
    total = np.zeros(3)
    for t in range(25):
        _, rew, term, trunc, _ = env.step(act(env, 0, 0, 0, 0))
        total += rew
        assert not term.any()
        assert trunc.all() == (t == 24) and trunc.any() == (t == 24)
    stats = env.log()
    assert stats["n"] == 3 and stats["episode_length"] == 25 and stats["crashed"] == 0
    assert stats["episode_return"] == pytest.approx(total.mean(), abs=1e-5)
    env.close()


def test_actions_outside_the_box_are_clipped():
    a = make(num_envs=2, seed=12)
    b = make(num_envs=2, seed=12)
    for _ in range(20):
        a.step(act(a, 3.0, -5.0, 1.0, 0.5))
        b.step(act(b, 1.0, -1.0, 1.0, 0.5))
        assert np.array_equal(a.observations, b.observations)
    a.close()
    b.close()


def pd_controller(obs, arena=10.0):
    """Rotor commands of a cascaded PD controller that reads only the observation and inverts the
    documented rotor layout: if the signs in drone.h were wrong, it would crash instead."""
    rel = obs[:, 0:3] * 2 * arena
    vel = obs[:, 6:9] * MAX_VEL
    rot = obs[:, 9:18].reshape(-1, 3, 3)
    omega = obs[:, 18:21] * MAX_OMEGA
    acc = 2.0 * rel - 2.5 * vel
    horizontal = np.linalg.norm(acc[:, :2], axis=1, keepdims=True)
    acc[:, :2] *= np.minimum(1.0, 0.5 * GRAVITY / np.maximum(horizontal, 1e-6))
    acc[:, 2] = np.clip(acc[:, 2], -0.5 * GRAVITY, 0.8 * GRAVITY) + GRAVITY
    up_wanted = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    up = rot[:, :, 2]
    thrust = np.clip(np.einsum("ij,ij->i", acc, up) * MASS, 0, 4 * MAX_THRUST)
    tilt_error = np.einsum("nji,nj->ni", rot, np.cross(up, up_wanted))  # body frame
    tau = 1.0 * tilt_error - 0.14 * omega
    tau[:, 2] = -0.1 * omega[:, 2]
    pair02 = (thrust + tau[:, 2] / K_YAW) / 2  # T0 + T2
    pair13 = (thrust - tau[:, 2] / K_YAW) / 2  # T1 + T3
    t = np.stack([(pair02 - tau[:, 1] / ARM) / 2, (pair13 + tau[:, 0] / ARM) / 2,
                  (pair02 + tau[:, 1] / ARM) / 2, (pair13 - tau[:, 0] / ARM) / 2], 1)
    return np.clip(2 * t / MAX_THRUST - 1, -1, 1).astype(np.float32)


def test_a_pd_controller_reaches_targets():
    env = shoal.make("drone", num_envs=16, seed=0)
    obs, _ = env.reset()
    for _ in range(1000):
        obs, rew, term, trunc, _ = env.step(pd_controller(obs))
        assert not term.any(), "the controller crashed"
    stats = env.log()
    assert stats["n"] == 16 and stats["crashed"] == 0
    assert stats["score"] >= 4, stats
    assert stats["episode_return"] > stats["score"], "progress adds to the bonuses"
    env.close()
