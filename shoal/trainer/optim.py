"""Adam in one fused kernel per step where torch has one for the parameters' device.

torch's default Adam on CPU tensors runs a loop of about ten elementwise ops per parameter
tensor (its multi-tensor ``foreach`` path is for accelerators). For the small policies of the
shipped configs that loop is dispatch overhead, ~0.3 ms of an MLP-128 update step on one thread
(8 parameter tensors); ``fused=True`` does the same arithmetic in one kernel over all of them
(``tests/test_trainer.py`` checks the two take the same steps).

torch's fused CPU kernel (2.13) reads a gradient as if it were laid out like its parameter: a
gradient with other strides (a transposed view, as ``torch.autograd.grad`` can return and
``train.learner_threads`` assigns to ``.grad``) was applied scrambled. :class:`FusedAdam` makes
such gradients contiguous before each step (parameters are contiguous).

On the overlapped path the learner's thread shares the interpreter with the rollout thread, so
the Python around each gradient step costs 2-3x what it costs alone (a step of breakout's
optimizer: ~0.13 ms in a run, 0.07 ms alone; ``benchmarks/learner_sections.py``). :meth:`FusedAdam.step` calls the fused kernel directly when nothing else is
asked of the step, and :func:`clip_grad_norm` makes ``clip_grad_norm_``'s own tensor calls
without its grouping: the same kernels with the same arguments, so the same numbers bit for bit
(``tests/test_optim.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

__all__ = ["FusedAdam", "fused_adam", "clip_grad_norm"]


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` that first gives every gradient its parameter's layout."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:   # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None and g.stride() != p.stride():
                    p.grad = g.contiguous() if p.is_contiguous() else \
                        torch.empty_like(p).copy_(g)
        if closure is None and self._kernel_step():
            return None
        # Adam's step without the step-hook wrapper torch puts on it once any plain Adam
        # exists: this class's own step is wrapped already, and its hooks must run once
        adam_step = torch.optim.Adam.step
        if getattr(adam_step, "hooked", False):
            adam_step = adam_step.__wrapped__
        return adam_step(self, closure)

    def _kernel_step(self) -> bool:
        """The step ``torch.optim.Adam(fused=True)`` takes, as its two tensor calls, when every
        parameter has a gradient and state and the groups ask for nothing but plain Adam on the
        CPU; False (nothing done) otherwise. (Step hooks still run: torch wraps this class's
        ``step`` in them.)"""
        if getattr(self, "grad_scale", None) is not None \
                or getattr(self, "found_inf", None) is not None:   # (a gradient scaler's)
            return False
        steps = []
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["capturable"] \
                    or group["differentiable"] or not group["fused"] \
                    or group.get("decoupled_weight_decay", False) \
                    or isinstance(group["lr"], torch.Tensor):
                return False
            params = group["params"]
            grads, avgs, squares, counts = [], [], [], []
            for p in params:
                state = self.state.get(p)
                if p.grad is None or not state or p.device.type != "cpu" \
                        or p.dtype != params[0].dtype or p.grad.dtype != p.dtype:
                    return False
                grads.append(p.grad)
                avgs.append(state["exp_avg"])
                squares.append(state["exp_avg_sq"])
                counts.append(state["step"])
            steps.append((group, params, grads, avgs, squares, counts))
        with torch.no_grad():
            for group, params, grads, avgs, squares, counts in steps:
                beta1, beta2 = group["betas"]
                torch._foreach_add_(counts, 1)
                torch._fused_adam_(params, grads, avgs, squares, [], counts, amsgrad=False,
                                   lr=group["lr"], beta1=beta1, beta2=beta2,
                                   weight_decay=group["weight_decay"], eps=group["eps"],
                                   maximize=False, grad_scale=None, found_inf=None)
        return True


def fused_adam(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """:class:`FusedAdam` over ``params``, or the default Adam where this torch has no fused
    kernel for these parameters (their device or dtype)."""
    params = list(params)
    try:
        return FusedAdam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)``: scales the gradients of
    ``params`` to a total 2-norm of at most ``max_norm`` and returns the norm before. For CPU
    gradients of one dtype it makes that function's tensor calls without its grouping (the same
    numbers, bit for bit); anything else goes to torch's."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or any(g.device.type != "cpu" or g.dtype != grads[0].dtype
                        or type(g) is not torch.Tensor for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total
