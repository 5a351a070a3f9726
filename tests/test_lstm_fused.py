"""The fused CPU LSTM (shoal/trainer/lstm.py + lstm_cell.c) against nn.LSTMCell under autograd."""

import numpy as np
import pytest
import torch
from torch import nn

from shoal.trainer import lstm
from shoal.trainer.lstm import fused_available, lstm_sequence, lstm_sequence_reference

pytestmark = pytest.mark.skipif(not lstm._load_kernel(), reason="shoal.trainer._lstm_cell not built")


def _case(B, L, H_in, H, keep_p, seed=0):
    g = torch.Generator().manual_seed(seed)
    cell = nn.LSTMCell(H_in, H)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    features = torch.randn(B, L, H_in, generator=g, requires_grad=True)
    h0 = torch.randn(B, H, generator=g, requires_grad=True)
    c0 = torch.randn(B, H, generator=g, requires_grad=True)
    keep = None if keep_p is None else (torch.rand(B, L, generator=g) > keep_p).float()
    w_out = torch.randn(B, L, H, generator=g)
    w_h, w_c = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    return cell, features, h0, c0, keep, (w_out, w_h, w_c)


def _grads(fn, cell, features, h0, c0, keep, weights):
    leaves = [features, h0, c0, *cell.parameters()]
    for t in leaves:
        t.grad = None
    out, h, c = fn(cell, features, h0, c0, keep)
    w_out, w_h, w_c = weights
    ((out * w_out).sum() + (h * w_h).sum() + (c * c * w_c).sum()).backward()
    return [out.detach(), h.detach(), c.detach()] + [t.grad.clone() for t in leaves]


@pytest.mark.parametrize("B,L,H_in,H,keep_p", [
    (1, 1, 3, 2, None), (5, 7, 3, 5, 0.3), (33, 16, 20, 16, 0.05), (300, 4, 8, 128, 0.5),
    (64, 9, 10, 24, 1.0),      # every step starts an episode
])
def test_matches_lstmcell_forward_and_gradients(B, L, H_in, H, keep_p):
    case = _case(B, L, H_in, H, keep_p)
    fused = _grads(lstm_sequence, *case)
    reference = _grads(lstm_sequence_reference, *case)
    names = ["out", "h", "c", "d_features", "d_h0", "d_c0", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"]
    for name, a, b in zip(names, fused, reference):
        assert a.shape == b.shape, name
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= 2e-5 * scale, f"{name} differs"


def test_fused_path_is_the_one_taken_and_reference_handles_the_rest():
    cell, features, h0, c0, keep, _ = _case(4, 3, 5, 6, 0.3)
    assert fused_available(features, h0, c0, *cell.parameters())
    assert not fused_available(features.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_available(features)
    # float64 takes the reference path and still agrees with float32
    out64, _, _ = lstm_sequence(cell.double(), features.double(), h0.double(), c0.double(),
                                keep.double())
    out32, _, _ = lstm_sequence(cell.float(), features, h0, c0, keep)
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), out32, atol=1e-5)


def test_no_grad_path_matches_and_keeps_nothing():
    cell, features, h0, c0, keep, _ = _case(40, 5, 6, 8, 0.2)
    with torch.no_grad():
        ref = lstm_sequence_reference(cell, features, h0, c0, keep)
    free_before = {k: len(v) for k, v in lstm._workspace._free.items()}
    with torch.inference_mode():
        got = lstm_sequence(cell, features, h0, c0, keep)
        one = lstm_sequence(cell, features[:, :1], h0, c0, keep[:, :1])   # rollout shape
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(one[0][:, 0], ref[0][:, 0], atol=1e-6)
    assert {k: len(v) for k, v in lstm._workspace._free.items()} == free_before


def test_thread_count_does_not_change_results():
    """The kernel splits rows over threads in fixed chunks: outputs and the summed bias
    gradient are bit-identical for any thread count (runs are reproducible under a seed)."""
    kernel = lstm._load_kernel()
    rng = np.random.default_rng(0)
    rows, H = 1000, 64                       # above the size where a second thread starts
    gates = rng.normal(0, 2, (rows, 4 * H)).astype(np.float32)
    c_prev = rng.normal(size=(rows, H)).astype(np.float32)
    dy = rng.normal(size=(rows, H)).astype(np.float32)
    keep = (rng.random(rows) > 0.1).astype(np.float32)
    out = []
    for threads in (1, 2, 3):
        g = gates.copy()
        c, h, dc = np.empty_like(c_prev), np.empty_like(c_prev), np.ones_like(c_prev)
        h_next, c_next = np.empty_like(c_prev), np.empty_like(c_prev)
        d_bias = np.zeros(4 * H, np.float32)
        kernel.forward(g, c_prev, c, h, h_next, c_next, keep, H, threads)
        kernel.backward(g, c, c_prev, dy, dy, keep, dc, d_bias, H, threads)
        out.append((h, c, h_next, c_next, g, dc, d_bias))
    for other in out[1:]:
        for a, b in zip(out[0], other):
            assert np.array_equal(a, b)
    # and the bias gradient is the column sum of the pre-activation gradients
    assert np.allclose(out[0][-1], out[0][4].sum(0), rtol=1e-5, atol=1e-4)
    # the whole sequence with torch on two threads still matches the reference
    case = _case(700, 3, 16, 64, 0.1, seed=3)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fused, reference = _grads(lstm_sequence, *case), _grads(lstm_sequence_reference, *case)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(fused, reference):
        assert (a - b).abs().max().item() <= 2e-5 * max(1.0, b.abs().max().item())


def test_interleaved_forwards_get_their_own_buffers():
    """Two graphs alive at once (the workspace must not hand one buffer to both)."""
    cell, features, h0, c0, keep, weights = _case(16, 6, 5, 8, 0.2)
    ref = _grads(lstm_sequence_reference, cell, features, h0, c0, keep, weights)
    for t in [features, h0, c0, *cell.parameters()]:
        t.grad = None
    out_a, _, _ = lstm_sequence(cell, features, h0, c0, keep)
    out_b, _, _ = lstm_sequence(cell, features * 2, h0, c0, keep)   # a second graph in flight
    (out_a * weights[0]).sum().backward()
    d_features_a = features.grad.clone()
    (out_b * 0).sum().backward()
    assert torch.allclose(out_a, ref[0], atol=1e-6)
    features.grad = None
    out_c, h, c = lstm_sequence(cell, features, h0, c0, keep)
    (out_c * weights[0]).sum().backward()
    assert torch.allclose(features.grad, d_features_a, atol=1e-6)


def test_second_backward_through_one_graph_is_a_clear_error():
    cell, features, h0, c0, keep, _ = _case(4, 3, 5, 6, None)
    out, _, _ = lstm_sequence(cell, features, h0, c0, keep)
    loss = out.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="lstm_sequence_reference"):
        loss.backward()


def test_non_finite_inputs_propagate():
    cell, features, h0, c0, keep, _ = _case(3, 2, 4, 5, None)
    features = features.detach().clone()
    features[1, 0, 0] = float("nan")
    with torch.no_grad():
        out, _, _ = lstm_sequence(cell, features, h0, c0, None)
    assert torch.isnan(out[1]).any() and torch.isfinite(out[0]).all()
    # saturated gates stay finite and exact at the limits
    big = torch.full((2, 1, 4), 1e4)
    with torch.no_grad():
        out, h, c = lstm_sequence(cell, big, torch.zeros(2, 5), torch.zeros(2, 5), None)
        ref = lstm_sequence_reference(cell, big, torch.zeros(2, 5), torch.zeros(2, 5), None)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref[0], atol=1e-6)


def test_kernel_rejects_bad_buffers():
    kernel = lstm._load_kernel()
    gates = np.zeros((4, 8), np.float32)
    state = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="c_prev"):
        kernel.forward(gates, state[:3], state, state, None, None, None, 2)
    with pytest.raises(TypeError, match="float32"):
        kernel.forward(gates, state.astype(np.float64), state, state, None, None, None, 2)
    with pytest.raises(ValueError, match="4 \\* 3"):
        kernel.forward(gates, state, state, state, None, None, None, 3)
    with pytest.raises(ValueError, match="both or neither"):
        kernel.forward(gates, state, state, state, state, None, None, 2)
    with pytest.raises(TypeError, match="writable"):
        ro = state.copy()
        ro.flags.writeable = False
        kernel.forward(gates, state, ro, state, None, None, None, 2)


def test_policy_under_torch_compile_runs_the_fused_path_eagerly(recwarn):
    """train.compile = true: dynamo leaves the fused LSTM (a C extension) to run as it is, and
    the compiled policy matches the eager one, gradients included."""
    from gymnasium import spaces

    from shoal.trainer.policies import LSTMPolicy

    torch.manual_seed(0)
    policy = LSTMPolicy(spaces.Box(0, 1, (6,), np.float32), spaces.Discrete(3), hidden=16)
    obs, starts = torch.rand(4, 5, 6), (torch.rand(4, 5) < 0.2).float()
    params, values, _ = torch.compile(policy)(obs, None, starts)
    (params.sum() + values.sum()).backward()
    compiled_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    params_e, values_e, _ = policy(obs, None, starts)
    (params_e.sum() + values_e.sum()).backward()
    assert torch.allclose(params, params_e, atol=1e-6) and torch.allclose(values, values_e, atol=1e-6)
    for a, p in zip(compiled_grads, policy.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)
    assert not [w for w in recwarn if "Dynamo does not know how to trace" in str(w.message)]


# ---- bfloat16 products (train.precision = "bfloat16") ----------------------------------------

BF16 = torch.bfloat16


def _bf16_round(x: np.ndarray) -> np.ndarray:
    """float values rounded to bfloat16 (torch's rounding) and back, as float64."""
    return torch.from_numpy(np.asarray(x, np.float32)).to(BF16).double().numpy()


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.view(torch.int16).numpy()


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("B,L,H_in,H,keep_p", [
    (1, 1, 3, 2, None), (5, 7, 3, 5, 0.3), (33, 16, 20, 16, 0.05), (300, 4, 8, 130, 0.5),
    (64, 9, 10, 70, 1.0), (17, 12, 128, 128, 0.1),
])
def test_bf16_path_matches_float32_within_bfloat16_rounding(B, L, H_in, H, keep_p):
    """Under bfloat16 autocast the fused path runs (bfloat16 outputs, float32 state) and every
    output and gradient is the float32 reference's up to bfloat16 rounding of the products.
    Weights at the scale of a trained policy (std ~1/sqrt(H)): with std 0.5 at H = 128 every
    gate saturates and the products' rounding error is amplified to ~4% over 12 steps."""
    case = _case(B, L, H_in, H, keep_p)
    cell, features, h0, c0 = case[:4]
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(2.0 / max(H, H_in) ** 0.5)
    reference = _grads(lstm_sequence_reference, *case)
    with torch.autocast("cpu", dtype=BF16):
        assert lstm.fused_bf16_available(features, h0, c0, *cell.parameters())
        out, h, c = lstm_sequence(cell, features, h0, c0, case[4])
        assert (out.dtype, h.dtype, c.dtype) == (BF16, torch.float32, torch.float32)
        fused = _grads(lstm_sequence, *case)
    names = ["out", "h", "c", "d_features", "d_h0", "d_c0", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"]
    for name, a, b in zip(names, fused, reference):
        assert a.shape == b.shape and a.dtype == (BF16 if name == "out" else b.dtype), name
        assert torch.isfinite(a).all(), name
        err = (a.float() - b).norm().item()
        assert err <= 2e-2 * max(b.norm().item(), 1e-3), f"{name}: relative error {err / b.norm()}"


def test_second_backward_through_one_bf16_graph_is_a_clear_error():
    cell, features, h0, c0, keep, _ = _case(4, 3, 5, 6, None)
    with torch.autocast("cpu", dtype=BF16):
        assert lstm.fused_bf16_available(features, h0, c0, *cell.parameters())
        out, _, _ = lstm_sequence(cell, features, h0, c0, keep)
    loss = out.float().sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="lstm_sequence_reference"):
        loss.backward()


def test_bf16_rollout_steps_equal_the_replayed_sequence():
    """What the rollout computes one step at a time (no autograd, state carried between calls)
    is bit for bit what the update replays over the whole segment: PPO's ratio starts at 1."""
    cell, features, h0, c0, keep, _ = _case(40, 9, 12, 20, 0.2, seed=5)
    with torch.autocast("cpu", dtype=BF16):
        seq, h_seq, c_seq = lstm_sequence(cell, features, h0, c0, keep)
        with torch.inference_mode():
            h, c, steps = h0.detach(), c0.detach(), []
            for t in range(features.shape[1]):
                out, h, c = lstm_sequence(cell, features[:, t:t + 1].detach(), h, c,
                                          keep[:, t:t + 1])
                steps.append(out)
            whole = lstm_sequence(cell, features.detach(), h0.detach(), c0.detach(), keep)
    assert torch.equal(torch.cat(steps, 1), seq.detach())
    assert torch.equal(whole[0], seq.detach())
    assert torch.equal(h, h_seq.detach()) and torch.equal(c, c_seq.detach())


@pytest.mark.parametrize("rows,H", [(1, 1), (7, 5), (50, 64), (33, 130)])
def test_bf16_kernel_step_matches_float64(rows, H):
    """One step of forward_bf16 / backward_bf16 against the same arithmetic in float64 from the
    same bfloat16 inputs: float32 results to float32 accuracy, bfloat16 results within one
    rounding."""
    kernel = lstm._load_kernel()
    g = torch.Generator().manual_seed(rows * 1000 + H)
    gx = (torch.randn(rows, 4 * H, generator=g) * 2).to(BF16)
    rec = torch.randn(rows, 4 * H, generator=g).to(BF16)
    bias = torch.randn(4 * H, generator=g).numpy()
    c_prev = torch.randn(rows, H, generator=g).numpy()
    keep = (torch.rand(rows, generator=g) > 0.3).float().numpy()
    gates = np.empty((rows, 4 * H), np.float32)
    c_out = np.empty((rows, H), np.float32)
    h_out, h_next = torch.empty(rows, H, dtype=BF16), torch.empty(rows, H, dtype=BF16)
    c_next = np.empty((rows, H), np.float32)
    kernel.forward_bf16(_bits(gx), _bits(rec), bias, gates, c_prev, c_out, _bits(h_out),
                        _bits(h_next), c_next, keep, H, 2)
    pre = gx.double().numpy() + rec.double().numpy() + bias
    i, f, gg, o = (pre[:, k * H:(k + 1) * H] for k in range(4))
    i, f, gg, o = _sig(i), _sig(f), np.tanh(gg), _sig(o)
    c = f * c_prev + i * gg
    h = o * np.tanh(c)
    assert np.allclose(gates, np.concatenate([i, f, gg, o], 1), rtol=1e-5, atol=1e-6)
    assert np.allclose(c_out, c, rtol=1e-5, atol=1e-6)
    assert np.allclose(h_out.double().numpy(), h, rtol=2 ** -8, atol=1e-6)
    assert np.array_equal(h_next.double().numpy(), keep[:, None] * h_out.double().numpy())
    assert np.array_equal(c_next, keep[:, None] * c_out)
    # the rollout form (no activations kept) gives the same state
    c2, h2 = np.empty_like(c_out), torch.empty(rows, H, dtype=BF16)
    kernel.forward_bf16(_bits(gx), _bits(rec), bias, None, c_prev, c2, _bits(h2), None, None,
                        None, H, 1)
    assert np.array_equal(c2, c_out) and torch.equal(h2, h_out)

    dy = torch.randn(rows, H, generator=g).to(BF16)
    dh_rec = torch.randn(rows, H, generator=g).to(BF16)
    dc = torch.randn(rows, H, generator=g).numpy()
    dc_in = dc.copy()
    d_bias = np.zeros(4 * H, np.float32)
    d_pre = torch.empty(rows, 4 * H, dtype=BF16)
    acts = gates.astype(np.float64)
    kernel.backward_bf16(gates, c_out, c_prev, _bits(dy), _bits(dh_rec), keep, dc, d_bias,
                         _bits(d_pre), H, 2)
    i, f, gg, o = (acts[:, k * H:(k + 1) * H] for k in range(4))
    k = keep[:, None]
    dh = dy.double().numpy() + k * dh_rec.double().numpy()
    tc = np.tanh(c_out.astype(np.float64))
    dcc = k * dc_in + dh * o * (1 - tc * tc)
    want = np.concatenate([dcc * gg * i * (1 - i), dcc * c_prev * f * (1 - f),
                           dcc * i * (1 - gg * gg), dh * tc * o * (1 - o)], 1)
    scale = np.abs(want).max()
    assert np.allclose(gates, want, rtol=1e-5, atol=1e-6 * scale)        # float32 d_pre
    assert np.allclose(d_pre.double().numpy(), want, rtol=2 ** -8, atol=1e-6 * scale)
    assert np.allclose(dc, dcc * f, rtol=1e-5, atol=1e-6 * np.abs(dcc).max())
    assert np.allclose(d_bias, want.sum(0), rtol=1e-4, atol=1e-5 * scale * rows)


def test_bf16_thread_count_does_not_change_results():
    kernel = lstm._load_kernel()
    g = torch.Generator().manual_seed(1)
    rows, H = 1000, 64
    gx = torch.randn(rows, 4 * H, generator=g).to(BF16)
    bias = np.zeros(4 * H, np.float32)
    c_prev = torch.randn(rows, H, generator=g).numpy()
    dy = torch.randn(rows, H, generator=g).to(BF16)
    keep = (torch.rand(rows, generator=g) > 0.1).float().numpy()
    out = []
    for threads in (1, 2, 3):
        gates, c = np.empty((rows, 4 * H), np.float32), np.empty((rows, H), np.float32)
        h, d_pre = torch.empty(rows, H, dtype=BF16), torch.empty(rows, 4 * H, dtype=BF16)
        dc, d_bias = np.ones((rows, H), np.float32), np.zeros(4 * H, np.float32)
        kernel.forward_bf16(_bits(gx), None, bias, gates, c_prev, c, _bits(h), None, None, None,
                            H, threads)
        kernel.backward_bf16(gates, c, c_prev, _bits(dy), _bits(dy), keep, dc, d_bias,
                             _bits(d_pre), H, threads)
        out.append((c, _bits(h).copy(), gates, dc, d_bias,
                    _bits(d_pre).copy()))
    for other in out[1:]:
        for a, b in zip(out[0], other):
            assert np.array_equal(a, b)


def test_bf16_kernel_rejects_bad_buffers():
    kernel = lstm._load_kernel()
    H, rows = 2, 4
    gx = _bits(torch.zeros(rows, 4 * H, dtype=BF16))
    state = np.zeros((rows, H), np.float32)
    h = _bits(torch.zeros(rows, H, dtype=BF16))
    bias = np.zeros(4 * H, np.float32)
    with pytest.raises(TypeError, match="gx.*bfloat16"):
        kernel.forward_bf16(np.zeros((rows, 4 * H), np.float32), None, bias, None, state, state,
                            h, None, None, None, H)
    with pytest.raises(ValueError, match="gx"):
        kernel.forward_bf16(gx[:3], None, bias, None, state, state, h, None, None, None, H)
    with pytest.raises(ValueError, match="bias"):
        kernel.forward_bf16(gx, None, bias[:3], None, state, state, h, None, None, None, H)
    with pytest.raises(ValueError, match="both or neither"):
        kernel.forward_bf16(gx, None, bias, None, state, state, h, h, None, None, H)
    with pytest.raises(ValueError, match="hidden"):
        kernel.forward_bf16(gx, None, bias, None, state, state, h, None, None, None, 0)
    with pytest.raises(TypeError, match="h_out.*writable"):
        ro = h.copy()
        ro.flags.writeable = False
        kernel.forward_bf16(gx, None, bias, None, state, state, ro, None, None, None, H)
    gates = np.zeros((rows, 4 * H), np.float32)
    with pytest.raises(ValueError, match="d_pre"):
        kernel.backward_bf16(gates, state, state, h, None, None, state.copy(), None, h, H)
    with pytest.raises(TypeError, match="dy.*bfloat16"):
        kernel.backward_bf16(gates, state, state, state, None, None, state.copy(), None, gx, H)


def test_lstm_policy_under_bf16_inference_and_training():
    """train.precision = "bfloat16" on the LSTM policy: the rollout (Inference) and the update
    (autograd) both take the fused bfloat16 path and agree with float32 to bfloat16 accuracy."""
    from gymnasium import spaces

    from shoal.trainer.policies import Inference, LSTMPolicy

    torch.manual_seed(0)
    policy = LSTMPolicy(spaces.Box(0, 1, (7,), np.float32), spaces.Discrete(3), hidden=24)
    obs, starts = torch.rand(6, 5, 7), (torch.rand(6, 5) < 0.2).float()
    ref_params, ref_values, _ = policy(obs, None, starts)
    (ref_params.sum() + ref_values.sum()).backward()
    ref_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    with torch.autocast("cpu", dtype=BF16):
        params, values, (h, c) = policy(obs, None, starts)
    assert h.dtype == c.dtype == torch.float32
    (params.float().sum() + values.float().sum()).backward()
    assert torch.allclose(params.float(), ref_params, atol=3e-2)
    assert torch.allclose(values.float(), ref_values, atol=3e-2)
    for a, b in zip((p.grad for p in policy.parameters()), ref_grads):
        assert (a - b).norm() <= 3e-2 * max(b.norm().item(), 1e-3)
    inference = Inference(policy, precision="bfloat16")
    state = inference.initial_state(6)
    _, logprobs, v, state = inference.act(obs[:, 0], state, starts[:, 0])
    assert state[0].dtype == torch.float32 and torch.isfinite(logprobs).all()
    assert torch.allclose(v, values[:, 0].float(), atol=1e-6)


def test_bf16_lstm_training_is_deterministic_and_resumes_exactly(tmp_path):
    """train.precision = "bfloat16" with the LSTM policy (its fused bfloat16 path in rollouts and
    updates): the same seed gives the same run, and a resumed run continues it exactly."""
    from support.training_runs import assert_repeats_and_resumes_exactly

    over = {"train.total_steps": 5 * 16 * 16, "env.num_envs": 16, "train.horizon": 16,
            "train.minibatch_size": 64, "log.dashboard": "off", "policy.name": "lstm",
            "policy.hidden": 16, "train.precision": "bfloat16", "env.max_steps": 11,
            "train.rollout": "torch", "train.overlap": False}
    assert_repeats_and_resumes_exactly(tmp_path, "breakout", over)


@pytest.mark.parametrize("dtype", [None, BF16])
def test_buffers_of_an_inference_mode_forward_are_not_handed_to_a_forward_outside_it(dtype):
    """A rollout forward runs in inference mode and leaves its scratch buffers in the pool; the
    overlapped rollout thread then anchors outside inference mode (no_grad), where torch refuses
    in-place writes to inference tensors. The pool keeps the two kinds apart."""
    cell, features, h0, c0, keep, _ = _case(24, 6, 10, 16, 0.3, seed=9)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu",
                                                                               enabled=False)
    args = (features.detach(), h0.detach(), c0.detach(), keep)
    with autocast:
        with torch.inference_mode():
            inside = lstm_sequence(cell, *args)
        with torch.no_grad():
            outside = lstm_sequence(cell, *args)        # raised RuntimeError before
        with torch.inference_mode():
            again = lstm_sequence(cell, *args)
    for a, b, c in zip(inside, outside, again):
        assert torch.equal(a, b) and torch.equal(a, c)
