"""Exercises the trainer's C kernels (advantage, LSTM cell, PPO loss head) with numpy buffers only: odd sizes,
one and several threads, large and non-finite values, and bad arguments. Run by
tests/test_sanitizers.py against an AddressSanitizer/UBSan build; exits non-zero (or the
sanitizer aborts) on any fault."""

import numpy as np

from shoal.trainer import _advantage, _lstm_cell, _ppo_head


def lstm_cell(rng):
    for rows, hidden in ((1, 1), (3, 5), (257, 16), (600, 128)):
        for threads in (1, 2, 3):
            gates = rng.normal(0, 30, (rows, 4 * hidden)).astype(np.float32)
            gates[0, 0] = np.nan
            gates[-1, -1] = np.inf
            c_prev = rng.normal(0, 3, (rows, hidden)).astype(np.float32)
            c_out = np.empty((rows, hidden), np.float32)
            h_out = np.empty_like(c_out)
            h_next, c_next = np.empty_like(c_out), np.empty_like(c_out)
            keep = (rng.random(rows) > 0.5).astype(np.float32)
            _lstm_cell.forward(gates, c_prev, c_out, h_out, h_next, c_next, keep, hidden, threads)
            _lstm_cell.forward(gates.copy(), c_prev, c_out, h_out, None, None, None, hidden)
            dy = rng.normal(0, 1, (rows, hidden)).astype(np.float32)
            dc = np.zeros_like(c_out)
            d_bias = np.zeros(4 * hidden, np.float32)
            _lstm_cell.backward(gates, c_out, c_prev, dy, dy, keep, dc, d_bias, hidden, threads)
            _lstm_cell.backward(gates, c_out, c_prev, dy, None, None, dc, None, hidden, threads)
    # bad arguments: errors, never a fault
    good = np.zeros((4, 8), np.float32)
    state = np.zeros((4, 2), np.float32)
    bad_calls = [
        (good[:, :7].copy(), state, state, state, None, None, None, 2),       # not 4H wide
        (good, state[:3], state, state, None, None, None, 2),                # short c_prev
        (good, state.astype(np.float64), state, state, None, None, None, 2),  # dtype
        (good, state, state, state, state, None, None, 2),                   # h_next alone
        (good, state, state, state, None, None, np.ones(3, np.float32), 2),  # short keep
        (good, state, state.T, state, None, None, None, 2),                  # not contiguous
        (good, state, state, state, None, None, None, 0),                    # hidden 0
    ]
    for args in bad_calls:
        try:
            _lstm_cell.forward(*args)
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"forward accepted bad arguments {args}")
    try:
        _lstm_cell.backward(good, state, state, state, None, None, state, np.zeros(3, np.float32), 2)
    except ValueError:
        pass
    else:
        raise AssertionError("backward accepted a short d_bias")


def lstm_cell_bf16(rng):
    """The bfloat16-product passes; bfloat16 values as int16 bit patterns, random bits included
    (NaN, inf, subnormals)."""
    def bf16(shape, scale=1.0):
        x = (rng.normal(0, scale, shape).astype(np.float32).view(np.uint32) >> 16)
        return x.astype(np.uint16).view(np.int16)

    for rows, hidden in ((1, 1), (3, 5), (257, 16), (100, 65), (600, 128)):
        for threads in (1, 2, 3):
            gx = bf16((rows, 4 * hidden), 30.0)
            gx.flat[0] = 0x7FC0                  # NaN
            gx.flat[-1] = 0x7F80                 # inf
            rec = rng.integers(-2**15, 2**15, (rows, 4 * hidden), dtype=np.int16)
            bias = rng.normal(size=4 * hidden).astype(np.float32)
            c_prev = rng.normal(0, 3, (rows, hidden)).astype(np.float32)
            gates = np.empty((rows, 4 * hidden), np.float32)
            c_out = np.empty((rows, hidden), np.float32)
            h_out, h_next = bf16((rows, hidden)), bf16((rows, hidden))
            c_next = np.empty_like(c_out)
            keep = (rng.random(rows) > 0.5).astype(np.float32)
            _lstm_cell.forward_bf16(gx, rec, bias, gates, c_prev, c_out, h_out, h_next, c_next,
                                    keep, hidden, threads)
            _lstm_cell.forward_bf16(gx, None, bias, None, c_prev, c_out, h_out, None, None,
                                    None, hidden, threads)
            dy, d_pre = bf16((rows, hidden)), bf16((rows, 4 * hidden))
            dc = np.zeros_like(c_out)
            d_bias = np.zeros(4 * hidden, np.float32)
            _lstm_cell.backward_bf16(gates, c_out, c_prev, dy, h_out, keep, dc, d_bias, d_pre,
                                     hidden, threads)
            _lstm_cell.backward_bf16(gates, c_out, c_prev, dy, None, None, dc, None, d_pre,
                                     hidden, threads)
    gx, state = np.zeros((4, 8), np.int16), np.zeros((4, 2), np.float32)
    h, bias = np.zeros((4, 2), np.int16), np.zeros(8, np.float32)
    bad_calls = [
        (gx[:, :7].copy(), None, bias, None, state, state, h, None, None, None, 2),
        (gx, None, bias, None, state[:3], state, h, None, None, None, 2),
        (gx.astype(np.float32), None, bias, None, state, state, h, None, None, None, 2),
        (gx, None, bias[:5], None, state, state, h, None, None, None, 2),
        (gx, None, bias, None, state, state, h[:, :1].copy(), None, None, None, 2),
        (gx, None, bias, None, state, state, h, h, None, None, 2),
        (gx, None, bias, None, state, state, h, None, None, np.ones(3, np.float32), 2),
        (gx, None, bias, None, state, state, h, None, None, None, 0),
        (gx, None, bias, None, state, state, h, None, None, None, -3),
    ]
    for args in bad_calls:
        try:
            _lstm_cell.forward_bf16(*args)
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"forward_bf16 accepted bad arguments {args}")
    gates = np.zeros((4, 8), np.float32)
    for args in [(gates, state, state, h, None, None, state.copy(), None, gx[:3], 2),
                 (gates, state, state, state, None, None, state.copy(), None, gx, 2),
                 (gates[:3], state, state, h, None, None, state.copy(), None, gx, 2)]:
        try:
            _lstm_cell.backward_bf16(*args)
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError(f"backward_bf16 accepted bad arguments {args}")


def advantage(rng):
    for segments, horizon in ((1, 1), (7, 13), (3000, 200)):
        values = rng.normal(size=(segments, horizon + 1)).astype(np.float32)
        rewards = rng.normal(size=(segments, horizon)).astype(np.float32)
        dones = (rng.random((segments, horizon)) < 0.1).astype(np.float32)
        ratio = rng.lognormal(size=(segments, horizon)).astype(np.float32)
        out = np.empty_like(rewards)
        for threads in (1, 2, 5):
            _advantage.compute(values, rewards, dones, ratio, out, 0.99, 0.95, 1.0, 1.0,
                               num_threads=threads)


def ppo_head(rng):
    """Odd row counts, groups and choices, extreme and non-finite logits and ratios, masked
    rows, with and without a collector ratio; then bad arguments (errors, never a fault)."""
    f32 = np.float32
    for segments, horizon, groups, choices in ((1, 1, 1, 1), (3, 7, 2, 5), (40, 64, 1, 3),
                                               (5, 3, 3, 40)):
        n = segments * horizon
        logits = rng.normal(0, 30, (n, groups * choices)).astype(f32)
        logits[0, 0] = np.inf if n > 1 else 0.0
        logits[-1, -1] = np.nan
        actions = rng.integers(0, choices, (n, groups)).astype(np.int64)
        old = rng.normal(-2, 3, n).astype(f32)
        logratio, ratio, entropy = (np.empty(n, f32) for _ in range(3))
        lse = np.empty((n, groups), f32)
        _ppo_head.ratios(logits, actions, old, groups, 0, logratio, ratio, entropy, lse)
        masks = (rng.random(n) > 0.3).astype(f32)
        for collector in (None, np.exp(rng.normal(0, 3, n)).astype(f32)):
            grad_logits, grad_values = np.empty_like(logits), np.empty(n, f32)
            _ppo_head.loss(logits, actions, groups, 0, ratio, logratio, entropy, lse,
                           rng.normal(size=n).astype(f32),
                           rng.normal(size=(segments, horizon + 1)).astype(f32), horizon,
                           rng.normal(size=n).astype(f32), rng.normal(size=n).astype(f32), masks,
                           rng.random(segments).astype(f32), collector, 0.1, 2.0, 5.0, 0.2, 1.0,
                           2.0, 0.2, 0.5, 0.01, grad_logits, grad_values)
    # bad arguments
    actions = np.full((4, 1), 7, np.int64)              # outside 3 choices
    outs = [np.empty(4, f32) for _ in range(4)]
    for call in (lambda: _ppo_head.ratios(np.zeros((4, 3), f32), actions, np.zeros(4, f32), 1,
                                          0, *outs),
                 lambda: _ppo_head.ratios(np.zeros((4, 3), f32), actions[:2], np.zeros(4, f32),
                                          1, 0, *outs),
                 lambda: _ppo_head.ratios(np.zeros((4, 3), f32), actions, np.zeros(4, f32), 0,
                                          0, *outs),
                 lambda: _ppo_head.ratios(np.zeros(5, f32), actions, np.zeros(4, f32), 1, 0,
                                          *outs)):
        try:
            call()
        except (ValueError, TypeError):
            pass
        else:
            raise AssertionError("a bad argument was accepted")


def main():
    rng = np.random.default_rng(0)
    lstm_cell(rng)
    print("fuzzed lstm cell", flush=True)
    lstm_cell_bf16(rng)
    print("fuzzed lstm cell (bfloat16 products)", flush=True)
    advantage(rng)
    print("fuzzed advantage", flush=True)
    ppo_head(rng)
    print("fuzzed ppo head", flush=True)
    print("fuzz ok")


if __name__ == "__main__":
    main()
