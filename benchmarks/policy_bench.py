"""Times ways of running a small recurrent PPO policy on the CPU, to pick the trainer's recipe.

    python benchmarks/policy_bench.py [--sections a,b,c] [--threads 1,2] [--agents 4096,2048]
                                      [--segments 512] [--horizon 64] [--reset-prob 0.01]
                                      [--rounds 3] [--compile]

The policy is the breakout-sized recurrent one: Linear(118->128)+GELU encoder -> LSTM(128, 128)
-> logits(3) + value(1), 148k parameters, 0.293 MFLOP of matmul per forward step. Every
candidate uses the same weights. Sections:

  a  rollout inference: one step for N agents under torch.inference_mode (module shapes,
     preallocated outputs, bf16, 1 vs 2 threads, action sampling).
  b  training forward+backward of a PPO-style loss over one minibatch of segments x horizon
     with episode starts inside the segments (state reset to zero there), then the optimizer
     step (Adam vs Muon for the matrices + Adam for the rest).
  c  the whole PPO iteration without an environment: horizon rollout steps for all agents,
     then one pass of minibatches (forward, backward, clip, optimizer), timed end to end.

Candidates run in alternation, round after round (rotating the order), so load from other
processes hits them all alike. Printed per candidate: median and best wall time per call, the
median process CPU time (with one thread, the least disturbed by other processes), the ratio of
medians to the section's baseline measured in the same run (> 1 = faster), and the matmul
GFLOP/s reached at the best time. Exact variants are checked against the baseline first.

Terms: "bf32 mm" = float32 tensors with torch.backends.mkldnn.matmul.fp32_precision = "bf16"
(oneDNN rounds matmul inputs to bf16 and accumulates in fp32; everything else stays fp32).
"sigmoid-tanh" = tanh(x) computed as 2*sigmoid(2x)-1, because torch.tanh is ~9x slower than
torch.sigmoid per element on this CPU build.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from shoal.trainer.lstm import lstm_sequence

OBS, HID, ACT = 118, 128, 3
FWD_FLOP = 2 * (OBS * HID + 2 * HID * 4 * HID + HID * (ACT + 1))   # matmul FLOP per step
FP32_CEILING = 190e9      # fp32 matmul FLOP/s of both cores (MKL sgemm, measured)


# ----------------------------------------------------------------------------- timing harness

def set_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


Candidates = dict[str, tuple[int, Callable[[], object]]]


def bench(candidates: Candidates, rounds: int, reps: int, baseline: str, flop_per_call: float,
          unit: str = "ms", warm_each_round: bool = True) -> dict[str, float]:
    """Time ``{name: (threads, fn)}`` in alternation; print and return the median per call."""
    names = list(candidates)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    if not warm_each_round:
        for name in names:
            set_threads(candidates[name][0])
            candidates[name][1]()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            threads, fn = candidates[name]
            set_threads(threads)
            if warm_each_round:
                fn()                                # warm-up after a thread-count switch
            for _ in range(reps):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    scale = 1e3 if unit == "ms" else 1e6
    medians = {n: statistics.median(v) for n, v in wall.items()}
    base = medians[baseline]
    width = max(len(n) for n in names)
    print(f"  {'candidate':<{width}}  {'median':>9}  {'best':>9}  {'cpu med':>9}  {'speed-up':>8}"
          + (f"  {'GFLOP/s':>7}" if flop_per_call else ""))
    for n in names:
        m = medians[n]
        line = (f"  {n:<{width}}  {m * scale:7.2f}{unit}  {min(wall[n]) * scale:7.2f}{unit}  "
                f"{statistics.median(cpu[n]) * scale:7.2f}{unit}  {base / m:7.2f}x")
        if flop_per_call:
            line += f"  {flop_per_call / min(wall[n]) / 1e9:7.1f}"
        print(line)
    return medians


@contextlib.contextmanager
def mkldnn_fp32_precision(prec: str):
    """Let oneDNN run float32 matmuls (and their backward) with bf16 inputs: 'bf16' or 'none'."""
    old = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = prec
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = old


def with_bf32(fn: Callable) -> Callable:
    def run(*a):
        with mkldnn_fp32_precision("bf16"):
            return fn(*a)
    return run


def with_autocast(fn: Callable) -> Callable:
    def run(*a):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*a)
    return run


def with_mkldnn_off(fn: Callable) -> Callable:
    def run(*a):
        with torch.backends.mkldnn.flags(enabled=False):
            return fn(*a)
    return run


def tanh_fast(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 (autograd-friendly, ~5x cheaper than torch.tanh here)."""
    return torch.sigmoid(x * 2) * 2 - 1


def tanh_fast_(x: torch.Tensor) -> torch.Tensor:
    """In-place tanh via sigmoid."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


# ----------------------------------------------------------------------------- shared weights

class Weights:
    """One set of policy weights in PyTorch's LSTM layout (gates i, f, g, o)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        def u(*shape: int, fan_in: int) -> torch.Tensor:
            return (torch.rand(*shape, generator=g) * 2 - 1) / math.sqrt(fan_in)
        self.w_enc, self.b_enc = u(HID, OBS, fan_in=OBS), u(HID, fan_in=OBS)
        self.w_ih, self.w_hh = u(4 * HID, HID, fan_in=HID), u(4 * HID, HID, fan_in=HID)
        self.b_ih, self.b_hh = u(4 * HID, fan_in=HID), u(4 * HID, fan_in=HID)
        self.w_head, self.b_head = u(ACT + 1, HID, fan_in=HID), u(ACT + 1, fan_in=HID)


# Gate order of the hand-fused cells: i, f, o (sigmoid) then g (tanh), each HID wide.
IFOG = torch.cat([torch.arange(0, HID), torch.arange(HID, 2 * HID),
                  torch.arange(3 * HID, 4 * HID), torch.arange(2 * HID, 3 * HID)])
# Row scale putting the g gate's pre-activation at 2x, so one sigmoid over all 4 gates gives
# sigmoid(2 x_g) and g = 2 * that - 1 = tanh(x_g).
G_SCALE = torch.cat([torch.ones(3 * HID), torch.full((HID,), 2.0)])


class ModulePolicy(nn.Module):
    """The plain nn version: Linear+GELU encoder, LSTMCell or LSTM, separate actor/critic heads."""

    def __init__(self, w: Weights, core: str = "cell"):
        super().__init__()
        self.enc = nn.Linear(OBS, HID)
        self.core = nn.LSTMCell(HID, HID) if core == "cell" else nn.LSTM(HID, HID, batch_first=True)
        self.actor, self.critic = nn.Linear(HID, ACT), nn.Linear(HID, 1)
        sfx = "" if core == "cell" else "_l0"
        with torch.no_grad():
            self.enc.weight.copy_(w.w_enc); self.enc.bias.copy_(w.b_enc)
            getattr(self.core, "weight_ih" + sfx).copy_(w.w_ih)
            getattr(self.core, "weight_hh" + sfx).copy_(w.w_hh)
            getattr(self.core, "bias_ih" + sfx).copy_(w.b_ih)
            getattr(self.core, "bias_hh" + sfx).copy_(w.b_hh)
            self.actor.weight.copy_(w.w_head[:ACT]); self.actor.bias.copy_(w.b_head[:ACT])
            self.critic.weight.copy_(w.w_head[ACT:]); self.critic.bias.copy_(w.b_head[ACT:])


class FusedPolicy(nn.Module):
    """Hand-fused parameters: gates in (i, f, o, g) order, one bias, one 4-wide head."""

    def __init__(self, w: Weights):
        super().__init__()
        p = lambda t: nn.Parameter(t.clone().contiguous())
        self.w_enc, self.b_enc = p(w.w_enc), p(w.b_enc)
        self.w_ih, self.w_hh = p(w.w_ih[IFOG]), p(w.w_hh[IFOG])
        self.b_gates = p((w.b_ih + w.b_hh)[IFOG])
        self.w_head, self.b_head = p(w.w_head), p(w.b_head)


# ----------------------------------------------------------------------------- (a) rollout

class RolloutCase:
    """Inputs and state for one rollout step of N agents."""

    def __init__(self, n: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.obs = torch.randn(n, OBS, generator=g)
        self.keep = (torch.rand(n, 1, generator=g) > 0.01).float()
        self.h = torch.randn(n, HID, generator=g) * 0.1
        self.c = torch.randn(n, HID, generator=g) * 0.1


def rollout_module_cell(pol: ModulePolicy, rc: RolloutCase) -> Callable[[], object]:
    """Baseline: nn.Linear + GELU, nn.LSTMCell, two heads; fresh tensors every call."""
    def step():
        with torch.inference_mode():
            x = F.gelu(pol.enc(rc.obs))
            h, c = pol.core(x, (rc.h * rc.keep, rc.c * rc.keep))
            return pol.actor(h), pol.critic(h), h, c
    return step


def rollout_shoal_fused(pol: ModulePolicy, rc: RolloutCase) -> Callable[[], object]:
    """What shoal's LSTMPolicy runs: shoal.trainer.lstm.lstm_sequence (the C cell) with L = 1."""
    def step():
        with torch.inference_mode():
            x = F.gelu(pol.enc(rc.obs)).unsqueeze(1)
            y, h, c = lstm_sequence(pol.core, x, rc.h, rc.c, rc.keep.view(-1, 1))
            y = y.squeeze(1)
            return pol.actor(y), pol.critic(y), h, c
    return step


def rollout_module_lstm(pol: ModulePolicy, rc: RolloutCase) -> Callable[[], object]:
    """nn.LSTM called with seq_len = 1 (oneDNN's fp32 AVX-512 RNN kernel)."""
    def step():
        with torch.inference_mode():
            x = F.gelu(pol.enc(rc.obs)).unsqueeze(1)
            y, (h, c) = pol.core(x, ((rc.h * rc.keep).unsqueeze(0), (rc.c * rc.keep).unsqueeze(0)))
            y = y.squeeze(1)
            return pol.actor(y), pol.critic(y), h, c
    return step


def rollout_fused_alloc(pol: FusedPolicy, rc: RolloutCase, fast_tanh: bool) -> Callable[[], object]:
    """Hand-fused cell, fresh tensors: gates = [x, h] @ [W_ih, W_hh]^T in one matmul."""
    w_cat = torch.cat([pol.w_ih, pol.w_hh], 1).detach()
    tanh = tanh_fast if fast_tanh else torch.tanh
    def step():
        with torch.inference_mode():
            x = F.gelu(F.linear(rc.obs, pol.w_enc, pol.b_enc))
            h, c = rc.h * rc.keep, rc.c * rc.keep
            gates = F.linear(torch.cat([x, h], 1), w_cat, pol.b_gates)
            ifo = gates[:, :3 * HID].sigmoid()
            g = tanh(gates[:, 3 * HID:])
            c = ifo[:, HID:2 * HID] * c + ifo[:, :HID] * g
            h = ifo[:, 2 * HID:] * tanh(c)
            return F.linear(h, pol.w_head, pol.b_head), h, c
    return step


class PreallocStep:
    """The fused cell writing into preallocated buffers; state h, c updated in place.

    ``xh`` = [gelu(enc(obs)) | h * keep] is one [N, 2H] buffer, so the gates are one matmul
    with K = 2H; h lives inside it. The g rows of the weights are pre-scaled by 2 so one
    sigmoid covers all four gates (g = 2 sigmoid - 1) and tanh(c) is also computed with
    sigmoid. ``mm_dtype`` = bfloat16 keeps the weights, xh and the gates in bf16 (bf16
    matmuls) while the cell state c stays float32.
    """

    def __init__(self, pol: FusedPolicy, n: int, mm_dtype: torch.dtype = torch.float32):
        dt = mm_dtype
        with torch.no_grad():
            self.w_enc_t = pol.w_enc.t().contiguous().to(dt)
            self.b_enc = pol.b_enc.detach().to(dt)
            w_cat = torch.cat([pol.w_ih, pol.w_hh], 1) * G_SCALE.unsqueeze(1)
            self.w_cat_t = w_cat.t().contiguous().to(dt)
            self.b_gates = (pol.b_gates * G_SCALE).to(dt)
            self.w_head_t = pol.w_head.t().contiguous().to(dt)
            self.b_head = pol.b_head.detach().to(dt)
        self.obs = torch.empty(n, OBS, dtype=dt)
        self.xh = torch.empty(n, 2 * HID, dtype=dt)
        self.enc = torch.empty(n, HID, dtype=dt)
        self.gates = torch.empty(n, 4 * HID, dtype=dt)
        self.h = self.xh[:, HID:]
        self.c = torch.empty(n, HID)
        self.tanh_c = torch.empty(n, HID)
        self.heads = torch.empty(n, ACT + 1, dtype=dt)
        self.keep = torch.ones(n, 1)

    def load(self, rc: RolloutCase) -> None:
        self.obs.copy_(rc.obs); self.h.copy_(rc.h); self.c.copy_(rc.c); self.keep.copy_(rc.keep)

    def __call__(self) -> torch.Tensor:
        with torch.inference_mode():
            H, gates = HID, self.gates
            torch.addmm(self.b_enc, self.obs, self.w_enc_t, out=self.enc)
            torch._C._nn.gelu_(self.enc)      # gelu(out=<strided view>) silently writes nothing
            self.xh[:, :H].copy_(self.enc)
            self.h.mul_(self.keep)
            self.c.mul_(self.keep)
            torch.addmm(self.b_gates, self.xh, self.w_cat_t, out=gates)
            gates.sigmoid_()
            g = gates[:, 3 * H:].mul_(2).sub_(1)
            self.c.mul_(gates[:, H:2 * H]).addcmul_(gates[:, :H], g)
            tanh_fast_(torch.mul(self.c, 1, out=self.tanh_c))
            torch.mul(gates[:, 2 * H:3 * H], self.tanh_c, out=self.h)
            torch.addmm(self.b_head, self.h, self.w_head_t, out=self.heads)
            return self.heads


class Sampler:
    """Action sampling + log-prob for 3 discrete actions: multinomial or Gumbel-max."""

    def __init__(self, n: int, gumbel: bool):
        self.gumbel = gumbel
        self.u = torch.empty(n, ACT)
        self.actions = torch.empty(n, dtype=torch.long)
        self.gen = torch.Generator().manual_seed(3)

    def __call__(self, heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            logp = heads[:, :ACT].float().log_softmax(-1)
            if self.gumbel:
                self.u.uniform_(1e-10, 1.0, generator=self.gen)
                torch.argmax(logp - self.u.log_().neg_().log_(), 1, out=self.actions)
            else:
                self.actions = torch.multinomial(logp.exp(), 1, generator=self.gen).squeeze(1)
            return self.actions, logp.gather(1, self.actions.unsqueeze(1)).squeeze(1)


def section_a(args, w: Weights) -> None:
    mod_cell, mod_lstm, fused = ModulePolicy(w, "cell"), ModulePolicy(w, "lstm"), FusedPolicy(w)
    for n in args.agents:
        rc = RolloutCase(n)
        pre, pre16, pre_b32 = (PreallocStep(fused, n, dt) for dt in
                               (torch.float32, torch.bfloat16, torch.float32))
        ref = rollout_module_cell(mod_cell, rc)()
        errs = []
        for p in (pre, pre16):
            p.load(rc)
            heads = p()
            errs.append(max((heads[:, :ACT].float() - ref[0]).abs().max().item(),
                            (p.h.float() - ref[2]).abs().max().item()))
            p.load(rc)
        pre_b32.load(rc)
        assert errs[0] < 1e-4, f"fused rollout step disagrees with nn.LSTMCell by {errs[0]}"
        print(f"\n(a) rollout step, N = {n} agents, {n * FWD_FLOP / 1e9:.2f} GFLOP per call  "
              f"[max |diff| vs LSTMCell: fp32 prealloc {errs[0]:.1e}, bf16 mm {errs[1]:.1e}]")
        gumbel, multi = Sampler(n, True), Sampler(n, False)
        cands: Candidates = {}
        for th in args.threads:
            cands[f"LSTMCell modules, alloc      t{th}"] = (th, rollout_module_cell(mod_cell, rc))
        for th in args.threads:
            cands[f"LSTM(seq=1) modules          t{th}"] = (th, rollout_module_lstm(mod_lstm, rc))
            cands[f"shoal lstm_sequence (C cell) t{th}"] = (th, rollout_shoal_fused(mod_cell, rc))
            cands[f"fused alloc, torch.tanh      t{th}"] = (th, rollout_fused_alloc(fused, rc, False))
            cands[f"fused alloc, sigmoid-tanh    t{th}"] = (th, rollout_fused_alloc(fused, rc, True))
            cands[f"fused prealloc fp32          t{th}"] = (th, pre)
            cands[f"fused prealloc bf32 mm       t{th}"] = (th, with_bf32(pre_b32))
            cands[f"fused prealloc bf16 mm       t{th}"] = (th, pre16)
            cands[f"fused alloc autocast bf16    t{th}"] = (
                th, with_autocast(rollout_fused_alloc(fused, rc, True)))
            cands[f"prealloc fp32 + gumbel       t{th}"] = (th, lambda p=pre, s=gumbel: s(p()))
            cands[f"prealloc fp32 + multinomial  t{th}"] = (th, lambda p=pre, s=multi: s(p()))
            cands[f"prealloc bf16 mm + gumbel    t{th}"] = (th, lambda p=pre16, s=gumbel: s(p()))
        if args.compile:
            step = torch.compile(rollout_fused_alloc(fused, rc, True), dynamic=False)
            set_threads(args.threads[-1]); t0 = time.perf_counter(); step()
            print(f"  torch.compile of the fused step: {time.perf_counter() - t0:.1f}s to compile")
            for th in args.threads:
                cands[f"fused torch.compile          t{th}"] = (th, step)
        bench(cands, args.rounds, args.rollout_reps,
              f"LSTMCell modules, alloc      t{args.threads[0]}", n * FWD_FLOP)


# ----------------------------------------------------------------------------- (b) training

class TrainCase:
    """One minibatch in [B, T] (segment-major) and [T, B] (time-major) layouts."""

    def __init__(self, b: int, t: int, reset_prob: float, seed: int = 2, data: dict | None = None):
        g = torch.Generator().manual_seed(seed)
        self.B, self.T = b, t
        d = data or {
            "obs": torch.randn(b, t, OBS, generator=g),
            "starts": (torch.rand(b, t, generator=g) < reset_prob).float(),
            "h0": torch.randn(b, HID, generator=g) * 0.1,
            "c0": torch.randn(b, HID, generator=g) * 0.1,
            "actions": torch.randint(0, ACT, (b, t), generator=g),
            "old_logp": torch.full((b, t), -math.log(ACT)),
            "adv": torch.randn(b, t, generator=g),
            "returns": torch.randn(b, t, generator=g),
        }
        self.obs, self.starts, self.h0, self.c0 = d["obs"], d["starts"], d["h0"], d["c0"]
        self.keep = 1.0 - self.starts
        # time-major copies, as if the rollout storage were laid out [T, S, ...]
        self.obs_tb = self.obs.transpose(0, 1).contiguous()
        self.keep_tb = self.keep.t().contiguous()
        self.targets = {False: {}, True: {}}
        for k in ("actions", "old_logp", "adv", "returns"):
            self.targets[False][k] = d[k].reshape(-1)
            self.targets[True][k] = d[k].t().reshape(-1)
        for tm in (False, True):
            self.targets[tm]["actions"] = self.targets[tm]["actions"].unsqueeze(1)


def ppo_loss(logits: torch.Tensor, values: torch.Tensor, tc: TrainCase, tmajor: bool = False
             ) -> torch.Tensor:
    """Clipped surrogate + value loss - entropy bonus over the flattened steps."""
    tg = tc.targets[tmajor]
    logp_all = logits.float().log_softmax(-1)
    logp = logp_all.gather(1, tg["actions"]).squeeze(1)
    ratio = (logp - tg["old_logp"]).exp()
    pg = -torch.min(ratio * tg["adv"], ratio.clamp(0.8, 1.2) * tg["adv"]).mean()
    vl = 0.5 * (values.float() - tg["returns"]).square().mean()
    ent = -(logp_all.exp() * logp_all).sum(1).mean()
    return pg + 0.5 * vl - 0.01 * ent


def train_module_cell(pol: ModulePolicy, tc: TrainCase, unbind: bool = False) -> torch.Tensor:
    """Baseline (shoal's LSTMPolicy today): batched encoder, nn.LSTMCell per step with h, c
    multiplied by (1 - start). ``unbind``: take the per-step inputs with one unbind instead of
    x[:, t] (whose backward writes a zero-filled [B, T, H] gradient for every step)."""
    B, T = tc.B, tc.T
    x = F.gelu(pol.enc(tc.obs.reshape(B * T, OBS))).reshape(B, T, HID)
    xs = x.unbind(1) if unbind else [x[:, t] for t in range(T)]
    h, c = tc.h0, tc.c0
    keep = tc.keep.unsqueeze(-1)
    keeps = keep.unbind(1)
    outs = []
    for t in range(T):
        h, c = pol.core(xs[t], (h * keeps[t], c * keeps[t]))
        outs.append(h)
    y = torch.stack(outs, 1).reshape(B * T, HID)
    return ppo_loss(pol.actor(y), pol.critic(y).squeeze(1), tc)


def train_shoal_fused(pol: ModulePolicy, tc: TrainCase) -> torch.Tensor:
    """What shoal's LSTMPolicy trains with: shoal.trainer.lstm.lstm_sequence (the C cell, its
    hand-written backward) on the LSTMCell's weights."""
    B, T = tc.B, tc.T
    x = F.gelu(pol.enc(tc.obs.reshape(B * T, OBS))).reshape(B, T, HID)
    y, _, _ = lstm_sequence(pol.core, x, tc.h0, tc.c0, tc.keep)
    y = y.reshape(B * T, HID)
    return ppo_loss(pol.actor(y), pol.critic(y).squeeze(1), tc)


def train_fused_loop(pol: FusedPolicy, tc: TrainCase, cell: Callable | None = None
                     ) -> torch.Tensor:
    """Autograd through a hand-written cell, time-major: encoder and x @ W_ih for all steps in
    one matmul each; per step h @ W_hh + sigmoid gates + sigmoid-tanh."""
    B, T = tc.B, tc.T
    x = F.gelu(F.linear(tc.obs_tb.reshape(T * B, OBS), pol.w_enc, pol.b_enc))
    xg = F.linear(x, pol.w_ih, pol.b_gates).reshape(T, B, 4 * HID)
    keeps = tc.keep_tb.unsqueeze(-1).unbind(0)
    h, c = tc.h0, tc.c0
    outs = []
    cell = cell or _fused_cell
    for t, xg_t in enumerate(xg.unbind(0)):
        h, c = cell(xg_t, h * keeps[t], c * keeps[t], pol.w_hh)
        outs.append(h)
    y = torch.stack(outs, 0).reshape(T * B, HID)
    heads = F.linear(y, pol.w_head, pol.b_head)
    return ppo_loss(heads[:, :ACT], heads[:, ACT], tc, tmajor=True)


def _fused_cell(xg_t, h, c, w_hh):
    gates = torch.addmm(xg_t, h, w_hh.t())
    ifo = gates[:, :3 * HID].sigmoid()
    g = tanh_fast(gates[:, 3 * HID:])
    c = ifo[:, HID:2 * HID] * c + ifo[:, :HID] * g
    return ifo[:, 2 * HID:] * tanh_fast(c), c


class LSTMLayerBPTT(torch.autograd.Function):
    """A whole LSTM layer over [T, B] with resets, with a hand-written backward through time.

    Forward: one matmul for x @ W_ih of all steps, written straight into the gate buffer, then
    per step gates += h_in @ W_hh and in-place pointwise ops; activations stay in [T, B, .]
    buffers. Backward walks the steps in reverse with one small matmul per step
    (dgates @ W_hh); the weight, bias and input gradients are each one large matmul or
    reduction over all T*B rows at the end. ``keep`` = 1 - starts, [T, B, 1]: the state
    entering step t is (h, c) * keep[t]. ``mm_dtype`` = bfloat16 runs every matmul in bf16 and
    keeps the matmul operands (gates, h, dgates) in bf16; c, tanh(c), the layer output and the
    returned gradients stay float32. ``pointwise`` optionally replaces the per-step pointwise
    code with compiled functions (fwd, bwd); float32 only.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b, h0, c0, keep, mm_dtype, pointwise):
        T, B, _ = keep.shape
        H = w_hh.shape[1]
        mm = mm_dtype
        same = mm == x.dtype
        scale = G_SCALE.unsqueeze(1)                 # g rows x2: one sigmoid for all gates
        w_hh_t = (w_hh * scale).to(mm).t()
        x_m = x.to(mm)
        acts = torch.addmm((b * G_SCALE).to(mm), x_m, (w_ih * scale).to(mm).t()).view(T, B, 4 * H)
        h_in = x.new_empty(T + 1, B, H, dtype=mm)     # state entering each step (after reset)
        c_in = x.new_empty(T + 1, B, H)
        tanh_c = x.new_empty(T, B, H)
        out = x.new_empty(T, B, H)
        keep_next = torch.cat([keep[1:], keep.new_zeros(1, B, 1)], 0)
        torch.mul(h0, keep[0], out=h_in[0])
        torch.mul(c0, keep[0], out=c_in[0])
        for t in range(T):
            a = acts[t].addmm_(h_in[t], w_hh_t)
            if pointwise is not None:
                pointwise[0](a, c_in[t], keep_next[t], tanh_c[t], out[t], h_in[t + 1], c_in[t + 1])
                continue
            a32 = a if same else a.float()               # pointwise math in float32
            a32.sigmoid_()
            g = a32[:, 3 * H:].mul_(2).sub_(1)
            c = torch.mul(a32[:, H:2 * H], c_in[t], out=c_in[t + 1]).addcmul_(a32[:, :H], g)
            tanh_fast_(torch.mul(c, 1, out=tanh_c[t]))
            torch.mul(a32[:, 2 * H:3 * H], tanh_c[t], out=out[t])
            torch.mul(out[t], keep_next[t], out=h_in[t + 1])
            c.mul_(keep_next[t])
            if not same:
                a.copy_(a32)                             # activations kept for backward
        ctx.save_for_backward(x_m, w_ih, w_hh, acts, h_in, c_in, tanh_c, keep)
        ctx.pointwise = pointwise
        return out

    @staticmethod
    def backward(ctx, d_out):
        x_m, w_ih, w_hh, acts, h_in, c_in, tanh_c, keep = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        mm = acts.dtype
        same = mm == d_out.dtype
        w_hh_m = w_hh.to(mm)
        d_out = d_out.contiguous()
        d_gates = acts.new_empty(T, B, G)
        dg32 = d_out.new_empty(B, G)
        dc = d_out.new_zeros(B, H)
        raw = None                                # dgates[t+1] @ W_hh: d loss / d h_in[t+1]
        q = d_out.new_empty(B, H)
        for t in range(T - 1, -1, -1):
            dg = d_gates[t] if same else dg32
            if raw is None:
                dh = d_out[t]
            else:
                dh = torch.addcmul(d_out[t], raw, keep[t + 1])
            if ctx.pointwise is not None:
                ctx.pointwise[1](dh, dc, acts[t], c_in[t], tanh_c[t], keep[t], dg)
            else:
                a = acts[t] if same else acts[t].float()
                i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
                torch.mul(tanh_c[t], tanh_c[t], out=q).neg_().add_(1).mul_(o)
                dc.addcmul_(q, dh)                                        # + dh o tanh'(c)
                torch.mul(dc, g, out=dg[:, :H])                           # d i
                torch.mul(dc, c_in[t], out=dg[:, H:2 * H])                # d f
                torch.mul(dh, tanh_c[t], out=dg[:, 2 * H:3 * H])          # d o
                sig = a[:, :3 * H]
                dg[:, :3 * H].mul_(torch.rsub(sig, 1).mul_(sig))          # sigmoid'
                torch.mul(g, g, out=q).neg_().add_(1).mul_(i).mul_(dc)
                dg[:, 3 * H:].copy_(q)                                    # d g * tanh'
                dc.mul_(f).mul_(keep[t])
            if not same:
                d_gates[t].copy_(dg)
            raw = torch.mm(d_gates[t], w_hh_m)
        flat = d_gates.view(T * B, G)
        d_x = flat.mm(w_ih.to(mm)).float()
        d_w_ih = flat.t().mm(x_m).float()
        d_w_hh = flat.t().mm(h_in[:T].reshape(T * B, H)).float()
        d_b = flat.new_ones(1, T * B).mm(flat).reshape(G).float()
        d_h0 = (raw * keep[0]).float()
        return d_x, d_w_ih, d_w_hh, d_b, d_h0, dc, None, None, None


def _pointwise_fwd(a, c_in, keep_next, tanh_c, out, h_in_next, c_in_next):
    H = HID
    s = a.sigmoid()
    i, f, o, g = s[:, :H], s[:, H:2 * H], s[:, 2 * H:3 * H], s[:, 3 * H:] * 2 - 1
    c = f * c_in + i * g
    tc = torch.sigmoid(c * 2) * 2 - 1
    h = o * tc
    a[:, :3 * H].copy_(s[:, :3 * H]); a[:, 3 * H:].copy_(g)
    tanh_c.copy_(tc); out.copy_(h)
    h_in_next.copy_(h * keep_next); c_in_next.copy_(c * keep_next)


def _pointwise_bwd(dh, dc, a, c_in, tanh_c, keep, dg):
    H = HID
    i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    dct = dc + dh * o * (1 - tanh_c * tanh_c)
    dg[:, :H].copy_(dct * g * i * (1 - i))
    dg[:, H:2 * H].copy_(dct * c_in * f * (1 - f))
    dg[:, 2 * H:3 * H].copy_(dh * tanh_c * o * (1 - o))
    dg[:, 3 * H:].copy_(dct * i * (1 - g * g))
    dc.copy_(dct * f * keep)


def train_manual_bptt(pol: FusedPolicy, tc: TrainCase, pointwise=None,
                      mm_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Time-major batched encoder + LSTMLayerBPTT + batched heads."""
    B, T = tc.B, tc.T
    x = F.gelu(F.linear(tc.obs_tb.reshape(T * B, OBS), pol.w_enc, pol.b_enc))
    y = LSTMLayerBPTT.apply(x, pol.w_ih, pol.w_hh, pol.b_gates, tc.h0, tc.c0,
                            tc.keep_tb.unsqueeze(-1), mm_dtype, pointwise)
    heads = F.linear(y.reshape(T * B, HID), pol.w_head, pol.b_head)
    return ppo_loss(heads[:, :ACT], heads[:, ACT], tc, tmajor=True)


def train_module_lstm_full(pol: ModulePolicy, tc: TrainCase) -> torch.Tensor:
    """nn.LSTM over the whole segment from the initial state: IGNORES resets inside it."""
    B, T = tc.B, tc.T
    x = F.gelu(pol.enc(tc.obs.reshape(B * T, OBS))).reshape(B, T, HID)
    k0 = tc.keep[:, :1]
    y, _ = pol.core(x, ((tc.h0 * k0).unsqueeze(0), (tc.c0 * k0).unsqueeze(0)))
    y = y.reshape(B * T, HID)
    return ppo_loss(pol.actor(y), pol.critic(y).squeeze(1), tc)


def repack_indices(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Index maps that move every episode fragment starting inside a segment to its own row.

    Row s of the repacked batch is segment s (its first fragment is exact: the LSTM is causal);
    each internal start (s, t0) gets an extra row holding steps t0.. of segment s, padded with
    a zero input row, starting from a zero state. Returns (src [B+R, T] indices into the flat
    [B*T + 1 zero row] inputs, dst [B*T] indices into the flat [(B+R)*T] outputs, R).
    """
    B, T = starts.shape
    internal = starts.clone()
    internal[:, 0] = 0
    flat = internal.reshape(-1).bool()
    where = flat.nonzero().squeeze(1)
    R = int(where.numel())
    ar = torch.arange(T)
    seg, t0 = where.div(T, rounding_mode="floor"), where % T
    pos = t0.unsqueeze(1) + ar                                             # [R, T]
    extra = torch.where(pos < T, seg.unsqueeze(1) * T + pos, torch.full_like(pos, B * T))
    src = torch.cat([torch.arange(B * T).reshape(B, T), extra], 0)
    rank = torch.cumsum(flat.long(), 0).reshape(B, T) - 1                  # global start id
    last_t0 = torch.cummax(internal * ar, 1).values.long()
    has = torch.cumsum(internal, 1) > 0
    row = torch.where(has, B + rank, torch.arange(B).unsqueeze(1).expand(B, T))
    col = torch.where(has, ar - last_t0, ar.expand(B, T))
    return src, (row * T + col).reshape(-1), R


def train_module_lstm_repack(pol: ModulePolicy, tc: TrainCase) -> torch.Tensor:
    """Exact resets with nn.LSTM: fragments after an internal start get their own zero-state row."""
    B, T = tc.B, tc.T
    src, dst, R = repack_indices(tc.starts)
    x = F.gelu(pol.enc(tc.obs.reshape(B * T, OBS)))
    x = torch.cat([x, x.new_zeros(1, HID)], 0)[src.reshape(-1)].reshape(B + R, T, HID)
    k0 = tc.keep[:, :1]
    h0 = torch.cat([tc.h0 * k0, tc.h0.new_zeros(R, HID)], 0).unsqueeze(0)
    c0 = torch.cat([tc.c0 * k0, tc.c0.new_zeros(R, HID)], 0).unsqueeze(0)
    y, _ = pol.core(x, (h0, c0))
    y = y.reshape((B + R) * T, HID)[dst]
    return ppo_loss(pol.actor(y), pol.critic(y).squeeze(1), tc)


def grads_of(pol: nn.Module, loss_fn: Callable, tc: TrainCase) -> tuple[float, torch.Tensor]:
    """Loss and the flattened gradient in the canonical (Weights) layout."""
    pol.zero_grad(set_to_none=True)
    loss = loss_fn(pol, tc)
    loss.backward()
    if isinstance(pol, FusedPolicy):
        inv = torch.argsort(IFOG)
        gb = pol.b_gates.grad[inv]
        parts = [pol.w_enc.grad, pol.b_enc.grad, pol.w_ih.grad[inv], pol.w_hh.grad[inv], gb, gb,
                 pol.w_head.grad, pol.b_head.grad]
    else:
        sfx = "" if isinstance(pol.core, nn.LSTMCell) else "_l0"
        cg = lambda n: getattr(pol.core, n + sfx).grad
        parts = [pol.enc.weight.grad, pol.enc.bias.grad, cg("weight_ih"), cg("weight_hh"),
                 cg("bias_ih"), cg("bias_hh"), torch.cat([pol.actor.weight.grad,
                 pol.critic.weight.grad]), torch.cat([pol.actor.bias.grad, pol.critic.bias.grad])]
    return loss.item(), torch.cat([p.reshape(-1).float() for p in parts])


def make_optimizer(params: list[nn.Parameter], kind: str) -> Callable[[], None]:
    """Grad-norm clip, then Adam (foreach / fused) over everything, or torch.optim.Muon on the
    2-D weights (Muon rejects other shapes) + fused Adam on the biases."""
    if kind == "adam-foreach":
        opts = [torch.optim.Adam(params, lr=1e-3, foreach=True)]
    elif kind == "adam-fused":
        opts = [torch.optim.Adam(params, lr=1e-3, fused=True)]
    elif kind == "muon":
        mats = [p for p in params if p.ndim == 2]
        rest = [p for p in params if p.ndim != 2]
        opts = [torch.optim.Muon(mats, lr=0.02, momentum=0.95, weight_decay=0.0),
                torch.optim.Adam(rest, lr=1e-3, fused=True)]
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    def step():
        torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
        for o in opts:
            o.step()
    return step


def compiled_pointwise() -> tuple[Callable, Callable]:
    return (torch.compile(_pointwise_fwd, dynamic=False, fullgraph=True),
            torch.compile(_pointwise_bwd, dynamic=False, fullgraph=True))


def check_variants(w: Weights, args, pointwise) -> None:
    """Exact variants must reproduce the LSTMCell loop's loss and gradients (to fp32 rounding);
    bf16 variants are reported with their error."""
    tc = TrainCase(64, args.horizon, max(args.reset_prob, 0.05), seed=5)
    ref_loss, ref_g = grads_of(ModulePolicy(w, "cell"), train_module_cell, tc)
    exact, bf16 = 1e-3, None
    checks = [("LSTMCell unbind", exact, ModulePolicy(w, "cell"),
               lambda p, c: train_module_cell(p, c, unbind=True)),
              ("shoal C cell", exact, ModulePolicy(w, "cell"), train_shoal_fused),
              ("fused loop", exact, FusedPolicy(w), train_fused_loop),
              ("manual BPTT", exact, FusedPolicy(w), train_manual_bptt),
              ("nn.LSTM repack", exact, ModulePolicy(w, "lstm"), train_module_lstm_repack),
              ("BPTT bf16 mm", bf16, FusedPolicy(w),
               lambda p, c: train_manual_bptt(p, c, mm_dtype=torch.bfloat16)),
              ("BPTT bf32 mm", bf16, FusedPolicy(w), with_bf32(train_manual_bptt)),
              ("loop autocast", bf16, FusedPolicy(w), with_autocast(train_fused_loop))]
    if pointwise is not None:
        checks.append(("BPTT compiled", exact, FusedPolicy(w),
                       lambda p, c: train_manual_bptt(p, c, pointwise)))
    for name, tol, pol, fn in checks:
        loss, g = grads_of(pol, fn, tc)
        err = (g - ref_g).abs().max().item() / ref_g.abs().max().item()
        cos = F.cosine_similarity(g, ref_g, 0).item()
        ok = tol is None or (abs(loss - ref_loss) < 1e-4 and err < tol)
        print(f"  check {name:<15} loss diff {abs(loss - ref_loss):.1e}, max grad diff / max "
              f"grad {err:.1e}, grad cosine {cos:.6f}  {'ok' if ok else 'MISMATCH'}")
        assert ok, f"{name} does not reproduce the LSTMCell loop"


def section_b(args, w: Weights) -> None:
    B, T = args.segments, args.horizon
    tc = TrainCase(B, T, args.reset_prob)
    n_int = int(tc.starts[:, 1:].sum())
    frac = float((tc.starts[:, 1:].sum(1) > 0).float().mean())
    print(f"\n(b) training forward+backward, {B} segments x {T} steps = {B * T} steps, "
          f"{3 * B * T * FWD_FLOP / 1e9:.1f} GFLOP; {n_int} internal resets "
          f"(p = {args.reset_prob}, {frac:.0%} of segments have one)")
    pointwise = None
    if args.compile:
        set_threads(args.threads[-1])
        t0 = time.perf_counter()
        pointwise = compiled_pointwise()
        grads_of(FusedPolicy(w), lambda p, c: train_manual_bptt(p, c, pointwise),
                 TrainCase(B, T, args.reset_prob))
        print(f"  torch.compile of the BPTT pointwise fwd + bwd: {time.perf_counter() - t0:.1f}s")
    check_variants(w, args, pointwise)
    pols = {"cell": ModulePolicy(w, "cell"), "lstm": ModulePolicy(w, "lstm"),
            "fused": FusedPolicy(w)}

    def fb(pol: nn.Module, fn: Callable) -> Callable[[], object]:
        def run():
            pol.zero_grad(set_to_none=True)
            fn(pol, tc).backward()
        return run

    cell, lstm, fused = pols["cell"], pols["lstm"], pols["fused"]
    cands: Candidates = {}
    for th in args.threads:
        cands[f"LSTMCell loop x[:, t]         t{th}"] = (th, fb(cell, train_module_cell))
    for th in args.threads:
        cands[f"LSTMCell loop unbind          t{th}"] = (
            th, fb(cell, lambda p, c: train_module_cell(p, c, unbind=True)))
        cands[f"shoal lstm_sequence (C cell)  t{th}"] = (th, fb(cell, train_shoal_fused))
        cands[f"fused autograd loop fp32      t{th}"] = (th, fb(fused, train_fused_loop))
        cands[f"fused autograd loop bf32 mm   t{th}"] = (th, with_bf32(fb(fused, train_fused_loop)))
        cands[f"fused autograd autocast bf16  t{th}"] = (
            th, fb(fused, with_autocast(train_fused_loop)))
        cands[f"manual BPTT fp32              t{th}"] = (th, fb(fused, train_manual_bptt))
        cands[f"manual BPTT bf32 mm           t{th}"] = (th, with_bf32(fb(fused, train_manual_bptt)))
        cands[f"manual BPTT bf16 mm           t{th}"] = (
            th, fb(fused, lambda p, c: train_manual_bptt(p, c, mm_dtype=torch.bfloat16)))
        if pointwise is not None:
            bp = lambda p, c: train_manual_bptt(p, c, pointwise)
            cands[f"manual BPTT compiled pw fp32  t{th}"] = (th, fb(fused, bp))
            cands[f"manual BPTT compiled pw bf32  t{th}"] = (th, with_bf32(fb(fused, bp)))
        cands[f"nn.LSTM repack (exact) fp32   t{th}"] = (th, fb(lstm, train_module_lstm_repack))
        cands[f"nn.LSTM repack autocast bf16  t{th}"] = (
            th, fb(lstm, with_autocast(train_module_lstm_repack)))
        cands[f"nn.LSTM full NO RESETS fp32   t{th}"] = (th, fb(lstm, train_module_lstm_full))
        cands[f"nn.LSTM full NO RESETS native t{th}"] = (
            th, fb(lstm, with_mkldnn_off(train_module_lstm_full)))
    bench(cands, args.rounds, 1, f"LSTMCell loop x[:, t]         t{args.threads[0]}",
          3 * B * T * FWD_FLOP, warm_each_round=False)

    print(f"\n(b) optimizer step over {sum(p.numel() for p in fused.parameters())} parameters "
          "(grad-norm clip included)")
    ocands: Candidates = {}
    for kind in ("adam-foreach", "adam-fused", "muon"):
        pol = FusedPolicy(w)
        fb(pol, train_manual_bptt)()
        for th in args.threads:
            ocands[f"{kind:<12} t{th}"] = (th, make_optimizer(list(pol.parameters()), kind))
    bench(ocands, args.rounds, 20, f"adam-foreach t{args.threads[0]}", 0.0, unit="us")


# ----------------------------------------------------------------------------- (c) end to end

def section_c(args, w: Weights) -> None:
    """A PPO iteration without the environment, timed end to end."""
    N, T, B = max(args.agents), args.horizon, args.segments
    n_mb = N // B
    g = torch.Generator().manual_seed(7)
    obs_src = torch.randn(N, OBS, generator=g)
    starts_src = (torch.rand(T, N, generator=g) < args.reset_prob).float()
    print(f"\n(c) PPO iteration without env: {T} rollout steps x {N} agents, then {n_mb} "
          f"minibatches of {B} x {T} (fwd+bwd+clip+optimizer) = {N * T} steps, "
          f"{4 * N * T * FWD_FLOP / 1e9:.0f} GFLOP")

    def recipe(kind: str, opt_kind: str, mm: str) -> Callable[[], None]:
        """kind 'baseline' = LSTMCell modules everywhere, storage [S, T]; 'best' = prealloc
        fused rollout + manual BPTT, storage [T, S]."""
        store = {"obs": torch.empty(T, N, OBS), "starts": starts_src,
                 "actions": torch.empty(T, N, dtype=torch.long), "old_logp": torch.empty(T, N),
                 "values": torch.empty(T, N)}
        h0, c0 = torch.zeros(N, HID), torch.zeros(N, HID)
        if kind == "baseline":
            pol = ModulePolicy(w, "cell")
        else:
            pol = FusedPolicy(w)
        sampler = Sampler(N, gumbel=(kind != "baseline"))
        opt = make_optimizer(list(pol.parameters()), opt_kind)
        timings: dict[str, list[float]] = {"rollout": [], "train": []}

        def rollout():
            if kind == "baseline":
                h, c = h0.clone(), c0.clone()
                for t in range(T):
                    store["obs"][t] = obs_src
                    with torch.inference_mode():
                        x = F.gelu(pol.enc(obs_src))
                        keep = (1 - starts_src[t]).unsqueeze(1)
                        h, c = pol.core(x, (h * keep, c * keep))
                        logits, v = pol.actor(h), pol.critic(h)
                        a, lp = sampler(torch.cat([logits, v], 1))
                    store["actions"][t], store["old_logp"][t], store["values"][t] = a, lp, v[:, 0]
            else:
                pre = PreallocStep(pol, N, torch.bfloat16 if mm == "bf16" else torch.float32)
                pre.h.copy_(h0); pre.c.copy_(c0)
                for t in range(T):
                    store["obs"][t] = obs_src
                    pre.obs.copy_(obs_src)
                    torch.sub(1, starts_src[t].unsqueeze(1), out=pre.keep)
                    heads = pre()
                    a, lp = sampler(heads)
                    store["actions"][t], store["old_logp"][t], store["values"][t] = a, lp, heads[:, ACT]

        def train():
            perm = torch.randperm(N, generator=g)
            for m in range(n_mb):
                idx = perm[m * B:(m + 1) * B]
                d = {k: v.index_select(1, idx).transpose(0, 1) for k, v in store.items()}
                d["adv"] = torch.randn(B, T, generator=g)
                d["returns"] = d.pop("values") + d["adv"]
                d["h0"], d["c0"] = h0.index_select(0, idx), c0.index_select(0, idx)
                tc = TrainCase(B, T, 0.0, data=d)
                pol.zero_grad(set_to_none=True)
                fn = train_module_cell if kind == "baseline" else train_manual_bptt
                fn(pol, tc).backward()
                opt()

        def run():
            ctx = mkldnn_fp32_precision("bf16") if mm != "fp32" else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter(); rollout(); t1 = time.perf_counter(); train()
                t2 = time.perf_counter()
            timings["rollout"].append(t1 - t0); timings["train"].append(t2 - t1)
        run.timings = timings
        return run

    cands: Candidates = {}
    for th in args.threads:
        cands[f"baseline: LSTMCell modules + Adam  t{th}"] = (th, recipe("baseline", "adam-foreach", "fp32"))
    for th in args.threads:
        cands[f"prealloc + BPTT, fp32 + Muon       t{th}"] = (th, recipe("best", "muon", "fp32"))
        cands[f"prealloc + BPTT, bf16 mm + Muon    t{th}"] = (th, recipe("best", "muon", "bf16"))
    iter_flop = 4 * N * T * FWD_FLOP
    med = bench(cands, args.e2e_rounds, 1, f"baseline: LSTMCell modules + Adam  t{args.threads[0]}",
                iter_flop, warm_each_round=False)
    print("  steps/s without env (median), rollout | train medians, fraction of the "
          f"{FP32_CEILING / 1e9:.0f} GFLOP/s fp32 ceiling:")
    for name, (_, run) in cands.items():
        r = statistics.median(run.timings["rollout"][1:])
        tr = statistics.median(run.timings["train"][1:])
        print(f"    {name}  {N * T / med[name]:9,.0f} steps/s  rollout {r * 1e3:5.0f}ms | "
              f"train {tr * 1e3:5.0f}ms  {iter_flop / med[name] / FP32_CEILING:5.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",")]
    parser.add_argument("--sections", default="a,b,c", help="comma list of a, b, c")
    parser.add_argument("--threads", type=ints, default=[1, 2], help="torch thread counts")
    parser.add_argument("--agents", type=ints, default=[4096, 2048], help="rollout batch sizes")
    parser.add_argument("--segments", type=int, default=512, help="segments per minibatch")
    parser.add_argument("--horizon", type=int, default=64, help="steps per segment (bptt)")
    parser.add_argument("--reset-prob", type=float, default=0.01,
                        help="probability that an episode starts at a step (1 / mean length)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds in (a), (b)")
    parser.add_argument("--rollout-reps", type=int, default=10, help="calls per round in (a)")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="alternating rounds in (c)")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile candidates (about a minute of compiling)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} (other processes make the 2-thread numbers noisy); "
          f"{FWD_FLOP / 1e6:.3f} MFLOP per forward step, x3 for forward+backward")
    w = Weights()
    t0 = time.perf_counter()
    if "a" in sections:
        section_a(args, w)
    if "b" in sections:
        section_b(args, w)
    if "c" in sections:
        section_c(args, w)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s, load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
