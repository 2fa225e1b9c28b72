"""Probe for issue 6's route to FlashAttention-3-style kernels: can a Gluon kernel (device-side TMA descriptors,
mbarriers, async wgmma, warp_specialize) be compiled ahead of time for sm_90a the way build_tools compiles Triton
kernels (build_tools/generate.py picks Gluon's front end for Gluon functions)?

    python3 scripts/gluon_probe.py          # compile only, no GPU needed
    python3 scripts/gluon_probe.py --run    # on the GPU box: also run both kernels by JIT against torch

Two bf16 GEMM tiles (C = A @ B^T): one program-wide (TMA, mbarrier, async wgmma) and one warp-specialized (a 1-warp
TMA producer partition with 24 registers feeding a 3-deep shared-memory ring, the 4-warp default partition issuing
wgmma). Result on this machine (triton 3.6.0, 2026-11-29): both compile for sm_90a; the PTX has wgmma.mma_async,
cp.async.bulk.tensor, mbarrier.try_wait, tensormap.replace (device-side descriptors: 256 bytes of global scratch,
which the runtime allocates per launch as for Triton's own TMA) and, in the warp-specialized one, setmaxnreg;
metadata num_warps 8 for 4 + 1 warps. Not yet run on a GPU.
"""
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)


@gluon.jit
def gemm_tile_kernel(A, B, C, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr):
    # C[M, N] (fp32) = A[M, K] @ B[N, K]^T, one [BLOCK_M, BLOCK_N] tile per program, bf16 operands via TMA.
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_K], gl.bfloat16)
    a_desc = tma.make_tensor_descriptor(A, [M, K], [K, 1], [BLOCK_M, BLOCK_K], a_layout)
    b_desc = tma.make_tensor_descriptor(B, [N, K], [K, 1], [BLOCK_N, BLOCK_K], b_layout)
    a_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_M, BLOCK_K], a_layout)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_N, BLOCK_K], b_layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
    off_m = gl.program_id(0) * BLOCK_M
    off_n = gl.program_id(1) * BLOCK_N
    phase = 0
    for k in range(0, K, BLOCK_K):
        mbarrier.expect(bar, BLOCK_M * BLOCK_K * 2 + BLOCK_N * BLOCK_K * 2)
        tma.async_copy_global_to_shared(a_desc, [off_m, k], bar, a_smem)
        tma.async_copy_global_to_shared(b_desc, [off_n, k], bar, b_smem)
        mbarrier.wait(bar, phase=phase)
        phase ^= 1
        acc = warpgroup_mma(a_smem, b_smem.permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    mbarrier.invalidate(bar)
    out_layout: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [4, 1], [1, 0])
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    cols = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
    c = gl.convert_layout(acc, out_layout)
    gl.store(C + rows[:, None] * N + cols[None, :], c, mask=(rows[:, None] < M) & (cols[None, :] < N))


@gluon.jit
def _ws_load(a_desc, b_desc, a_bufs, b_bufs, ready, empty, off_m, off_n, K, BLOCK_K: gl.constexpr,
             STAGES: gl.constexpr):
    for i in range(gl.cdiv(K, BLOCK_K)):
        s = i % STAGES
        ph = (i // STAGES) & 1
        mbarrier.wait(empty.index(s), ph ^ 1)
        mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(a_desc, [off_m, i * BLOCK_K], ready.index(s), a_bufs.index(s))
        tma.async_copy_global_to_shared(b_desc, [off_n, i * BLOCK_K], ready.index(s), b_bufs.index(s))


@gluon.jit
def _ws_mma(a_bufs, b_bufs, ready, empty, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
            STAGES: gl.constexpr):
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
    for i in range(gl.cdiv(K, BLOCK_K)):
        s = i % STAGES
        ph = (i // STAGES) & 1
        mbarrier.wait(ready.index(s), ph)
        acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index(s), count=1)
    return (acc,)


@gluon.jit
def gemm_ws_kernel(A, B, C, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                   STAGES: gl.constexpr):
    # the same tile with a 1-warp TMA producer partition feeding a STAGES-deep shared-memory ring
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_K], gl.bfloat16)
    a_desc = tma.make_tensor_descriptor(A, [M, K], [K, 1], [BLOCK_M, BLOCK_K], a_layout)
    b_desc = tma.make_tensor_descriptor(B, [N, K], [K, 1], [BLOCK_N, BLOCK_K], b_layout)
    a_bufs = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M, BLOCK_K], a_layout)
    b_bufs = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, BLOCK_K], b_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    off_m = gl.program_id(0) * BLOCK_M
    off_n = gl.program_id(1) * BLOCK_N
    acc, = gl.warp_specialize([(_ws_mma, (a_bufs, b_bufs, ready, empty, K, BLOCK_M, BLOCK_N, BLOCK_K, STAGES)),
                              (_ws_load, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, off_m, off_n, K, BLOCK_K,
                                          STAGES))], [1], [24])
    out_layout: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [4, 1], [1, 0])
    rows = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    cols = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
    c = gl.convert_layout(acc, out_layout)
    gl.store(C + rows[:, None] * N + cols[None, :], c, mask=(rows[:, None] < M) & (cols[None, :] < N))


def compile_one(fn, constexprs, num_warps=4):
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": 1})
    sig = {"A": "*bf16", "B": "*bf16", "C": "*fp32", "M": "i32", "N": "i32", "K": "i32"}
    sig.update({k: "constexpr" for k in constexprs})
    src = GluonASTSource(fn=fn, signature=sig, constexprs=constexprs,
                         attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]],
                                (2,): [["tt.divisibility", 16]]})
    k = triton.compile(src, target=target, options=options.__dict__)
    md = k.metadata
    print(f"{md.name}: shared {md.shared} B, global scratch {md.global_scratch_size} B "
          f"(align {md.global_scratch_align}), warps {md.num_warps}")
    ptx = k.asm["ptx"]
    print("  PTX: " + ", ".join(f"{pat} x{len(re.findall(re.escape(pat), ptx))}" for pat in
                                ("wgmma.mma_async", "cp.async.bulk.tensor", "mbarrier.try_wait",
                                 "tensormap.replace", "setmaxnreg")))
    print(f"  cubin {len(k.asm['cubin'])} bytes")


def run():
    import torch

    # device-side TMA descriptors need global scratch from the JIT launcher as well
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    M, N, K = 1000, 1024, 4096
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    ref = a.float() @ b.float().T
    for fn, extra in ((gemm_tile_kernel, {}), (gemm_ws_kernel, {"STAGES": 3})):
        c = torch.full((M, N), float("nan"), device="cuda")
        fn[(triton.cdiv(M, 64), triton.cdiv(N, 128))](a, b, c, M, N, K, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64,
                                                      **extra, num_warps=4)
        err = ((c - ref).abs().max() / ref.abs().max()).item()
        ms = triton.testing.do_bench(lambda: fn[(triton.cdiv(M, 64), triton.cdiv(N, 128))](
            a, b, c, M, N, K, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, **extra, num_warps=4))
        print(f"{fn.__name__}: max rel err {err:.2e}, {2 * M * N * K / ms / 1e9:.0f} TFLOP/s")


def main():
    compile_one(gemm_tile_kernel, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64})
    compile_one(gemm_ws_kernel, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "STAGES": 3})
    if "--run" in sys.argv:
        run()


if __name__ == "__main__":
    main()
