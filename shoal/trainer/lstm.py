"""The LSTM recurrence over a segment, with resets at episode starts: fused on the CPU.

:func:`lstm_sequence` runs ``nn.LSTMCell`` weights over ``L`` steps, zeroing the state before
every step where ``keep`` is 0. Two implementations give the same result:

* the fused one (float32 CPU tensors, no autocast): the input products for all steps are one
  matrix multiply, each step adds ``h @ W_hh^T`` in place and the C kernel
  (``shoal/trainer/lstm_cell.c``) does the cell's elementwise work in one pass, its rows split
  over torch's threads. Its backward is written out: one C pass and one product per step, then
  the weight and input gradients of all steps as large products. BENCHMARKS.md has what it
  gains over autograd through ``nn.LSTMCell`` (``benchmarks/policy_bench.py``).
* the fused bfloat16 one (CPU, under ``torch.autocast("cpu", dtype=torch.bfloat16)``, i.e.
  ``train.precision = "bfloat16"``): the same sequence with every product in bfloat16 (AMX /
  AVX512-BF16 through oneDNN, several times float32's rate on CPUs that have them) and the
  cell's state, activations and bias gradient in float32 (``forward_bf16`` / ``backward_bf16``
  in the C kernel). Outputs are bfloat16, as autocast's products are.
* the reference one: ``nn.LSTMCell`` unrolled under autograd, used for other dtypes and devices,
  under other autocasts, and as the oracle the fused ones are tested against.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import torch
from torch import nn

__all__ = ["lstm_sequence", "lstm_sequence_reference", "fused_available",
           "fused_bf16_available"]

_kernel: Any = None


def _load_kernel() -> Any:
    global _kernel
    if _kernel is None:
        try:
            _kernel = importlib.import_module("shoal.trainer._lstm_cell")
        except ImportError:
            _kernel = False        # not built (e.g. a source tree without build_ext)
    return _kernel


def fused_available(*tensors: torch.Tensor) -> bool:
    """Whether the fused CPU path applies to these tensors: float32, CPU, no autocast, and the
    C kernel is built."""
    if torch.is_autocast_enabled("cpu"):
        return False
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return False
    return bool(_load_kernel())


def fused_bf16_available(features: torch.Tensor, *tensors: torch.Tensor) -> bool:
    """Whether the fused bfloat16 CPU path applies: CPU autocast to bfloat16 is on, ``features``
    is float32 or bfloat16 and the other tensors (state, weights) float32, all on the CPU, and
    the C kernel is built."""
    if not (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return False
    if features.device.type != "cpu" or features.dtype not in (torch.float32, torch.bfloat16):
        return False
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return False
    return bool(_load_kernel())


def lstm_sequence_reference(cell: nn.LSTMCell, features: torch.Tensor, h: torch.Tensor,
                            c: torch.Tensor, keep: torch.Tensor | None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nn.LSTMCell`` unrolled over ``features [B, L, H_in]``; ``keep [B, L]`` (or None)
    multiplies the state before each step. Returns ``(outputs [B, L, H], h, c)``."""
    L = features.shape[1]
    keeps = None if keep is None else keep.to(features.dtype).unsqueeze(-1).unbind(1)
    # unbind, not features[:, t]: the backward of L selects would zero-fill a [B, L, H]
    # gradient L times (quadratic in L; it was 80% of a training step at L=64)
    inputs = features.unbind(1)
    outputs = []
    for t in range(L):
        if keeps is not None:
            h, c = h * keeps[t], c * keeps[t]
        h, c = cell(inputs[t], (h, c))
        outputs.append(h)
    return torch.stack(outputs, 1), h, c


class _Workspace:
    """Large buffers kept between training steps.

    A fresh tensor of tens of MB is new memory the kernel must map and zero on first touch:
    written into a fresh 64 MB tensor, the forward's input product took 62 ms instead of 42.
    A buffer is handed out by :meth:`take` and comes back by :meth:`give` only after the
    backward that used it has finished, so a buffer is never in two graphs; when the pool is
    empty (two forwards before their backwards, or a forward whose backward never ran) a new
    one is made. Buffers made under ``torch.inference_mode`` (a rollout's forward) are pooled
    apart: torch refuses in-place writes to them outside inference mode (the overlapped
    rollout thread anchors outside it), so only a caller in inference mode gets one back.
    """

    def __init__(self, per_shape: int = 2):
        self.per_shape = per_shape
        # (*shape, dtype, made in inference mode)
        self._free: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        # the update may run forwards on several threads (train.learner_threads)
        self._lock = threading.Lock()

    def take(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        with self._lock:
            free = self._free.get((*shape, dtype, torch.is_inference_mode_enabled()))
            if free:
                return free.pop()
        return torch.empty(shape, dtype=dtype)

    def give(self, *tensors: torch.Tensor) -> None:
        with self._lock:
            for t in tensors:
                free = self._free.setdefault((*t.shape, t.dtype, t.is_inference()), [])
                if len(free) < self.per_shape:
                    free.append(t)


_workspace = _Workspace()


def _fused_forward(features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                   keep: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
                   b_ih: torch.Tensor, b_hh: torch.Tensor, save: bool
                   ) -> tuple[Any, ...]:
    """The fused forward. Buffers are time-major: step t is one contiguous ``[B, ...]`` block
    for its in-place product and its C pass.

    Returns ``(out [L, B, H], c_out [L, B, H], saved)``. With ``save`` the buffers come from the
    workspace and ``saved`` is what the backward needs: ``(x [L, B, H_in], activations
    [L, B, 4H], h_in, c_in [L, B, H], keep [L, B] or None)``, where ``h_in[t]``, ``c_in[t]`` is
    the state step t starts from (already multiplied by ``keep[t]``). Without ``save`` (no
    autograd: rollouts) nothing is kept and ``saved`` is None.
    """
    kernel = _load_kernel()
    threads = torch.get_num_threads()
    B, L, H_in = features.shape
    H = w_hh.shape[1]
    empty = _workspace.take if save else torch.empty
    x = features.detach().transpose(0, 1)
    if save or not x.is_contiguous():             # for L = 1 it already is: no copy
        x = empty(L, B, H_in).copy_(x)
    gates = empty(L, B, 4 * H)
    # the input products of all steps as one product; each step then adds its h @ W_hh^T
    torch.addmm(b_ih + b_hh, x.reshape(L * B, H_in), w_ih.detach().t(),
                out=gates.view(L * B, 4 * H))
    keep_t = None if keep is None else keep.detach().t().contiguous()
    # h_in[t - first], c_in[t - first]: the state step t starts from. Step 0's is a row of its
    # own only when saving (the backward reads all of them); a rollout reads it from h0, c0.
    first = 0 if save else 1
    h_in, c_in = empty(max(L - first, 0), B, H), empty(max(L - first, 0), B, H)
    if save:
        h_first, c_first = h_in[0], c_in[0]
        if keep_t is None:
            h_first.copy_(h0)
            c_first.copy_(c0)
        else:
            torch.mul(h0, keep_t[0].unsqueeze(1), out=h_first)
            torch.mul(c0, keep_t[0].unsqueeze(1), out=c_first)
    elif keep_t is None:
        h_first, c_first = h0.detach().contiguous(), c0.detach().contiguous()
    else:
        k0 = keep_t[0].unsqueeze(1)
        h_first, c_first = h0 * k0, c0 * k0
    c_out = empty(L, B, H)
    out = torch.empty(L, B, H)
    # numpy views made once: indexing them per step is far cheaper than converting per step
    g_np, hi_np, ci_np = gates.numpy(), h_in.numpy(), c_in.numpy()
    out_np, co_np = out.numpy(), c_out.numpy()
    k_np = None if keep_t is None else keep_t.numpy()
    w_hh_t = w_hh.detach().t()
    for t in range(L):
        h_prev = h_first if t == 0 else h_in[t - first]
        c_prev = c_first.numpy() if t == 0 else ci_np[t - first]
        gates[t].addmm_(h_prev, w_hh_t)
        last = t == L - 1
        kernel.forward(g_np[t], c_prev, co_np[t], out_np[t],
                       None if last else hi_np[t + 1 - first],
                       None if last else ci_np[t + 1 - first],
                       None if last or k_np is None else k_np[t + 1], H, threads)
    if not save:
        return out, c_out, None
    return out, c_out, (x, gates, h_in, c_in, keep_t)


def _check_first_backward(ctx: Any) -> None:
    """The fused LSTM's backward reuses the forward's buffers, so it can run only once."""
    if ctx.buffers is None:
        raise RuntimeError(
            "backward ran twice through the fused LSTM (retain_graph=True): its backward "
            "reuses its buffers, so it runs once; to differentiate twice use "
            "shoal.trainer.lstm.lstm_sequence_reference")


class _FusedLSTM(torch.autograd.Function):
    """:func:`_fused_forward` with its backward written out. The backward overwrites the saved
    activations with their gradients, so it can run once per forward."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                keep: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, c_out, (x, gates, h_in, c_in, keep_t) = _fused_forward(
            features, h0, c0, keep, w_ih, w_hh, b_ih, b_hh, save=True)
        # workspace buffers are kept on ctx, not saved: saving would only add version checks
        ctx.buffers = (x, gates, h_in, c_in, c_out)
        ctx.save_for_backward(keep_t, w_ih, w_hh)
        return out.transpose(0, 1), out[-1].clone(), c_out[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor, d_h: torch.Tensor, d_c: torch.Tensor
                 ) -> tuple[Any, ...]:
        _check_first_backward(ctx)
        kernel = _load_kernel()
        x, gates, h_in, c_in, c_out = ctx.buffers
        ctx.buffers = None
        keep_t, w_ih, w_hh = ctx.saved_tensors
        L, B, H = c_out.shape
        dy = _workspace.take(L, B, H)
        dy.copy_(d_out.transpose(0, 1))
        dy[L - 1] += d_h
        dc = d_c.contiguous().clone()
        dh_rec = torch.empty(B, H)
        d_bias = torch.zeros(4 * H)
        g_np, c_np, ci_np, dy_np = gates.numpy(), c_out.numpy(), c_in.numpy(), dy.numpy()
        dc_np, rec_np, db_np = dc.numpy(), dh_rec.numpy(), d_bias.numpy()
        k_np = None if keep_t is None else keep_t.numpy()
        threads = torch.get_num_threads()
        for t in range(L - 1, -1, -1):
            later = t < L - 1
            kernel.backward(g_np[t], c_np[t], ci_np[t], dy_np[t], rec_np if later else None,
                            None if not later or k_np is None else k_np[t + 1], dc_np, db_np, H,
                            threads)
            if t > 0 or ctx.needs_input_grad[1]:
                torch.mm(gates[t], w_hh, out=dh_rec)       # dL/dh_in[t]; gates holds d_pre now
        d_pre = gates.view(L * B, 4 * H)
        d_features = d_h0 = d_c0 = d_w_ih = d_w_hh = None
        if ctx.needs_input_grad[0]:
            d_features = torch.mm(d_pre, w_ih).view(L, B, -1).transpose(0, 1)
        if ctx.needs_input_grad[1]:
            d_h0 = dh_rec if keep_t is None else dh_rec * keep_t[0].unsqueeze(1)
        if ctx.needs_input_grad[2]:
            d_c0 = dc if keep_t is None else dc * keep_t[0].unsqueeze(1)
        # weight gradients as (x^T d_pre)^T: measured faster than d_pre^T x for these shapes
        if ctx.needs_input_grad[4]:
            d_w_ih = torch.mm(x.view(L * B, -1).t(), d_pre).t()
        if ctx.needs_input_grad[5]:
            d_w_hh = torch.mm(h_in.view(L * B, H).t(), d_pre).t()
        _workspace.give(x, gates, h_in, c_in, c_out, dy)
        return d_features, d_h0, d_c0, None, d_w_ih, d_w_hh, d_bias, d_bias.clone()


def lstm_sequence(cell: nn.LSTMCell, features: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                  keep: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cell`` over ``features [B, L, H_in]`` from state ``(h, c)`` (each ``[B, H]``); where
    ``keep [B, L]`` is 0 the state is zeroed before that step (None: never). Returns
    ``(outputs [B, L, H], h, c)``; the fused CPU path when :func:`fused_available`, the fused
    bfloat16 path (bfloat16 outputs, float32 ``h`` and ``c``) when
    :func:`fused_bf16_available`, else :func:`lstm_sequence_reference`."""
    params = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if any(p is None for p in params):
        return lstm_sequence_reference(cell, features, h, c, keep)
    keep32 = None if keep is None else keep.to(torch.float32)
    if fused_available(features, h, c, *params):
        return _fused(features, h, c, keep32, params)
    if fused_bf16_available(features, h, c, *params):
        return _fused_bf16(features, h, c, keep32, params)
    return lstm_sequence_reference(cell, features, h, c, keep)


# torch.compile runs it as it is (it calls a C extension dynamo cannot trace)
@torch.compiler.disable
def _fused(features: torch.Tensor, h: torch.Tensor, c: torch.Tensor, keep: torch.Tensor | None,
           params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if torch.is_grad_enabled() and any(t.requires_grad for t in (features, h, c, *params)):
        return _FusedLSTM.apply(features, h, c, keep, *params)
    out, c_out, _ = _fused_forward(features, h, c, keep, *params, save=False)
    return out.transpose(0, 1), out[-1], c_out[-1]


# ---- bfloat16 products (train.precision = "bfloat16") ----------------------------------------

_BF16 = torch.bfloat16


def _bits(t: torch.Tensor) -> Any:
    """A bfloat16 tensor as the int16 numpy view the C kernel reads (numpy has no bfloat16)."""
    return t.view(torch.int16).numpy()


def _fused_forward_bf16(features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                        keep: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
                        b_ih: torch.Tensor, b_hh: torch.Tensor, save: bool
                        ) -> tuple[Any, ...]:
    """:func:`_fused_forward` with bfloat16 products. Returns ``(out [L, B, H] bfloat16,
    c_out [L, B, H] float32, saved)``; ``saved`` is ``(x [L, B, H_in] bfloat16, activations
    [L, B, 4H] float32, h_in [L, B, H] bfloat16, c_in [L, B, H] float32, keep [L, B] or None,
    w_ih, w_hh bfloat16)`` with ``save``, else None."""
    kernel = _load_kernel()
    threads = torch.get_num_threads()
    B, L, H_in = features.shape
    H = w_hh.shape[1]
    take = _workspace.take
    # scratch (gone when this returns) always comes from the workspace: fresh memory of this
    # size costs page faults on every rollout step; what is returned or saved is fresh
    # unless saved (the backward gives saved buffers back)
    fresh = take if save else (lambda *shape, dtype=torch.float32:
                               torch.empty(shape, dtype=dtype))
    scratch: list[torch.Tensor] = []

    def temp(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        t = take(*shape, dtype=dtype)
        scratch.append(t)
        return t

    x = features.detach().transpose(0, 1)
    if save:
        x = take(L, B, H_in, dtype=_BF16).copy_(x)
    elif not x.is_contiguous() or x.dtype != _BF16:
        x = temp(L, B, H_in, dtype=_BF16).copy_(x)
    w_ih_b, w_hh_b = w_ih.detach().to(_BF16), w_hh.detach().to(_BF16)
    w_hh_t = w_hh_b.t()
    bias = (b_ih.detach() + b_hh.detach()).contiguous()
    # the input products of all steps as one product; the kernel adds the bias and h W_hh^T
    gx = temp(L, B, 4 * H, dtype=_BF16)
    torch.mm(x.view(L * B, H_in), w_ih_b.t(), out=gx.view(L * B, 4 * H))
    keep_t = None if keep is None else keep.detach().t().contiguous()
    # the activations of every step when saving (the backward reads them); a rollout keeps none
    gates = take(L, B, 4 * H) if save else None
    # h_in[t], c_in[t]: the state step t starts from (already multiplied by keep[t]); step 0's
    # is a row of its own only when saving
    first = 0 if save else 1
    h_in = fresh(max(L - first, 0), B, H, dtype=_BF16)
    c_in = fresh(max(L - first, 0), B, H)
    h_first = h_in[0] if save else temp(B, H, dtype=_BF16)
    c_first = c_in[0] if save else temp(B, H)
    if keep_t is None:
        h_first.copy_(h0.detach())
        c_first.copy_(c0.detach())
    else:
        k0 = keep_t[0].unsqueeze(1)
        torch.mul(h0.detach(), k0, out=h_first)
        torch.mul(c0.detach(), k0, out=c_first)
    c_out = fresh(L, B, H)
    out = torch.empty(L, B, H, dtype=_BF16)
    rec = temp(B, 4 * H, dtype=_BF16)
    g_np = None if gates is None else gates.numpy()
    gx_np, hi_np, ci_np = _bits(gx), _bits(h_in), c_in.numpy()
    out_np, co_np, rec_np = _bits(out), c_out.numpy(), _bits(rec)
    k_np = None if keep_t is None else keep_t.numpy()
    bias_np = bias.numpy()
    for t in range(L):
        h_prev = h_first if t == 0 else h_in[t - first]
        c_prev = c_first.numpy() if t == 0 else ci_np[t - first]
        torch.mm(h_prev, w_hh_t, out=rec)
        last = t == L - 1
        kernel.forward_bf16(gx_np[t], rec_np, bias_np, None if g_np is None else g_np[t],
                            c_prev, co_np[t], out_np[t],
                            None if last else hi_np[t + 1 - first],
                            None if last else ci_np[t + 1 - first],
                            None if last or k_np is None else k_np[t + 1], H, threads)
    _workspace.give(*scratch)
    if save:
        return out, c_out, (x, gates, h_in, c_in, keep_t, w_ih_b, w_hh_b)
    return out, c_out, None


class _FusedLSTMBf16(torch.autograd.Function):
    """:func:`_fused_forward_bf16` with its backward written out (bfloat16 products, float32
    cell); like :class:`_FusedLSTM` it runs once per forward."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                keep: torch.Tensor | None, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, c_out, (x, gates, h_in, c_in, keep_t, w_ih_b, w_hh_b) = _fused_forward_bf16(
            features, h0, c0, keep, w_ih, w_hh, b_ih, b_hh, save=True)
        ctx.buffers = (x, gates, h_in, c_in, c_out)
        ctx.weights = (w_ih_b, w_hh_b)
        ctx.features_dtype = features.dtype
        ctx.save_for_backward(keep_t)
        return out.transpose(0, 1), out[-1].float(), c_out[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor, d_h: torch.Tensor, d_c: torch.Tensor
                 ) -> tuple[Any, ...]:
        _check_first_backward(ctx)
        kernel = _load_kernel()
        x, gates, h_in, c_in, c_out = ctx.buffers
        w_ih_b, w_hh_b = ctx.weights
        ctx.buffers = ctx.weights = None
        (keep_t,) = ctx.saved_tensors
        L, B, H = c_out.shape
        with torch.autocast("cpu", enabled=False):
            dy = _workspace.take(L, B, H, dtype=_BF16)
            dy.copy_(d_out.transpose(0, 1))
            if d_h is not None:
                dy[L - 1] = (dy[L - 1].float() + d_h).to(_BF16)
            dc = torch.zeros(B, H) if d_c is None else d_c.float().contiguous().clone()
            d_pre = _workspace.take(L, B, 4 * H, dtype=_BF16)
            dh_rec = torch.empty(B, H, dtype=_BF16)
            d_bias = torch.zeros(4 * H)
            g_np, c_np, ci_np, dy_np = gates.numpy(), c_out.numpy(), c_in.numpy(), _bits(dy)
            dc_np, rec_np, db_np, dp_np = dc.numpy(), _bits(dh_rec), d_bias.numpy(), _bits(d_pre)
            k_np = None if keep_t is None else keep_t.numpy()
            threads = torch.get_num_threads()
            for t in range(L - 1, -1, -1):
                later = t < L - 1
                kernel.backward_bf16(g_np[t], c_np[t], ci_np[t], dy_np[t],
                                     rec_np if later else None,
                                     None if not later or k_np is None else k_np[t + 1], dc_np,
                                     db_np, dp_np[t], H, threads)
                if t > 0 or ctx.needs_input_grad[1]:
                    torch.mm(d_pre[t], w_hh_b, out=dh_rec)     # dL/dh_in[t]
            d_pre2 = d_pre.view(L * B, 4 * H)
            d_features = d_h0 = d_c0 = d_w_ih = d_w_hh = None
            if ctx.needs_input_grad[0]:
                d_features = torch.mm(d_pre2, w_ih_b).view(L, B, -1).transpose(0, 1)
                d_features = d_features.to(ctx.features_dtype)
            if ctx.needs_input_grad[1]:
                d_h0 = dh_rec.float()
                if keep_t is not None:
                    d_h0 = d_h0 * keep_t[0].unsqueeze(1)
            if ctx.needs_input_grad[2]:
                d_c0 = dc if keep_t is None else dc * keep_t[0].unsqueeze(1)
            if ctx.needs_input_grad[4]:
                d_w_ih = torch.mm(x.view(L * B, -1).t(), d_pre2).t().float()
            if ctx.needs_input_grad[5]:
                d_w_hh = torch.mm(h_in.view(L * B, H).t(), d_pre2).t().float()
        _workspace.give(x, gates, h_in, c_in, c_out, dy, d_pre)
        return d_features, d_h0, d_c0, None, d_w_ih, d_w_hh, d_bias, d_bias.clone()


@torch.compiler.disable
def _fused_bf16(features: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                keep: torch.Tensor | None, params: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # the products are cast by hand; autocast off so that nothing inside is cast again
    with torch.autocast("cpu", enabled=False):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (features, h, c, *params)):
            return _FusedLSTMBf16.apply(features, h, c, keep, *params)
        out, c_out, _ = _fused_forward_bf16(features, h, c, keep, *params, save=False)
        return out.transpose(0, 1), out[-1].float(), c_out[-1]
