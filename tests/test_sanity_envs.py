"""Rules of the six sanity envs (bandit, recall, password, target, coord, stochastic).

Each env isolates one ability a trainer needs. These tests pin down what a trainer test relies
on: the documented observation encoding and episode lengths, that a scripted optimal policy
reaches the documented optimal score, and that random or wrong policies score clearly less.
"""

from math import comb

import numpy as np
import pytest

import shoal


def play(env, policy, steps):
    """Runs ``policy(obs) -> actions`` for ``steps`` steps from a reset; returns env.log()."""
    obs, _ = env.reset()
    env.log()
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
    return env.log()


def record(env, actions_for_step, steps):
    """Steps with actions_for_step(t, obs) and returns copies of (obs, rew, term, trunc, final_obs)."""
    obs, _ = env.reset()
    out = [(obs.copy(), None, None, None, None)]
    for t in range(steps):
        obs, rew, term, trunc, infos = env.step(actions_for_step(t, obs))
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy(), infos["final_observation"].copy()))
    return out


def random_discrete(n, rows, seed=0):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, n, rows).astype(np.int32)


# ---------------------------------------------------------------- bandit


def test_bandit_encoding_and_delay():
    arms, delay = 4, 3
    env = shoal.make("bandit", num_envs=8, seed=0, arms=arms, delay=delay)
    obs, _ = env.reset()
    for _ in range(3):  # three episodes back to back
        assert obs.shape == (8, arms + 1)
        best = np.array([env.state(i)["best_arm"] for i in range(8)])
        np.testing.assert_array_equal(obs[:, :arms], np.eye(arms, dtype=np.float32)[best])
        assert np.all(obs[:, arms] == 1)
        choice = np.where(np.arange(8) % 2 == 0, best, (best + 1) % arms).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(choice)
        for wait in range(delay):
            assert np.all(obs == 0), "waiting steps are blank"
            assert np.all(rew == 0) and not term.any()
            # waiting actions are ignored: play the "wrong" arm everywhere
            obs, rew, term, trunc, infos = env.step(((best + 1) % arms).astype(np.int32))
        assert term.all() and not trunc.any()
        np.testing.assert_array_equal(rew, (np.arange(8) % 2 == 0).astype(np.float32))
        assert np.all(infos["final_observation"] == 0)
    stats = env.log()
    assert stats["n"] == 24 and stats["score"] == 0.5 and stats["episode_length"] == delay + 1


def test_bandit_optimal_and_random_scores():
    arms = 4
    env = shoal.make("bandit", num_envs=1000, seed=1, arms=arms, delay=2)
    best = play(env, lambda obs: np.argmax(obs[:, :arms], 1).astype(np.int32), 30)
    assert best["score"] == 1.0 and best["episode_return"] == 1.0 and best["n"] == 10_000
    rand = play(env, random_discrete(arms, 1000), 30)
    assert abs(rand["score"] - 1 / arms) < 0.03
    assert abs(rand["episode_return"] - 1 / arms) < 0.03


def test_bandit_fixed_hidden_arm_and_payout_probabilities():
    env = shoal.make("bandit", num_envs=1000, seed=2, arms=5, delay=0, best_arm=3,
                     best_prob=0.8, other_prob=0.3)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[0], [0, 0, 0, 0, 0, 1])  # context hidden, only the flag
    right = play(env, lambda obs: np.full(1000, 3, np.int32), 20)
    assert right["score"] == 1.0 and right["episode_length"] == 1.0
    assert abs(right["episode_return"] - 0.8) < 0.02
    wrong = play(env, lambda obs: np.full(1000, 1, np.int32), 20)
    assert wrong["score"] == 0.0 and abs(wrong["episode_return"] - 0.3) < 0.02


def test_bandit_rejects_best_arm_outside_arms():
    with pytest.raises(ValueError, match="best_arm"):
        shoal.make("bandit", arms=3, best_arm=3)


# ---------------------------------------------------------------- recall


@pytest.mark.parametrize("delay", [0, 4, 9])
def test_recall_encoding_and_delay(delay):
    symbols = 5
    env = shoal.make("recall", num_envs=16, seed=3, symbols=symbols, delay=delay)
    obs, _ = env.reset()
    for _ in range(2):
        symbol = np.array([env.state(i)["symbol"] for i in range(16)])
        np.testing.assert_array_equal(obs, np.eye(symbols + 1, dtype=np.float32)[symbol])
        # actions before the query are ignored: answer "right" on all of them, wrong at the end
        right = symbol.astype(np.int32)
        for t in range(delay):
            obs, rew, term, trunc, _ = env.step(right)
            assert np.all(obs == 0) and np.all(rew == 0) and not term.any()
        obs, rew, term, *_ = env.step(right)
        assert not term.any() and np.all(rew == 0)
        np.testing.assert_array_equal(obs, np.tile(np.eye(symbols + 1, dtype=np.float32)[symbols], (16, 1)))
        answers = np.where(np.arange(16) < 8, symbol, (symbol + 1) % symbols).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(answers)
        assert term.all() and not trunc.any()
        np.testing.assert_array_equal(rew, (np.arange(16) < 8).astype(np.float32))
        assert np.all(infos["final_observation"] == 0)
    stats = env.log()
    assert stats["score"] == 0.5 and stats["episode_length"] == delay + 2


def test_recall_memory_solves_it_and_memoryless_cannot():
    symbols, delay, n = 4, 4, 1000
    env = shoal.make("recall", num_envs=n, seed=4, symbols=symbols, delay=delay)
    memory = np.zeros(n, np.int32)

    def remembering(obs):
        cue = obs[:, :symbols].max(1) > 0
        memory[cue] = np.argmax(obs[cue, :symbols], 1)
        return memory.copy()

    assert play(env, remembering, 60)["score"] == 1.0
    # a memoryless policy sees the same query observation for every symbol: 1/symbols at best
    for answer in range(symbols):
        stats = play(env, lambda obs: np.full(n, answer, np.int32), 60)
        assert abs(stats["score"] - 1 / symbols) < 0.03
    assert abs(play(env, random_discrete(symbols, n), 60)["score"] - 1 / symbols) < 0.03


# ---------------------------------------------------------------- password


def test_password_default_and_encoding():
    env = shoal.make("password", num_envs=1, seed=0)
    keys = [0, 1, 1, 0, 1]  # code 22 = 0b10110, least significant bit first
    trace = record(env, lambda t, obs: np.array([keys[t]], np.int32), 5)
    for t in range(5):
        np.testing.assert_array_equal(trace[t][0][0], np.eye(5, dtype=np.float32)[t])
    for t in range(1, 5):
        assert trace[t][1][0] == 0 and not trace[t][2][0]
    _, rew, term, trunc, final = trace[5]
    assert rew[0] == 1 and term[0] and not trunc[0] and np.all(final == 0)
    np.testing.assert_array_equal(trace[5][0][0], np.eye(5, dtype=np.float32)[0])  # next episode
    stats = env.log()
    assert stats == {"episode_return": 1.0, "episode_length": 5.0, "score": 1.0, "progress": 1.0, "n": 1.0}


@pytest.mark.parametrize("fail_at", [0, 2, 4])
def test_password_wrong_key_ends_episode(fail_at):
    length, code = 6, 0b101100
    keys = [(code >> i) & 1 for i in range(length)]
    env = shoal.make("password", num_envs=1, seed=0, length=length, code=code)
    act = lambda t, obs: np.array([keys[t] if t < fail_at else 1 - keys[t]], np.int32)
    trace = record(env, act, fail_at + 1)
    assert not any(trace[t][2][0] for t in range(1, fail_at + 1))
    _, rew, term, _, _ = trace[fail_at + 1]
    assert term[0] and rew[0] == 0
    stats = env.log()
    assert stats["score"] == 0 and stats["episode_length"] == fail_at + 1
    assert stats["progress"] == pytest.approx(fail_at / length)


def test_password_optimal_random_and_constant_scores():
    n, length, code = 1000, 5, 22
    keys = np.array([(code >> i) & 1 for i in range(length)], np.int32)
    env = shoal.make("password", num_envs=n, seed=5)
    assert play(env, lambda obs: keys[np.argmax(obs, 1)], 50)["score"] == 1.0
    rand = play(env, random_discrete(2, n), 200)
    assert abs(rand["score"] - 2.0**-length) < 0.01
    assert play(env, lambda obs: np.zeros(n, np.int32), 20)["score"] == 0.0
    assert play(env, lambda obs: np.ones(n, np.int32), 20)["score"] == 0.0


# ---------------------------------------------------------------- target

ACCEL, MAX_SPEED = 0.02, 0.1


def steer(obs):
    """Accelerate so the velocity points at the target at full speed (a proportional controller)."""
    rel, vel = obs[:, :2], obs[:, 2:] * MAX_SPEED
    direction = rel / np.maximum(np.linalg.norm(rel, axis=1, keepdims=True), 1e-6)
    return np.clip((direction * MAX_SPEED - vel) / ACCEL, -1, 1).astype(np.float32)


def test_target_observation_and_dynamics():
    n = 32
    env = shoal.make("target", num_envs=n, seed=6)
    obs, _ = env.reset()
    start = [env.state(i) for i in range(n)]
    assert all(np.hypot(d["target_x"] - d["x"], d["target_y"] - d["y"]) >= 0.5 for d in start)
    assert all(max(abs(d["x"]), abs(d["y"]), abs(d["target_x"]), abs(d["target_y"])) <= 0.9 for d in start)
    for t in range(6):
        s = [env.state(i) for i in range(n)]
        want = [[d["target_x"] - d["x"], d["target_y"] - d["y"], d["vx"] / MAX_SPEED, d["vy"] / MAX_SPEED]
                for d in s]
        np.testing.assert_allclose(obs, want, atol=1e-6)
        if t < 5:  # 5 steps cover at most 0.45 of the >= 0.5 start distance: no episode ends
            obs, rew, term, trunc, _ = env.step(np.tile(np.array([[0.5, -1.0]], np.float32), (n, 1)))
            assert not (term | trunc).any()
    # from rest, each step adds 0.02 * action to the velocity, up to 0.1 per axis; positions add up
    # the velocities (0.5: 0.01, 0.02, ..., 0.05; -1: -0.02, ..., -0.1) unless a wall stopped them
    end = [env.state(i) for i in range(n)]
    free = [i for i in range(n) if start[i]["x"] + 0.15 < 1 and start[i]["y"] - 0.3 > -1]
    assert len(free) > n // 2
    for i in free:
        assert end[i]["vx"] == pytest.approx(0.05, abs=1e-6) and end[i]["vy"] == pytest.approx(-0.1, abs=1e-6)
        assert end[i]["x"] == pytest.approx(start[i]["x"] + 0.15, abs=1e-5)
        assert end[i]["y"] == pytest.approx(start[i]["y"] - 0.3, abs=1e-5)


def test_target_actions_are_clipped():
    big = record(shoal.make("target", num_envs=3, seed=7), lambda t, o: np.full((3, 2), 50.0, np.float32), 10)
    one = record(shoal.make("target", num_envs=3, seed=7), lambda t, o: np.full((3, 2), 1.0, np.float32), 10)
    for a, b in zip(big[1:], one[1:]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_target_truncation_and_shaping():
    env = shoal.make("target", num_envs=50, seed=8, max_steps=20)
    obs0, _ = env.reset()
    d0 = np.linalg.norm(obs0[:, :2], axis=1)
    total = np.zeros(50)
    rng = np.random.default_rng(0)
    for t in range(20):
        obs, rew, term, trunc, infos = env.step(rng.uniform(-0.3, 0.3, (50, 2)).astype(np.float32))
        total += rew
        if t < 19:
            assert not trunc.any()
    done = term | trunc
    assert done.all() and np.array_equal(trunc, ~term)
    d_end = np.linalg.norm(infos["final_observation"][:, :2], axis=1)
    # shaping telescopes: the return is the distance closed, plus 1 for reaching the target
    np.testing.assert_allclose(total, d0 - d_end + term, atol=1e-4)
    assert trunc.any()


def test_target_steering_solves_it_and_random_does_not():
    n = 500
    env = shoal.make("target", num_envs=n, seed=9)
    best = play(env, steer, 200)
    assert best["score"] >= 0.99 and best["episode_length"] < 40
    rng = np.random.default_rng(1)
    rand = play(env, lambda obs: rng.uniform(-1, 1, (n, 2)).astype(np.float32), 200)
    assert rand["score"] < 0.3
    still = shoal.make("target", num_envs=n, seed=10)
    assert play(still, lambda obs: np.zeros((n, 2), np.float32), 64)["score"] == 0.0


# ---------------------------------------------------------------- coord


def speaker_and_listener(choices, listener_copies=True, speaker_cues=True, seed=0):
    rng = np.random.default_rng(seed)

    def policy(obs):
        cue = np.argmax(obs[:, 2:2 + choices], 1)
        partner_last = np.argmax(obs[:, 2 + choices:2 + 2 * choices], 1)
        random = rng.integers(0, choices, len(obs))
        speaker = obs[:, 0] == 1
        act = np.where(speaker, cue if speaker_cues else random, partner_last if listener_copies else random)
        return act.astype(np.int32)

    return policy


def test_coord_encoding_rounds_and_rewards():
    choices, rounds = 3, 4
    env = shoal.make("coord", num_envs=5, seed=11, choices=choices, rounds=rounds)
    assert env.num_agents == 10
    policy = speaker_and_listener(choices)
    obs, _ = env.reset()
    for episode in range(2):
        cue = np.array([env.state(i)["cue"] for i in range(5)])
        speaker, listener = obs[0::2], obs[1::2]
        np.testing.assert_array_equal(speaker[:, :2], np.tile([1, 0], (5, 1)))
        np.testing.assert_array_equal(listener[:, :2], np.tile([0, 1], (5, 1)))
        np.testing.assert_array_equal(speaker[:, 2:2 + choices], np.eye(choices)[cue])
        assert np.all(listener[:, 2:2 + choices] == 0), "only the speaker sees the cue"
        assert np.all(obs[:, 2 + choices:2 + 2 * choices] == 0) and np.all(obs[:, -1] == 1)
        for r in range(rounds + 1):
            acts = policy(obs)
            obs, rew, term, trunc, infos = env.step(acts)
            assert np.all(rew == (0.0 if r == 0 else 1.0)), "signal round unscored, then both win"
            assert not trunc.any()
            if r < rounds:
                assert not term.any() and np.all(obs[:, -1] == 0)
                # each agent sees its partner's action
                seen = np.argmax(obs[:, 2 + choices:2 + 2 * choices], 1)
                np.testing.assert_array_equal(seen, acts.reshape(5, 2)[:, ::-1].ravel())
        assert term.all()
        assert np.all(infos["final_observation"][:, -1] == 0)
    stats = env.log()
    assert stats["score"] == 1.0 and stats["episode_return"] == rounds and stats["episode_length"] == rounds + 1
    assert stats["n"] == 10


def test_coord_scores():
    choices, n = 4, 1000
    env = shoal.make("coord", num_envs=n, seed=12, choices=choices)
    assert play(env, speaker_and_listener(choices), 45)["score"] == 1.0
    rand = play(env, random_discrete(choices, 2 * n), 45)["score"]
    assert abs(rand - 1 / choices**2) < 0.01
    lonely = play(env, speaker_and_listener(choices, listener_copies=False), 45)["score"]
    assert abs(lonely - 1 / choices) < 0.02
    deaf = play(env, speaker_and_listener(choices, speaker_cues=False), 45)["score"]
    assert deaf < 0.1


# ---------------------------------------------------------------- stochastic


def expected_score(steps, p, q):
    """Exact expected score of a policy playing 0 with probability q (a binomial sum)."""
    return sum(comb(steps, k) * q**k * (1 - q) ** (steps - k) * (1 - abs(k / steps - p)) for k in range(steps + 1))


def test_stochastic_documented_optimum():
    qs = np.linspace(0, 1, 1001)
    values = [expected_score(16, 0.7, q) for q in qs]
    assert expected_score(16, 0.7, 0.7) == pytest.approx(0.9082, abs=1e-4)
    assert max(values) == pytest.approx(0.9084, abs=1e-4)
    assert qs[int(np.argmax(values))] == pytest.approx(0.708, abs=0.002)
    assert expected_score(16, 0.7, 0.5) == pytest.approx(0.7945, abs=1e-4)
    assert expected_score(32, 0.7, 0.7) == pytest.approx(0.935, abs=1e-3)


def test_stochastic_rules():
    steps = 5
    env = shoal.make("stochastic", num_envs=1, seed=0, steps=steps, p=0.7)
    trace = record(env, lambda t, obs: np.array([t % 2], np.int32), 2 * steps)
    for t, (obs, rew, term, trunc, final) in enumerate(trace):
        assert obs.tolist() == [[1.0]]
        if t == 0:
            continue
        if t % steps:
            assert rew[0] == 0 and not term[0]
        else:
            assert term[0] and not trunc[0] and final.tolist() == [[1.0]]
    # episode 1 plays 0,1,0,1,0 (3/5 zeros), episode 2 plays 1,0,1,0,1 (2/5)
    assert trace[steps][1][0] == pytest.approx(1 - abs(0.6 - 0.7))
    assert trace[2 * steps][1][0] == pytest.approx(1 - abs(0.4 - 0.7))


def test_stochastic_mixed_policy_beats_deterministic():
    n, p = 2000, 0.7
    env = shoal.make("stochastic", num_envs=n, seed=13, p=p)
    rng = np.random.default_rng(2)
    mixed = play(env, lambda obs: (rng.random(n) >= p).astype(np.int32), 16 * 10)
    assert mixed["score"] == pytest.approx(expected_score(16, p, p), abs=0.005)
    assert mixed["action0"] == pytest.approx(p, abs=0.005)
    always0 = play(env, lambda obs: np.zeros(n, np.int32), 16)
    assert always0["score"] == pytest.approx(0.7) and always0["action0"] == 1.0
    assert play(env, lambda obs: np.ones(n, np.int32), 16)["score"] == pytest.approx(0.3)
    uniform = play(env, random_discrete(2, n), 16 * 10)
    assert uniform["score"] == pytest.approx(expected_score(16, p, 0.5), abs=0.005)
    assert mixed["score"] > uniform["score"] + 0.1 and mixed["score"] > always0["score"] + 0.2
