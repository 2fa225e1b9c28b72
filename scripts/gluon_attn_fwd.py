"""The Gluon FlashAttention forward of triton_src/flash_attn_ws.py outside the build: compile report and JIT sweep.

    python3 scripts/gluon_attn_fwd.py                 # compile every built variant for sm_90a (no GPU): registers,
                                                      # shared memory, spills
    python3 scripts/gluon_attn_fwd.py --run [--sweep] # on the GPU: check against SDPA (float64 reference for small
                                                      # cases), time it at B2 H16 S8192 against SDPA flash/cuDNN
--sweep also times other (BLOCK_N, STAGES) tiles, with and without the intra-warpgroup overlap.
"""
import functools
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from triton_src import flash_attn_ws as ws  # noqa: E402


def compile_report(kernel=None):
    """Compile every built variant of `kernel` (default: the forward) for sm_90a and print its resources."""
    kernel = kernel or ws.flash_attn_ws_fwd_kernel
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    spec = next(s for s in ws.KERNELS if s.fn is kernel)
    for v in spec.variants:
        names = list(kernel.arg_names)
        sig = {n: ("constexpr" if n in v.constexprs else v.signature[n]) for n in names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if sig[n].startswith("*")}
        src = GluonASTSource(fn=kernel, signature=sig, constexprs=dict(v.constexprs), attrs=attrs)
        opts = backend.parse_options({"num_warps": v.num_warps, "num_stages": 1})
        k = triton.compile(src, target=target, options=opts.__dict__)
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(k.asm["ptx"])
            f.flush()
            text = subprocess.run([get_ptxas(90).path, "--gpu-name", "sm_90a", "-v", f.name, "-o", "/dev/null"],
                                  capture_output=True, text=True).stderr
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
        spilled = spills.group(1) + "/" + spills.group(2) if spills else "?"
        print(f"{v.key}: warps {k.metadata.num_warps}, shared {k.metadata.shared} B, scratch "
              f"{k.metadata.global_scratch_size} B, spills {spilled}",
              flush=True)


@functools.lru_cache
def no_cu_seqlens(device):
    """The cu_seqlens argument of a fixed-length batch (never read): one int32, allocated once."""
    import torch
    return torch.zeros(1, dtype=torch.int32, device=device)


def set_allocator():
    """Device-side TMA descriptors need global scratch: Triton's JIT takes it from this allocator."""
    import torch
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def forward(q, k, v, causal, block_n=None, stages=None, overlap=None, out=None):
    """The Gluon forward through Triton's JIT (after set_allocator()) on q [B, S, H, D], k, v [B, S, H_k, D]:
    (out, LSE [B, H, S])."""
    import torch
    B, S, H, D = q.shape
    dflt_n, dflt_st = ws.TILES[D]
    overlap = ws.OVERLAP[D] if overlap is None else overlap
    o, lse = out or (torch.full_like(q, float("nan")), torch.full((B, H, S), float("nan"), device=q.device))
    grid = (B * H, triton.cdiv(S, 2 * ws.HALF_M.value))
    ws.flash_attn_ws_fwd_kernel[grid](q, k, v, o, lse, no_cu_seqlens(q.device), S, B * S, False, H, k.shape[2],
                                      *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], D ** -0.5 * ws.LOG2E.value,
                                      causal, block_n or dflt_n, D, stages or dflt_st, overlap, num_warps=4)
    return o, lse


def run(sweep: bool):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    set_allocator()

    def reference(q, k, v, causal):
        qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
        g = q.shape[2] // k.shape[2]
        kd, vd = kd.repeat_interleave(g, 1), vd.repeat_interleave(g, 1)
        s = qd @ kd.transpose(-1, -2) * q.shape[-1] ** -0.5
        if causal:
            S = q.shape[1]
            s = s.masked_fill(torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        lse = torch.logsumexp(s, -1)
        return (torch.softmax(s, -1) @ vd).transpose(1, 2), lse

    torch.manual_seed(0)
    bad = 0
    for dt in (torch.bfloat16, torch.float16):
        for D in ws.HEAD_DIMS:
            for B, H, HK, S in ((2, 4, 2, 1), (1, 2, 2, 17), (2, 3, 1, 1000), (1, 2, 1, 4097), (3, 4, 4, 256)):
                for causal in (False, True):
                    q, k, v = (torch.randn(B, S, h, D, device="cuda", dtype=dt) for h in (H, HK, HK))
                    o, lse = forward(q, k, v, causal)
                    ro, rlse = reference(q, k, v, causal)
                    # FlashAttention's rule: error at most 2x that of the same computation at this precision
                    qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))
                    torch_o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal,
                                                             enable_gqa=True).transpose(1, 2)
                    err = (o.double() - ro).abs().max().item()
                    ref_err = (torch_o.double() - ro).abs().max().item()
                    lerr = (lse.double() - rlse).abs().max().item()
                    ok = err <= 2 * ref_err + 1e-5 and lerr < 1e-3 and not o.isnan().any()
                    bad += not ok
                    if not ok or S == 4097:
                        print(f"{'OK ' if ok else 'BAD'} {dt} D{D} B{B} H{H}/{HK} S{S} causal={causal}: "
                              f"err {err:.3g} (torch {ref_err:.3g}), lse err {lerr:.3g}", flush=True)
    print(f"correctness: {bad} bad cases", flush=True)

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=50, rep=300)

    shapes = [(2, 16, 16, 8192, 128), (2, 16, 16, 8192, 64), (2, 8, 8, 8192, 256), (16, 16, 16, 1024, 128),
              (1, 16, 16, 32768, 128)]
    for B, H, HK, S, D in shapes:
        for causal in (True, False):
            q, k, v = (torch.randn(B, S, h, D, device="cuda", dtype=torch.bfloat16) for h in (H, HK, HK))
            flops = 4 * B * H * S * S * D / (2 if causal else 1)
            qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))
            row = []
            for name, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel([backend]):
                        ms = bench(lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal))
                    row.append(f"{name} {flops / ms / 1e9:.0f}")
                except RuntimeError:
                    row.append(f"{name} n/a")
            configs = [(None, None, None)]
            if sweep:
                tiles = {64: ((128, 2), (128, 4), (256, 2)), 128: ((128, 3),), 256: ((64, 3),)}[D]
                configs += [(None, None, not ws.OVERLAP[D])] + [(n, st, ov) for n, st in tiles for ov in (False, True)]
            out = (torch.empty_like(q), torch.empty(B, H, S, device="cuda"))
            for n, st, ov in configs:
                tag = f"ws[{n or 'dflt'},{st or 'dflt'},{'dflt' if ov is None else 'ov' if ov else 'plain'}]"
                try:
                    ms = bench(lambda: forward(q, k, v, causal, n, st, ov, out))
                    row.append(f"{tag} {flops / ms / 1e9:.0f}")
                except Exception as e:  # noqa: BLE001  (a tile that does not fit: out of shared memory)
                    row.append(f"{tag} {type(e).__name__}")
            print(f"B{B} H{H} S{S} D{D} causal={causal} TFLOP/s: " + ", ".join(row), flush=True)


if __name__ == "__main__":
    if "--run" in sys.argv:
        run("--sweep" in sys.argv)
    else:
        compile_report()
