"""The Gluon FlashAttention backward of triton_src/flash_attn_ws.py outside the build: compile report and JIT run.

    python3 scripts/gluon_attn_bwd.py                 # compile every built variant for sm_90a (no GPU): registers,
                                                      # shared memory, spills
    python3 scripts/gluon_attn_bwd.py --run [--sweep] # on the GPU: dQ/dK/dV against a float64 reference (the
                                                      # FlashAttention 2x rule), then time it at B2 H16 S8192
The forward used for out/LSE is the Gluon forward of the same file; delta = rowsum(dO * O) is computed with torch.
--sweep also times other ring depths.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import triton  # noqa: E402

from gluon_attn_fwd import compile_report, forward, no_cu_seqlens, set_allocator  # noqa: E402
from triton_src import flash_attn_ws as ws  # noqa: E402


def run(sweep: bool):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    set_allocator()

    def backward(q, k, v, o, lse, do, causal, stages=None, bufs=None):
        B, S, H, D = q.shape
        HK = k.shape[2]
        if bufs is None:
            bufs = (torch.empty(B, H, S, D, device=q.device), torch.full_like(q, float("nan")),
                    torch.full_like(k, float("nan")), torch.full_like(v, float("nan")))
        dq_acc, dq, dk, dv = bufs
        dq_acc.zero_()
        delta = (o.float() * do.float()).sum(-1).transpose(1, 2).contiguous()
        tiles = triton.cdiv(S, 2 * ws.BWD_HALF_N.value)
        grid = (B * HK, tiles) if causal else (tiles, B * HK)  # as the launcher
        ws.flash_attn_ws_bwd_kernel[grid](q, k, v, do, lse, delta, dq_acc, dk, dv, no_cu_seqlens(q.device), S,
                                          B * S, False, H, HK, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                                          *do.stride()[:3], D ** -0.5 * ws.LOG2E.value, D ** -0.5, causal, D,
                                          stages or ws.BWD_STAGES[D], num_warps=4)
        bm = ws.CONVERT_BLOCK_M
        ws.flash_attn_ws_dq_convert_kernel[(B * H, triton.cdiv(S, bm))](dq_acc, dq, S, H, D ** -0.5, D, bm,
                                                                        num_warps=4)
        return dq, dk, dv

    def grads(q, k, v, do, causal, dtype):
        qd, kd, vd = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
        g = q.shape[2] // k.shape[2]
        s = qd.transpose(1, 2) @ kd.transpose(1, 2).repeat_interleave(g, 1).transpose(-1, -2) * q.shape[-1] ** -0.5
        if causal:
            S = q.shape[1]
            s = s.masked_fill(torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        p = torch.softmax(s.float(), -1).to(dtype)
        out = (p @ vd.transpose(1, 2).repeat_interleave(g, 1)).transpose(1, 2)
        return torch.autograd.grad(out, (qd, kd, vd), do.to(dtype))

    torch.manual_seed(0)
    bad = 0
    for dt in (torch.bfloat16, torch.float16):
        for D in ws.BWD_HEAD_DIMS:
            for B, H, HK, S in ((2, 4, 2, 1), (1, 2, 2, 17), (2, 4, 1, 1000), (1, 2, 1, 4097), (3, 4, 4, 256),
                                (1, 8, 2, 333)):
                for causal in (False, True):
                    q, k, v = (torch.randn(B, S, h, D, device="cuda", dtype=dt) for h in (H, HK, HK))
                    do = torch.randn_like(q)
                    o, lse = forward(q, k, v, causal)
                    got = backward(q, k, v, o, lse, do, causal)
                    ref = grads(q, k, v, do, causal, torch.float64)
                    low = grads(q, k, v, do, causal, dt)
                    msgs = []
                    ok = True
                    for name, g, r, lo in zip("qkv", got, ref, low):
                        err = (g.double() - r).abs().max().item()
                        ref_err = (lo.double() - r).abs().max().item()
                        good = err <= 2 * ref_err + 1e-4 and not g.isnan().any()
                        ok &= good
                        msgs.append(f"d{name} {err:.3g} ({ref_err:.3g})")
                    bad += not ok
                    if not ok or S in (1000, 4097):
                        print(f"{'OK ' if ok else 'BAD'} {dt} D{D} B{B} H{H}/{HK} S{S} causal={causal}: "
                              + ", ".join(msgs), flush=True)
    print(f"correctness: {bad} bad cases", flush=True)

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=30, rep=200)

    shapes = [(2, 16, 16, 8192, 128), (2, 32, 32, 8192, 64), (2, 16, 4, 8192, 128), (16, 16, 16, 1024, 128),
              (1, 16, 16, 32768, 128)]
    for B, H, HK, S, D in shapes:
        for causal in (True, False):
            q, k, v = (torch.randn(B, S, h, D, device="cuda", dtype=torch.bfloat16) for h in (H, HK, HK))
            do = torch.randn_like(q)
            fwd_flops = 4 * B * H * S * S * D / (2 if causal else 1)
            fwd_out = (torch.empty_like(q), torch.empty(B, H, S, device="cuda"))  # no NaN fill inside the timing
            o, lse = forward(q, k, v, causal, out=fwd_out)
            fwd_ms = bench(lambda: forward(q, k, v, causal, out=fwd_out))
            row = []
            qs, ks, vs = (t.transpose(1, 2).detach().requires_grad_() for t in (q, k, v))
            for name, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel([backend]):
                        out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=True)
                        ms = bench(lambda: torch.autograd.grad(out, (qs, ks, vs), do.transpose(1, 2),
                                                               retain_graph=True))
                    row.append(f"{name} bwd {2.5 * fwd_flops / ms / 1e9:.0f}")
                except RuntimeError:
                    row.append(f"{name} n/a")
            bufs = (torch.empty(B, H, S, D, device="cuda"), torch.empty_like(q), torch.empty_like(k),
                    torch.empty_like(v))
            for st in ((None, 3) if sweep and D == 128 else (None,)):
                try:
                    ms = bench(lambda: backward(q, k, v, o, lse, do, causal, st, bufs))
                    row.append(f"ws[st {st or 'dflt'}] bwd {ms:.3f} ms {2.5 * fwd_flops / ms / 1e9:.0f}, "
                               f"fwd+bwd {3.5 * fwd_flops / (ms + fwd_ms) / 1e9:.0f}")
                except Exception as e:  # noqa: BLE001
                    row.append(f"ws[st {st}] {type(e).__name__}: {e}"[:200])
            print(f"B{B} H{H}/{HK} S{S} D{D} causal={causal} fwd {fwd_ms:.3f} ms; TFLOP/s: " + "; ".join(row),
                  flush=True)


if __name__ == "__main__":
    if "--run" in sys.argv:
        run("--sweep" in sys.argv)
    else:
        compile_report(ws.flash_attn_ws_bwd_kernel)
