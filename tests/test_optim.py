"""shoal/trainer/optim.py: FusedAdam's direct kernel step and clip_grad_norm take torch's own
steps bit for bit; anything they do not cover goes through torch's functions."""

from __future__ import annotations

import torch

from shoal.trainer.optim import FusedAdam, clip_grad_norm
from shoal.trainer.ppo import _Optimizers


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g))
            for shape in ((16, 8), (16,), (3, 16), (3,))]


def _grads(params: list[torch.nn.Parameter], step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * (1 + step)).to(p.dtype)


def test_the_direct_kernel_step_is_torchs_fused_adam_bit_for_bit():
    ours, theirs = _params(0), _params(0)
    a = FusedAdam(ours, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, fused=True)
    b = torch.optim.Adam(theirs, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01,
                         fused=True)
    used = []
    kernel_step = a._kernel_step
    a._kernel_step = lambda: used.append(kernel_step()) or used[-1]
    for step in range(6):
        for opt, params in ((a, ours), (b, theirs)):
            for group in opt.param_groups:
                group["lr"] = 1e-3 * (1 + step)     # as the trainer anneals it
            _grads(params, step)
            opt.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), step
    # the first step initialises the state through torch's own; every later one is direct
    assert used == [False] + [True] * 5
    for p, q in zip(ours, theirs):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a.state[p][key], b.state[q][key])


def test_step_hooks_run_once_per_step_and_a_missing_gradient_takes_torchs_step():
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])   # torch now hooks Adam.step too
    params = _params(1)
    opt = FusedAdam(params, lr=1e-2, fused=True)
    calls = []
    handle = opt.register_step_post_hook(lambda *_: calls.append(1))
    _grads(params, 0)
    opt.step()                           # the first step: through Adam's own
    _grads(params, 1)
    opt.step()                           # the direct kernel step
    assert calls == [1, 1]
    handle.remove()
    params[1].grad = None
    before = params[1].detach().clone()
    assert not opt._kernel_step()
    opt.step()                           # torch's step skips the parameter without a gradient
    assert torch.equal(params[1], before)
    assert not torch.equal(params[0], _params(1)[0])


def test_clip_grad_norm_is_torchs_bit_for_bit():
    for scale in (0.01, 100.0):          # below and above max_norm
        ours, theirs = _params(2), _params(2)
        _grads(ours, 3)
        _grads(theirs, 3)
        for p, q in zip(ours, theirs):
            p.grad.mul_(scale)
            q.grad.mul_(scale)
        norm = clip_grad_norm(ours, 0.5)
        want = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        assert torch.equal(norm, want)
        for p, q in zip(ours, theirs):
            assert torch.equal(p.grad, q.grad)
    # gradients of two dtypes: torch's function
    mixed = _params(3)
    mixed[0] = torch.nn.Parameter(mixed[0].detach().double())
    _grads(mixed, 0)
    assert float(clip_grad_norm(mixed, 0.5)) > 0.5
    assert float(torch.linalg.vector_norm(torch.stack(
        [p.grad.float().norm() for p in mixed]))) <= 0.5 + 1e-5


def test_zero_grad_clears_every_gradient():
    params = _params(4)
    opt = _Optimizers([FusedAdam(params[:2], lr=1e-3, fused=True),
                       FusedAdam(params[2:], lr=1e-3, fused=True)])
    _grads(params, 0)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in params)
    _grads(params, 0)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
