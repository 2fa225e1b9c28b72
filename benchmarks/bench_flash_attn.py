"""Benchmarks ``liger_aot.ops.flash_attn`` against PyTorch SDPA (FlashAttention-2 and cuDNN backends) and the
flash-attn package when it is importable.

    python benchmarks/bench_flash_attn.py                # full run
    python benchmarks/bench_flash_attn.py --quick        # the anchor shape only (causal and not)
    python benchmarks/bench_flash_attn.py --results      # also append to benchmarks/results/<gpu>.md

TFLOP/s are counted as FlashAttention does: forward 4 * B * H * S_q * S_k * D (halved when causal), backward
2.5x the forward, forward+backward 3.5x. Every case keeps B * S at 16k tokens. The anchor (issue 6) is bf16,
head dim 128, causal, S = 8192: targets forward >= 550 and forward+backward >= 450 TFLOP/s on the H200.
Inputs are [B, S, H, D] tensors; SDPA gets their [B, H, S, D] transposed views (what Hugging Face passes).
"liger_aot, Triton" is liger_aot with LIGER_FLASH_ATTN_WS=0: the Triton forward and backward where the Hopper Gluon
ones (triton_src/flash_attn_ws.py) would run.
Packed batches (flash_attn_varlen, sequences of PACKED_LENS, 16k tokens): liger_aot against its own Triton kernels
only (SDPA has no packed-sequence entry; the flash-attn package, when installed, is compared too). --packed runs
only those.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

import harness

TOKENS = 16384
ANCHOR = ("causal", 128, 8192)
TARGETS = {"fwd": 550.0, "full": 450.0}
FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "full": 3.5}


def heads_for(d: int) -> int:
    return {64: 32, 96: 16, 128: 16, 256: 8}[d]  # H * D = 2048 (16 heads at D 128)


def make_case(causal: bool, d: int, s: int, dtype: torch.dtype) -> harness.Case:
    b, h = max(1, TOKENS // s), heads_for(d)

    def make() -> harness.Inputs:
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        return harness.Inputs(args=(q, k, v, causal), leaves=(q, k, v), grad_out=torch.randn_like(q))

    fwd = 4 * b * h * s * s * d / (2 if causal else 1)
    name = f"{'causal' if causal else 'full'} d{d} s{s} b{b}h{h}"
    # harness.run divides these by ms * 1e6: with FLOPs in place of bytes its "GB/s" column is GFLOP/s.
    return harness.Case(name, make, {m: fwd * f for m, f in FLOP_FACTOR.items()})


PACKED_LENS = (2048, 1000, 3000, 512, 4096, 1500, 2500, 1728)  # 16384 tokens, as a training batch after packing


def make_packed_case(causal: bool, d: int, kv_heads: int, dtype: torch.dtype) -> harness.Case:
    h = heads_for(d)
    cu_list = [0]
    for n in PACKED_LENS:
        cu_list.append(cu_list[-1] + n)

    def make() -> harness.Inputs:
        total = cu_list[-1]
        q, k, v = (torch.randn(total, n, d, device="cuda", dtype=dtype, requires_grad=True) for n in (h, kv_heads,
                                                                                                    kv_heads))
        cu = torch.tensor(cu_list, dtype=torch.int32, device="cuda")
        return harness.Inputs(args=(q, k, v, cu, max(PACKED_LENS), causal), leaves=(q, k, v),
                              grad_out=torch.randn_like(q))

    fwd = sum(4 * h * n * n * d / (2 if causal else 1) for n in PACKED_LENS)
    name = f"packed {'causal' if causal else 'full'} d{d} h{h}/{kv_heads} 8 seqs"
    return harness.Case(name, make, {m: fwd * f for m, f in FLOP_FACTOR.items()})


def sdpa_with(backend):
    from torch.nn.attention import sdpa_kernel

    def fn(q, k, v, causal):
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=causal)
        return out.transpose(1, 2)
    return fn


def with_triton_kernels(fn):
    """fn with the Triton kernels in place of the Hopper Gluon ones: the launcher reads LIGER_FLASH_ATTN_WS per call,
    so it is set around the forward and, through hooks on the output's autograd node, around its backward."""
    def wrapped(*args):
        os.environ["LIGER_FLASH_ATTN_WS"] = "0"
        try:
            out = fn(*args)
        finally:
            del os.environ["LIGER_FLASH_ATTN_WS"]
        if out.grad_fn is not None:
            out.grad_fn.register_prehook(lambda grads: os.environ.__setitem__("LIGER_FLASH_ATTN_WS", "0"))
            out.grad_fn.register_hook(lambda grads_in, grads_out: os.environ.pop("LIGER_FLASH_ATTN_WS", None)
                                      and None)  # a hook's non-None return would replace the gradients
        return out
    return wrapped


def packed_providers(liger_aot, notes):
    out = []
    if liger_aot is not None:
        def varlen(q, k, v, cu, max_len, causal):
            return liger_aot.ops.flash_attn_varlen(q, k, v, cu, cu, max_len, max_len, causal)
        out += [harness.Provider("liger_aot", varlen),
                harness.Provider("liger_aot, Triton", with_triton_kernels(varlen))]
    fa = harness.optional(lambda: __import__("flash_attn").flash_attn_varlen_func, "flash-attn package", notes)
    if fa is not None:
        out.append(harness.Provider("flash-attn", lambda q, k, v, cu, n, causal: fa(q, k, v, cu, cu, n, n,
                                                                                    causal=causal)))
    return out


def providers(liger_aot, notes):
    from torch.nn.attention import SDPBackend
    out = []
    if liger_aot is not None:
        out.append(harness.Provider("liger_aot", lambda q, k, v, causal: liger_aot.ops.flash_attn(q, k, v, causal)))

        out.append(harness.Provider("liger_aot, Triton",
                                    with_triton_kernels(lambda q, k, v, causal: liger_aot.ops.flash_attn(q, k, v,
                                                                                                       causal))))
    out.append(harness.Provider("SDPA flash (FA2)", sdpa_with(SDPBackend.FLASH_ATTENTION)))
    out.append(harness.Provider("SDPA cuDNN", sdpa_with(SDPBackend.CUDNN_ATTENTION)))
    fa = harness.optional(lambda: __import__("flash_attn").flash_attn_func, "flash-attn package", notes)
    if fa is not None:
        out.append(harness.Provider("flash-attn", lambda q, k, v, causal: fa(q, k, v, causal=causal)))
    return out


def check(inputs: harness.Inputs, y: torch.Tensor):
    """The first 256 queries of the first sequence against SDPA's math backend in fp32 (causal: their keys are
    the first 256 too, so the slice is the same problem; full attention: every key)."""
    q, k, v, causal = inputs.args
    n = min(256, q.shape[1])
    ks, vs = (k[:1, :n], v[:1, :n]) if causal else (k[:1], v[:1])
    with torch.no_grad():
        ref = sdpa_with(torch.nn.attention.SDPBackend.MATH)(q[:1, :n].float(), ks.float(), vs.float(), causal)
    err = (y[:1, :n].float() - ref).abs().max().item()
    return None if err < 2e-2 else f"forward differs from SDPA math (fp32) by {err:.3g}"


def tflops_table(table: harness.Table) -> str:
    providers = list(dict.fromkeys(r.provider for r in table.rows))
    lines = ["| case | mode | " + " | ".join(providers) + " |", "|---|---|" + "--:|" * len(providers)]
    cells = {(r.case, r.mode, r.provider): r for r in table.rows}
    for case in dict.fromkeys(r.case for r in table.rows):
        for mode in harness.MODES:
            row = []
            for p in providers:
                r = cells.get((case, mode, p))
                row.append("—" if r is None or r.ms is None else f"{r.gbps / 1e3:.0f} ({r.ms:.3g} ms)")
            lines.append(f"| {case} | {mode} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def memory_table(table: harness.Table) -> str:
    providers = list(dict.fromkeys(r.provider for r in table.rows))
    mem = {(r.case, r.mode, r.provider): r.peak_mb for r in table.rows}
    lines = ["| case | mode | " + " | ".join(providers) + " |", "|---|---|" + "--:|" * len(providers)]
    for case in dict.fromkeys(r.case for r in table.rows):
        for mode in harness.MODES:
            cells = ["—" if mem.get((case, mode, p)) is None else f"{mem[(case, mode, p)]:.0f}" for p in providers]
            lines.append(f"| {case} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def anchor_line(table: harness.Table, dtype_name: str) -> str:
    causal, d, s = ANCHOR
    name = f"causal d{d} s{s} b{max(1, TOKENS // s)}h{heads_for(d)}"
    tf = {(r.mode, r.provider): (r.gbps / 1e3 if r.gbps else None) for r in table.rows if r.case == name}
    parts = []
    for mode in ("fwd", "full"):
        mine = tf.get((mode, "liger_aot"))
        verdict = "—" if mine is None else ("met" if mine >= TARGETS[mode] else "MISSED")
        others = ", ".join(f"{p} {v:.0f}" for (m, p), v in tf.items() if m == mode and p != "liger_aot" and v)
        label = "fwd" if mode == "fwd" else "fwd+bwd"
        parts.append(f"{label} {'—' if mine is None else f'{mine:.0f}'} TFLOP/s (target >= {TARGETS[mode]:.0f}: "
                     f"{verdict}; {others})")
    return f"anchor {dtype_name} d{d} causal S={s}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--quick", action="store_true", help="the anchor shape only, causal and not")
    parser.add_argument("--packed", action="store_true", help="the packed (varlen) batches only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_flash_attn: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    header = harness.environment_header(f"flash_attn, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)

    sections = []
    if not args.packed:
        shapes = [(True, 128, 8192), (False, 128, 8192)]
        if not args.quick:
            shapes += [(c, d, 8192) for c in (True, False) for d in (64, 256)]
            shapes += [(c, 128, s) for c in (True, False) for s in (512, 1024, 2048, 4096, 16384, 32768)]
        cases = [make_case(c, d, s, dtype) for c, d, s in shapes]
        # ceiling 1.0: the "% of copy" column is meaningless for FLOPs and is not reported
        table = harness.run(cases, providers(liger_aot, notes), harness.MODES, 1.0, notes, check=check)
        sections += [
            anchor_line(table, args.dtype),
            "TFLOP/s (FlashAttention's count; ms in parentheses), median of CUDA events after an L2 flush:\n\n"
            + tflops_table(table),
            "Peak memory, MB above the inputs (bwd: above the retained forward graph as well):\n\n"
            + memory_table(table),
        ]
    if args.packed or not args.quick:
        cases = [make_packed_case(c, d, hk, dtype) for c, d, hk in ((True, 128, 16), (False, 128, 16), (True, 64, 8))]
        table = harness.run(cases, packed_providers(liger_aot, notes), harness.MODES, 1.0, notes)
        sections.append(f"Packed batches (sequences of {', '.join(map(str, PACKED_LENS))} tokens), TFLOP/s (ms):\n\n"
                        + tflops_table(table))
    harness.report(header, sections, notes, args.results)


if __name__ == "__main__":
    main()
