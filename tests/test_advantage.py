"""Advantage kernels: the C kernel and the torch path against the numpy reference, plain GAE
against a textbook implementation, and the done / truncation convention. Then prioritised
segment sampling, which ranks segments by their advantages."""

import threading

import numpy as np
import pytest
import torch

from shoal.trainer.advantage import (
    advantages_reference,
    advantages_torch,
    c_kernel_available,
    compute_advantages,
)
from shoal.trainer.sampling import (
    anneal_beta,
    importance_weights,
    sample_segments,
    sampling_probabilities,
    segment_priorities,
)

needs_c = pytest.mark.skipif(not c_kernel_available(), reason="shoal.trainer._advantage not built")

GAMMA, LAM = 0.99, 0.95
CLIPS = [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0), (0.5, 0.8), (float("inf"), float("inf"))]


def make_inputs(S, T, seed=0, done_prob=0.1, ratio_spread=0.3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(S, T + 1, generator=g, dtype=torch.float64)
    rewards = torch.randn(S, T, generator=g, dtype=torch.float64)
    dones = (torch.rand(S, T, generator=g) < done_prob).to(torch.float64)
    # log-normal around 1: about half above, half below, some far from 1 so the clips bite.
    ratio = torch.exp(ratio_spread * torch.randn(S, T, generator=g, dtype=torch.float64))
    return [x.to(dtype) for x in (values, rewards, dones, ratio)]


def textbook_gae(values, rewards, dones, gamma, lam):
    """GAE written the usual way, one scalar at a time (independent of the code under test)."""
    values, rewards, dones = (np.asarray(x, np.float64) for x in (values, rewards, dones))
    S, T = rewards.shape
    adv = np.zeros((S, T))
    for s in range(S):
        last = 0.0
        for t in reversed(range(T)):
            not_done = 1.0 - dones[s, t]
            delta = rewards[s, t] + gamma * values[s, t + 1] * not_done - values[s, t]
            last = delta + gamma * lam * not_done * last
            adv[s, t] = last
    return adv


def scalar_vtrace(values, rewards, dones, ratio, gamma, lam, rho_clip, c_clip):
    """The V-trace-clipped recurrence for one segment, in Python floats."""
    T = len(rewards)
    adv = [0.0] * T
    a = 0.0
    for t in reversed(range(T)):
        nn = 1.0 - dones[t]
        rho, c = min(ratio[t], rho_clip), min(ratio[t], c_clip)
        a = rho * (rewards[t] + gamma * values[t + 1] * nn - values[t]) + gamma * lam * c * nn * a
        adv[t] = a
    return np.array(adv)


# ---- the reference itself ----

def test_reference_matches_scalar_recurrence():
    values, rewards, dones, ratio = (x.numpy() for x in make_inputs(6, 9, seed=1, dtype=torch.float64))
    for rho_clip, c_clip in CLIPS:
        ref = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, rho_clip, c_clip)
        for s in range(6):
            expect = scalar_vtrace(values[s], rewards[s], dones[s], ratio[s], GAMMA, LAM,
                                   rho_clip, c_clip)
            np.testing.assert_allclose(ref[s], expect, rtol=1e-12, atol=1e-12)


def test_small_hand_computed_example():
    # T = 2, one segment, no dones: worked out by hand.
    v = np.array([[1.0, 2.0, 3.0]])
    r = np.array([[0.5, -1.0]])
    d = np.zeros((1, 2))
    q = np.array([[3.0, 0.5]])
    g, lam = 0.5, 0.5
    # t=1: rho=min(.5,1)=.5, delta1 = .5*(-1 + .5*3 - 2) = -0.75; A1 = -0.75
    # t=0: rho=min(3,1)=1, c=min(3,1)=1, delta0 = .5 + .5*2 - 1 = 0.5; A0 = .5 + .25*1*(-.75)
    expect = np.array([[0.5 - 0.1875, -0.75]])
    np.testing.assert_allclose(advantages_reference(v, r, d, q, g, lam, 1.0, 1.0), expect)
    # rho_clip=2 changes only the importance weight at t=0 (ratio 3 -> 2); c_clip stays 1.
    expect2 = np.array([[2 * 0.5 - 0.1875, -0.75]])
    np.testing.assert_allclose(advantages_reference(v, r, d, q, g, lam, 2.0, 1.0), expect2)


# ---- plain GAE ----

@pytest.mark.parametrize("backend", ["c", "torch"])
@pytest.mark.parametrize("clips", [(1.0, 1.0), (2.0, 1.0), (1.0, 3.0)])
def test_plain_gae_when_ratio_is_one(backend, clips):
    if backend == "c" and not c_kernel_available():
        pytest.skip("C kernel not built")
    values, rewards, dones, _ = make_inputs(32, 20, seed=2)
    expect = textbook_gae(values, rewards, dones, GAMMA, LAM)
    for ratio in (None, torch.ones_like(rewards)):
        got = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, *clips, backend=backend)
        np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5, atol=1e-5)


def test_ratio_none_with_clip_below_one_scales_like_ratio_one():
    values, rewards, dones, _ = make_inputs(8, 10, seed=3)
    ones = torch.ones_like(rewards)
    for backend in (["c"] if c_kernel_available() else []) + ["torch"]:
        a = compute_advantages(values, rewards, dones, None, GAMMA, LAM, 0.5, 0.7, backend=backend)
        b = compute_advantages(values, rewards, dones, ones, GAMMA, LAM, 0.5, 0.7, backend=backend)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- parity: C and torch against the reference ----

@needs_c
@pytest.mark.parametrize("clips", CLIPS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 17), (64, 32), (257, 64)])
def test_c_matches_reference(clips, shape):
    S, T = shape
    values, rewards, dones, ratio = make_inputs(S, T, seed=S * 131 + T)
    for q in (ratio, None):
        ref = advantages_reference(values.numpy(), rewards.numpy(), dones.numpy(),
                                   None if q is None else q.numpy(), GAMMA, LAM, *clips)
        got = compute_advantages(values, rewards, dones, q, GAMMA, LAM, *clips, backend="c")
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5 * scale)


@needs_c
@pytest.mark.parametrize("num_threads", [1, 2, 3, 8])
def test_c_thread_split_gives_identical_results(num_threads):
    from shoal.trainer import _advantage

    # 2001 segments of 16 steps: 4 chunks of 512 segments (the last one short) to share out.
    values, rewards, dones, ratio = (x.numpy() for x in make_inputs(2001, 16, seed=5))
    single = np.empty_like(rewards)
    split = np.empty_like(rewards)
    _advantage.compute(values, rewards, dones, ratio, single, GAMMA, LAM, 1.0, 1.0, num_threads=1)
    _advantage.compute(values, rewards, dones, ratio, split, GAMMA, LAM, 1.0, 1.0,
                       num_threads=num_threads)
    np.testing.assert_array_equal(single, split)


@needs_c
def test_c_large_input_uses_threads_and_matches():
    # 8192 x 64 crosses the automatic two-thread threshold.
    values, rewards, dones, ratio = make_inputs(8192, 64, seed=6, done_prob=0.02)
    got = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0, backend="c")
    ref = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("clips", CLIPS)
def test_torch_matches_reference(clips):
    values, rewards, dones, ratio = make_inputs(96, 48, seed=7)
    for q in (ratio, None):
        ref = advantages_reference(values, rewards, dones, q, GAMMA, LAM, *clips)
        got = advantages_torch(values, rewards, dones, q, GAMMA, LAM, *clips)
        assert got.dtype == torch.float32 and got.shape == (96, 48)
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5 * scale)


def test_float64_inputs_take_the_torch_path_in_float64():
    values, rewards, dones, ratio = make_inputs(40, 30, seed=8, dtype=torch.float64)
    got = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, 2.0, 1.0)
    assert got.dtype == torch.float64
    ref = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, 2.0, 1.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


@needs_c
def test_auto_dispatch_on_float32_cpu_is_the_c_kernel():
    values, rewards, dones, ratio = make_inputs(16, 12, seed=9)
    auto = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0)
    c = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0, backend="c")
    torch.testing.assert_close(auto, c, rtol=0, atol=0)


def test_input_forms_bool_dones_noncontiguous_and_out():
    values, rewards, dones, ratio = make_inputs(20, 15, seed=10)
    ref = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0)
    # bool dones, transposed (non-contiguous) rewards, a preallocated out
    rewards_nc = rewards.t().contiguous().t()
    assert not rewards_nc.is_contiguous()
    out = torch.full((20, 15), float("nan"))
    got = compute_advantages(values, rewards_nc, dones.bool(), ratio, GAMMA, LAM, 1.0, 1.0, out=out)
    assert got is out
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    # non-contiguous out falls back to the torch path
    out_nc = torch.empty(15, 20).t()
    compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0, out=out_nc)
    np.testing.assert_allclose(out_nc.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_inputs_are_not_modified_and_no_grad():
    values, rewards, dones, ratio = make_inputs(8, 8, seed=11)
    values.requires_grad_(True)
    before = [x.detach().clone() for x in (values, rewards, dones, ratio)]
    for backend in (["c"] if c_kernel_available() else []) + ["torch"]:
        adv = compute_advantages(values, rewards, dones, ratio, GAMMA, LAM, backend=backend)
        assert not adv.requires_grad
    for x, b in zip((values, rewards, dones, ratio), before):
        torch.testing.assert_close(x.detach(), b, rtol=0, atol=0)


# ---- the done / truncation convention ----

@pytest.mark.parametrize("backend", ["c", "torch", "reference"])
def test_done_step_does_not_bootstrap_and_blocks_later_rewards(backend):
    if backend == "c" and not c_kernel_available():
        pytest.skip("C kernel not built")

    def run(v, r, d, q):
        if backend == "reference":
            return advantages_reference(v, r, d, q, GAMMA, LAM, 1.0, 1.0)
        return compute_advantages(v, r, d, q, GAMMA, LAM, 1.0, 1.0, backend=backend).numpy()

    S, T, t_end = 4, 10, 4
    values, rewards, dones, ratio = make_inputs(S, T, seed=12, done_prob=0.0)
    dones[:, t_end] = 1.0
    base = run(values, rewards, dones, ratio)
    # The done step's advantage is its own TD error without bootstrap: rho * (r_t - V_t).
    rho = ratio[:, t_end].clamp(max=1.0)
    expect = (rho * (rewards[:, t_end] - values[:, t_end])).numpy()
    np.testing.assert_allclose(base[:, t_end], expect, rtol=1e-6, atol=1e-6)

    # Changing everything after the done step (values from t_end+1, later rewards, ratios)
    # leaves the advantages up to and including the done step unchanged.
    v2, r2, q2 = values.clone(), rewards.clone(), ratio.clone()
    v2[:, t_end + 1:] += 100.0
    r2[:, t_end + 1:] -= 50.0
    q2[:, t_end + 1:] *= 3.0
    changed = run(v2, r2, dones, q2)
    np.testing.assert_array_equal(changed[:, :t_end + 1], base[:, :t_end + 1])
    assert not np.allclose(changed[:, t_end + 1:], base[:, t_end + 1:])


def test_truncation_bootstrap_folded_into_reward():
    # A truncated episode: the rollout stores r + gamma * V(final_obs) and dones = 1. That must
    # equal the advantage of the same step in an episode that continued into final_obs with
    # lambda-return cut at that step (i.e. a one-step TD error bootstrapping from V(final_obs)).
    S, T, t_end = 3, 8, 5
    values, rewards, dones, _ = make_inputs(S, T, seed=13, done_prob=0.0)
    v_final = torch.tensor([0.7, -1.2, 2.5])
    folded_r = rewards.clone()
    folded_r[:, t_end] += GAMMA * v_final
    dones_trunc = dones.clone()
    dones_trunc[:, t_end] = 1.0
    adv = advantages_reference(values, folded_r, dones_trunc, None, GAMMA, LAM)
    # Same step, computed from the definition of the truncated lambda-return.
    expect_t_end = rewards[:, t_end] + GAMMA * v_final - values[:, t_end]
    np.testing.assert_allclose(adv[:, t_end], expect_t_end.numpy(), rtol=1e-6, atol=1e-6)
    # And steps before it follow plain GAE inside the episode.
    expect = textbook_gae(values, folded_r, dones_trunc, GAMMA, LAM)
    np.testing.assert_allclose(adv, expect, rtol=1e-5, atol=1e-5)


# ---- argument checking ----

@needs_c
def test_c_kernel_rejects_bad_buffers_with_clear_errors():
    from shoal.trainer import _advantage

    S, T = 4, 5
    v = np.zeros((S, T + 1), np.float32)
    r = np.zeros((S, T), np.float32)
    d = np.zeros((S, T), np.float32)
    out = np.zeros((S, T), np.float32)
    with pytest.raises(TypeError, match="'rewards' must have dtype float32"):
        _advantage.compute(v, r.astype(np.float64), d, None, out, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(TypeError, match="'dones' must be a C-contiguous"):
        _advantage.compute(v, r, np.zeros((T, S), np.float32).T, None, out, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(ValueError, match="'rewards' has shape \\[4, 4\\]"):
        _advantage.compute(v, r[:, :4].copy(), d, None, out, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(ValueError, match="'ratio' has shape"):
        _advantage.compute(v, r, d, np.ones((S + 1, T), np.float32), out, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(ValueError, match="2-D"):
        _advantage.compute(v, r.ravel(), d, None, out, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(TypeError, match="writable"):
        ro = out.copy()
        ro.flags.writeable = False
        _advantage.compute(v, r, d, None, ro, 0.99, 0.95, 1.0, 1.0)
    with pytest.raises(ValueError, match="must not share memory with values"):
        big = np.zeros((S, T + 1), np.float32)
        _advantage.compute(big, r, d, None, big.reshape(-1)[: S * T].reshape(S, T), 0.99, 0.95,
                           1.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        _advantage.compute(v, r, d, None, out, 1.5, 0.95, 1.0, 1.0)
    with pytest.raises(ValueError, match="c_clip"):
        _advantage.compute(v, r, d, None, out, 0.99, 0.95, 1.0, -1.0)
    with pytest.raises(TypeError):
        _advantage.compute(v, r, d, None, [1.0], 0.99, 0.95, 1.0, 1.0)
    # Keyword arguments work and the all-good call succeeds.
    _advantage.compute(values=v, rewards=r, dones=d, ratio=None, advantages_out=out, gamma=0.9,
                       lam=0.9, rho_clip=1.0, c_clip=1.0)


def test_python_wrapper_rejects_bad_shapes():
    values, rewards, dones, ratio = make_inputs(4, 6)
    with pytest.raises(ValueError, match="values must be \\[S, T\\+1\\]"):
        compute_advantages(values[0], rewards, dones)
    with pytest.raises(ValueError, match="rewards has shape"):
        compute_advantages(values[:, :-1], rewards, dones)
    with pytest.raises(ValueError, match="lam"):
        compute_advantages(values, rewards, dones, lam=2.0)
    with pytest.raises(ValueError, match="backend"):
        compute_advantages(values, rewards, dones, backend="cuda")


@needs_c
def test_c_kernel_runs_concurrently_from_threads():
    # The kernel releases the GIL; concurrent calls on separate outputs must not interfere.
    values, rewards, dones, ratio = make_inputs(512, 64, seed=14)
    expect = compute_advantages(values, rewards, dones, ratio, backend="c").numpy()
    results = [None] * 4

    def work(i):
        for _ in range(5):
            results[i] = compute_advantages(values, rewards, dones, ratio, backend="c").numpy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for res in results:
        np.testing.assert_array_equal(res, expect)


@needs_c
def test_c_kernel_many_threaded_calls_in_a_row():
    # Helper threads are detached and may start after the call returned; many quick calls in a
    # row (with fresh arrays each time) exercise that hand-off.
    from shoal.trainer import _advantage

    for i in range(200):
        values, rewards, dones, ratio = (x.numpy() for x in make_inputs(600, 16, seed=i % 7))
        out = np.empty_like(rewards)
        _advantage.compute(values, rewards, dones, ratio, out, GAMMA, LAM, 1.0, 1.0, num_threads=4)
        if i % 50 == 0:
            ref = advantages_reference(values, rewards, dones, ratio, GAMMA, LAM, 1.0, 1.0)
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


# ---- prioritised segment sampling (shoal.trainer.sampling) ----

def test_priorities_formula_with_masks():
    adv = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 1.0, 1.0], [4.0, 4.0, 4.0]])
    masks = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    p = segment_priorities(adv, masks, alpha=0.5)
    expect = torch.tensor([3.5 ** 0.5, 0.0, 4.0 ** 0.5, 0.0])
    torch.testing.assert_close(p, expect)
    # alpha = 0: 1 for every live segment (even the all-zero one), 0 for the dead one.
    torch.testing.assert_close(segment_priorities(adv, masks, alpha=0.0),
                               torch.tensor([1.0, 1.0, 1.0, 0.0]))
    # No masks: every segment live.
    torch.testing.assert_close(segment_priorities(adv, None, alpha=1.0),
                               torch.tensor([3.5, 0.0, 5.0, 12.0]))


def test_alpha_zero_is_uniform():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(10, 8, generator=g) * torch.arange(1, 11).unsqueeze(1) ** 2
    counts = torch.zeros(10)
    for _ in range(4000):
        sample = sample_segments(adv, None, 1, alpha=0.0, beta=1.0, generator=g)
        counts[sample.indices] += 1
        torch.testing.assert_close(sample.weights, torch.ones(1))
    torch.testing.assert_close(sample.probabilities, torch.full((10,), 0.1))
    # chi-square against uniform, 9 dof: 99.9% quantile is 27.9
    chi2 = float(((counts - 400.0) ** 2 / 400.0).sum())
    assert chi2 < 27.9, counts


def test_alpha_one_frequency_proportional_to_priority():
    g = torch.Generator().manual_seed(1)
    sums = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])  # Σ_t |A| per segment
    adv = sums.unsqueeze(1) / 4 * torch.tensor([1.0, -1.0, 1.0, -1.0])
    priorities = segment_priorities(adv, None, alpha=1.0)
    torch.testing.assert_close(priorities, sums)
    n = 20000
    counts = torch.zeros(5)
    for _ in range(n // 1000):
        # 1000 independent single-segment minibatches at a time, via reuse of the priorities
        idx = torch.multinomial(sampling_probabilities(priorities), 1000, replacement=True,
                                generator=g)
        counts += torch.bincount(idx, minlength=5)
    # and the sampler itself, one segment per minibatch
    sampler_counts = torch.zeros(5)
    for _ in range(3000):
        s = sample_segments(adv, None, 1, alpha=1.0, beta=0.5, generator=g, priorities=priorities)
        sampler_counts[s.indices] += 1
    for c, total in ((counts, n), (sampler_counts, 3000)):
        expect = sums / sums.sum() * total
        chi2 = float(((c - expect) ** 2 / expect).sum())
        assert chi2 < 18.5, (c, expect)  # 4 dof, 99.9% quantile


def test_minibatch_has_no_repeats():
    g = torch.Generator().manual_seed(2)
    adv = torch.rand(64, 16, generator=g)
    for _ in range(50):
        s = sample_segments(adv, None, 32, alpha=1.0, beta=0.4, generator=g)
        assert s.indices.numel() == 32 and s.indices.unique().numel() == 32
        assert s.indices.dtype == torch.int64
    s = sample_segments(adv, None, 64, alpha=1.0, generator=g)  # whole batch
    assert sorted(s.indices.tolist()) == list(range(64))


def test_importance_weights_formula():
    g = torch.Generator().manual_seed(3)
    adv = torch.rand(16, 4, generator=g) ** 3
    s = sample_segments(adv, None, 6, alpha=0.7, beta=0.6, generator=g)
    P = s.probabilities[s.indices]
    raw = (16 * P) ** -0.6
    torch.testing.assert_close(s.weights, raw / raw.max())
    assert float(s.weights.max()) == pytest.approx(1.0)
    # The public helper gives the same; beta = 0 gives ones; weights fall as P rises.
    torch.testing.assert_close(importance_weights(P, 0.6, num_segments=16), s.weights)
    torch.testing.assert_close(importance_weights(P, 0.0), torch.ones(6))
    order = torch.argsort(P)
    assert bool((s.weights[order].diff() <= 1e-7).all())
    with pytest.raises(ValueError):
        importance_weights(P, 1.5)


def test_dead_segments_never_drawn_while_live_ones_have_priority():
    g = torch.Generator().manual_seed(4)
    adv = torch.randn(12, 8, generator=g)
    masks = torch.ones(12, 8, dtype=torch.bool)
    dead = [1, 5, 6, 11]
    masks[dead] = False
    masks[3, :5] = False  # partly masked is still live
    for alpha in (0.0, 0.5, 1.0):
        seen = set()
        for _ in range(200):
            seen.update(sample_segments(adv, masks, 4, alpha=alpha, generator=g).indices.tolist())
        assert seen.isdisjoint(dead)
        assert seen == set(range(12)) - set(dead)


def test_too_few_positive_segments_fill_from_live_then_dead():
    g = torch.Generator().manual_seed(5)
    adv = torch.zeros(6, 4)
    adv[0] = 1.0
    adv[2] = 2.0
    masks = torch.ones(6, 4)
    masks[4:] = 0  # segments 4, 5 dead
    s = sample_segments(adv, masks, 4, alpha=1.0, beta=1.0, generator=g)
    idx = s.indices.tolist()
    assert len(set(idx)) == 4 and {0, 2} <= set(idx) and set(idx) <= {0, 1, 2, 3}
    assert bool(torch.isfinite(s.weights).all()) and float(s.weights.max()) == pytest.approx(1.0)
    s = sample_segments(adv, masks, 6, alpha=1.0, beta=1.0, generator=g)
    assert sorted(s.indices.tolist()) == list(range(6))
    # Every advantage zero: uniform over live segments.
    s = sample_segments(torch.zeros(6, 4), masks, 3, alpha=1.0, beta=1.0, generator=g)
    assert set(s.indices.tolist()) <= {0, 1, 2, 3}
    torch.testing.assert_close(s.weights, torch.ones(3))
    with pytest.raises(ValueError, match="num_segments"):
        sample_segments(adv, masks, 7)


def test_anneal_beta():
    assert anneal_beta(0.2, 0.0) == pytest.approx(0.2)
    assert anneal_beta(0.2, 0.5) == pytest.approx(0.6)
    assert anneal_beta(0.2, 1.0) == pytest.approx(1.0)
    assert anneal_beta(0.2, 3.0) == pytest.approx(1.0)
    assert anneal_beta(0.2, -1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        anneal_beta(1.5, 0.1)


def test_sampling_is_reproducible_with_a_generator():
    adv = torch.rand(100, 8, generator=torch.Generator().manual_seed(6))
    a = sample_segments(adv, None, 10, generator=torch.Generator().manual_seed(7))
    b = sample_segments(adv, None, 10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.indices, b.indices)
    assert np.allclose(a.weights.numpy(), b.weights.numpy())
