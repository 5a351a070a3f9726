"""tetris: its rules, checked against the C env's state and a plain-Python reference of the rules.

The reference (``RefTetris``) re-implements tetris.h's documented rules from scratch, including the
env's PCG32 stream and 7-bag shuffle, so a random rollout must match the C env bit for bit.
A small placement planner run on the reference drives the env into line clears deterministically.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import shoal

COLS, ROWS, PIECES = 10, 20, 7
NOOP, LEFT, RIGHT, CW, CCW, SOFT, HARD, HOLD = range(8)
SPAWN_COL = 3
LINE_POINTS = (0, 100, 300, 500, 800)
KICKS = (0, -1, 1, -2, 2)

# Guideline spawn states (box size, cells (row, col)); ids I O T S Z J L. O sits one column right.
SPAWN_SHAPES = {
    0: (4, [(1, 0), (1, 1), (1, 2), (1, 3)]),
    1: (2, [(0, 0), (0, 1), (1, 0), (1, 1)]),
    2: (3, [(0, 1), (1, 0), (1, 1), (1, 2)]),
    3: (3, [(0, 1), (0, 2), (1, 0), (1, 1)]),
    4: (3, [(0, 0), (0, 1), (1, 1), (1, 2)]),
    5: (3, [(0, 0), (1, 0), (1, 1), (1, 2)]),
    6: (3, [(0, 2), (1, 0), (1, 1), (1, 2)]),
}


def _rotations() -> list[list[list[tuple[int, int]]]]:
    """cells[piece][rotation]: clockwise quarter turns inside the bounding box."""
    out = []
    for piece in range(PIECES):
        n, cells = SPAWN_SHAPES[piece]
        shift = 1 if piece == 1 else 0
        rots = []
        for _ in range(4):
            rots.append([(r, c + shift) for r, c in cells])
            cells = [(c, n - 1 - r) for r, c in cells]
        out.append(rots)
    return out


CELLS = _rotations()
M64 = (1 << 64) - 1


class Pcg32:
    """The env's PCG32 (shoal_env.h), stream per env."""

    def __init__(self, seed: int, stream: int) -> None:
        self.state, self.inc = 0, ((stream << 1) | 1) & M64
        self.u32()
        self.state = (self.state + seed) & M64
        self.u32()

    def u32(self) -> int:
        old = self.state
        self.state = (old * 6364136223846793005 + self.inc) & M64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & 0xFFFFFFFF

    def below(self, n: int) -> int:
        return (self.u32() * n) >> 32


class RefTetris:
    """The rules of tetris.h in plain Python (one env)."""

    def __init__(self, seed: int, stream: int, gravity_ticks: int = 4, num_next: int = 2,
                 max_steps: int = 10_000) -> None:
        self.rng = Pcg32(seed, stream)
        self.gravity_ticks, self.num_next, self.max_steps = gravity_ticks, num_next, max_steps
        self.reset()

    def deal(self) -> int:
        if self.bag_pos >= PIECES:
            self.bag = list(range(PIECES))
            for i in range(PIECES - 1, 0, -1):
                j = self.rng.below(i + 1)
                self.bag[i], self.bag[j] = self.bag[j], self.bag[i]
            self.bag_pos = 0
        self.bag_pos += 1
        return self.bag[self.bag_pos - 1]

    def reset(self) -> None:
        self.board = np.zeros((ROWS, COLS), np.uint8)
        self.bag, self.bag_pos = [], PIECES
        self.next = [self.deal() for _ in range(self.num_next)]
        self.hold, self.tick, self.score, self.lines, self.pieces, self.ret = -1, 0, 0, 0, 0, 0.0
        self.spawn()

    def collides(self, piece: int, rot: int, row: int, col: int) -> bool:
        for r, c in CELLS[piece][rot]:
            rr, cc = row + r, col + c
            if not (0 <= rr < ROWS and 0 <= cc < COLS) or self.board[rr, cc]:
                return True
        return False

    def place_new(self, piece: int) -> bool:
        self.piece, self.rot, self.row, self.col, self.fall = piece, 0, 0, SPAWN_COL, 0
        return not self.collides(piece, 0, 0, SPAWN_COL)

    def spawn(self) -> bool:
        if self.num_next:
            piece = self.next.pop(0)
            self.next.append(self.deal())
        else:
            piece = self.deal()
        self.pieces += 1
        self.can_hold = 1
        return self.place_new(piece)

    def points(self, p: int) -> None:
        r = np.float32(np.float32(p) * np.float32(0.001))
        self.score += p
        self.reward = np.float32(self.reward + r)
        self.ret = float(np.float32(np.float32(self.ret) + r))

    def lock(self) -> bool:
        for r, c in CELLS[self.piece][self.rot]:
            self.board[self.row + r, self.col + c] = 1
        full = self.board.all(axis=1)
        n = int(full.sum())
        if n:
            kept = self.board[~full]
            self.board = np.concatenate([np.zeros((n, COLS), np.uint8), kept])
            self.lines += n
            self.points(LINE_POINTS[n])
        return self.spawn()

    def observe(self) -> np.ndarray:
        obs = [self.board.copy()]
        for r, c in CELLS[self.piece][self.rot]:
            rr, cc = self.row + r, self.col + c
            if 0 <= rr < ROWS and 0 <= cc < COLS:
                obs[0][rr, cc] = 2
        hot = np.zeros((self.num_next + 2, PIECES), np.uint8)
        hot[0, self.piece] = 1
        for i, p in enumerate(self.next):
            hot[i + 1, p] = 1
        if self.hold >= 0:
            hot[-1, self.hold] = 1
        tail = np.array([self.rot, self.can_hold, min(self.fall, 255)], np.uint8)
        return np.concatenate([obs[0].ravel(), hot.ravel(), tail])

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, np.ndarray | None]:
        """-> (obs, reward, terminal, truncated, final_obs or None)."""
        self.reward = np.float32(0.0)
        self.tick += 1
        alive, locked = True, False
        if action in (LEFT, RIGHT):
            d = -1 if action == LEFT else 1
            if not self.collides(self.piece, self.rot, self.row, self.col + d):
                self.col += d
        elif action in (CW, CCW):
            rot = (self.rot + (1 if action == CW else 3)) % 4
            for k in KICKS:
                if not self.collides(self.piece, rot, self.row, self.col + k):
                    self.rot, self.col = rot, self.col + k
                    break
        elif action == SOFT:
            if not self.collides(self.piece, self.rot, self.row + 1, self.col):
                self.row += 1
                self.points(1)
        elif action == HARD:
            drop = 0
            while not self.collides(self.piece, self.rot, self.row + drop + 1, self.col):
                drop += 1
            self.row += drop
            self.points(2 * drop)
            alive, locked = self.lock(), True
        elif action == HOLD and self.can_hold:
            out, self.hold = self.hold, self.piece
            alive = self.spawn() if out < 0 else self.place_new(out)
            self.can_hold = 0
        if alive and not locked:
            self.fall += 1
            if self.fall >= self.gravity_ticks:
                self.fall = 0
                if not self.collides(self.piece, self.rot, self.row + 1, self.col):
                    self.row += 1
                else:
                    alive = self.lock()
        terminal = not alive
        truncated = alive and self.tick >= self.max_steps
        final = None
        if terminal or truncated:
            final = self.observe()
            self.reset()
        return self.observe(), float(self.reward), terminal, truncated, final


def board_of(state: dict) -> np.ndarray:
    return np.frombuffer(state["board"], np.uint8).reshape(ROWS, COLS).copy()


def act(env, a: int) -> tuple:
    obs, rew, term, trunc, infos = env.step(np.array([a], np.int32))
    return obs[0].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]), infos


def plan(ref: RefTetris) -> list[int]:
    """Actions that put the current piece where a simple board heuristic likes it best."""
    best, best_actions = None, [HARD]
    for turns in range(4):
        for shift in range(-6, 7):
            actions = [CW] * turns + [LEFT if shift < 0 else RIGHT] * abs(shift) + [HARD]
            sim = copy.deepcopy(ref)
            lines0 = sim.lines
            dead = False
            for a in actions:
                _, _, term, _, _ = sim.step(a)
                dead |= term
            if dead:
                continue
            b = sim.board
            heights = np.where(b.any(0), ROWS - b.argmax(0), 0)
            holes = int(sum((b[ROWS - h:, c] == 0).sum() for c, h in enumerate(heights)))
            score = (8.0 * (sim.lines - lines0) - 5.0 * holes - 0.5 * heights.sum()
                     - 0.3 * np.abs(np.diff(heights)).sum() - 0.05 * len(actions))
            if best is None or score > best:
                best, best_actions = score, actions
    return best_actions


@pytest.fixture(scope="module")
def planned_run():
    """A long planned game (gravity off in practice): per hard drop, the states around it."""
    env = shoal.make("tetris", num_envs=1, seed=11, gravity_ticks=1000)
    env.reset()
    ref = RefTetris(11, 0, gravity_ticks=1000)
    drops = []
    for _ in range(160):
        for a in plan(ref):
            before = env.state(0)
            obs, rew, term, trunc, _ = act(env, a)
            want = ref.step(a)
            assert np.array_equal(obs, want[0]) and (term, trunc) == (want[2], want[3])
            if a == HARD:
                drops.append((before, rew, term, env.state(0)))
    env.close()
    return drops


def test_reference_parity_random_play():
    """Random play (drops and holds included) matches the reference exactly, episodes and all."""
    n, steps, seed = 3, 4000, 5
    env = shoal.make("tetris", num_envs=n, seed=seed, max_steps=1500)
    obs, _ = env.reset()
    refs = [RefTetris(seed, i, max_steps=1500) for i in range(n)]
    for i in range(n):
        assert np.array_equal(obs[i], refs[i].observe())
    rng = np.random.default_rng(0)
    probs = np.array([3, 3, 3, 2, 2, 2, 1, 1], float)
    ends = 0
    for _ in range(steps):
        acts = rng.choice(8, n, p=probs / probs.sum()).astype(np.int32)
        obs, rew, term, trunc, infos = env.step(acts)
        for i in range(n):
            o, r, t, tr, fin = refs[i].step(int(acts[i]))
            assert np.array_equal(obs[i], o)
            assert rew[i] == pytest.approx(r, abs=1e-6)
            assert (term[i], trunc[i]) == (t, tr)
            if t or tr:
                ends += 1
                assert np.array_equal(infos["final_observation"][i], fin)
    assert ends >= 10, "too few episodes ended to exercise game over"
    env.close()


def test_seven_bag_deals_permutations():
    env = shoal.make("tetris", num_envs=1, seed=3)
    env.reset()
    rng = np.random.default_rng(3)
    episodes, current = [], [env.state(0)["piece"]]
    expected_next = env.state(0)["next"][0]
    for _ in range(6000):
        a = int(rng.choice([LEFT, RIGHT, CW, HARD, HOLD, NOOP]))
        before = env.state(0)
        _, _, term, trunc, _ = act(env, a)
        s = env.state(0)
        if term or trunc:
            episodes.append(current)
            current = [s["piece"]]
            expected_next = s["next"][0]
        elif s["pieces"] == before["pieces"] + 1:
            assert s["piece"] == expected_next, "a spawned piece was not the one shown as next"
            current.append(s["piece"])
            expected_next = s["next"][0]
        else:
            assert s["pieces"] == before["pieces"]
    chunks = [tuple(ep[i:i + 7]) for ep in episodes for i in range(0, len(ep) - 6, 7)]
    assert len(chunks) >= 40
    for chunk in chunks:
        assert sorted(chunk) == list(range(PIECES)), f"bag {chunk} is not a permutation"
    assert len(set(chunks)) > len(chunks) // 2, "bags are not shuffled"
    env.close()


def test_full_rows_clear_and_rows_above_shift_down(planned_run):
    clears = multi = 0
    for before, rew, term, after in planned_run:
        if term:
            continue
        board = board_of(before)
        piece, rot, col = before["piece"], before["rotation"], before["col"]
        row = before["row"]
        while not any(not (r + row + 1 < ROWS) or board[r + row + 1, c + col]
                      for r, c in CELLS[piece][rot]):
            row += 1
        for r, c in CELLS[piece][rot]:
            board[row + r, col + c] = 1
        full = board.all(axis=1)
        n = int(full.sum())
        expected = np.concatenate([np.zeros((n, COLS), np.uint8), board[~full]])
        assert np.array_equal(board_of(after), expected)
        assert after["lines"] - before["lines"] == n
        drop = row - before["row"]
        assert rew == pytest.approx((2 * drop + LINE_POINTS[n]) / 1000, abs=1e-6)
        if n:
            clears += 1
            multi += n > 1
            assert rew >= 0.1, "a line clear must be rewarded"
    assert clears >= 20 and multi >= 1, (clears, multi)


def test_hard_drop_lands_at_lowest_valid_row():
    env = shoal.make("tetris", num_envs=1, seed=2)
    env.reset()
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(400):
        for a in rng.choice([LEFT, RIGHT, CW, CCW], rng.integers(0, 5)):
            act(env, int(a))
        s = env.state(0)
        board = board_of(s)
        cells = CELLS[s["piece"]][s["rotation"]]

        def free(row):
            return all(row + r < ROWS and not board[row + r, s["col"] + c] for r, c in cells)

        lowest = s["row"]
        while free(lowest + 1):
            lowest += 1
        _, rew, term, _, _ = act(env, HARD)
        if term:
            continue
        after = board_of(env.state(0))
        if after.sum() == board.sum() + 4:  # no line clear: the piece sits at `lowest`
            assert all(after[lowest + r, s["col"] + c] for r, c in cells)
            assert rew == pytest.approx(2 * (lowest - s["row"]) / 1000, abs=1e-6)
            checked += 1
    assert checked > 100
    env.close()


def test_pieces_never_overlap_the_stack():
    """Every lock adds exactly 4 cells (minus 10 per cleared row): nothing lands on the stack."""
    env = shoal.make("tetris", num_envs=1, seed=4, gravity_ticks=2)
    env.reset()
    rng = np.random.default_rng(4)
    prev = env.state(0)
    locks = 0
    for _ in range(5000):
        obs, _, term, trunc, _ = act(env, int(rng.integers(0, 8)))
        s = env.state(0)
        board = board_of(s)
        assert np.array_equal(obs[:200].reshape(ROWS, COLS) == 1, board == 1)
        falling = obs[:200].reshape(ROWS, COLS) == 2
        assert falling.sum() == 4 or term, "the falling piece must show as 4 cells off the stack"
        if not (term or trunc):
            grown = int(board.sum()) - int(board_of(prev).sum())
            cleared = s["lines"] - prev["lines"]
            if s["pieces"] != prev["pieces"] and s["hold"] == prev["hold"]:
                assert grown == 4 - COLS * cleared
                locks += 1
            else:
                assert grown == 0
        prev = s
    assert locks > 200
    env.close()


def test_hold_swaps_and_is_blocked_until_next_piece():
    env = shoal.make("tetris", num_envs=1, seed=9, gravity_ticks=1000)
    env.reset()
    s0 = env.state(0)
    assert s0["hold"] == -1 and s0["can_hold"] == 1
    obs, *_ = act(env, HOLD)
    s1 = env.state(0)
    assert s1["hold"] == s0["piece"] and s1["piece"] == s0["next"][0] and s1["can_hold"] == 0
    assert obs[200 + 7 * 3 + s0["piece"]] == 1 and obs[-2] == 0
    act(env, LEFT)
    act(env, HOLD)  # blocked: nothing changes but the step
    s2 = env.state(0)
    assert (s2["piece"], s2["hold"], s2["col"]) == (s1["piece"], s1["hold"], SPAWN_COL - 1)
    act(env, HARD)
    s3 = env.state(0)
    assert s3["can_hold"] == 1 and s3["hold"] == s0["piece"]
    act(env, CW)
    act(env, HOLD)  # swap: the held piece comes back at the spawn position, rotation 0
    s4 = env.state(0)
    assert (s4["piece"], s4["hold"]) == (s0["piece"], s3["piece"])
    assert (s4["rotation"], s4["row"], s4["col"], s4["can_hold"]) == (0, 0, SPAWN_COL, 0)
    env.close()


def test_wall_kick_and_gravity():
    env = shoal.make("tetris", num_envs=1, gravity_ticks=3)
    seed = 0
    while True:  # a seed whose first piece is an I, on an empty board
        env.reset(seed=seed)
        if env.state(0)["piece"] == 0:
            break
        seed += 1
    act(env, CW)  # vertical, in box column 2
    for _ in range(5):
        act(env, LEFT)
    s = env.state(0)
    assert (s["rotation"], s["col"]) == (1, -2)  # against the left wall
    act(env, CW)  # horizontal in box row 2 would poke out: kicked +2 columns
    s = env.state(0)
    assert (s["rotation"], s["col"]) == (2, 0)
    act(env, CCW)  # back to vertical (box column 2): fits without a kick
    s = env.state(0)
    assert (s["rotation"], s["col"]) == (1, 0)
    row0, fall0 = s["row"], s["fall_timer"]
    for t in range(1, 10):
        act(env, NOOP)
        falls = sum((fall0 + k) % 3 == 0 for k in range(1, t + 1))
        assert env.state(0)["row"] == row0 + falls
    env.close()


def test_game_over_is_terminal_and_resets():
    env = shoal.make("tetris", num_envs=1, seed=1)
    env.reset()
    for t in range(200):
        obs, _, term, trunc, infos = act(env, HARD)
        if term:
            break
    assert term and not trunc and t < 40
    final = infos["final_observation"][0]
    assert (final[:200] == 1).sum() >= 20, "the final board should be stacked up"
    assert (obs[:200] == 1).sum() == 0 and (obs[:200] == 2).sum() == 4, "a fresh board after reset"
    stats = env.log()
    assert stats["n"] == 1 and stats["episode_length"] == t + 1 and stats["lines"] == 0
    assert env.state(0)["tick"] == 0
    env.close()


def test_truncation_at_max_steps():
    env = shoal.make("tetris", num_envs=2, seed=0, max_steps=30)
    env.reset()
    for t in range(30):
        _, _, term, trunc, _ = env.step(np.zeros(2, np.int32))
    assert trunc.all() and not term.any()
    assert env.log()["episode_length"] == 30
    env.close()
