"""Where the cross-entropy training call (stats, training forward, finalize, backward check) loses time outside the
forward's streaming, with Triton's JIT on the build's kernels (triton_src/cross_entropy.py), 4096 rows, bf16, FAST
(no weight, soft-cap or smoothing), timed as the benchmarks (benchmarks/harness.time_ms: L2 flushed, stream held).

    python scripts/ce_pdl_probe.py [vocab ...]     # on the GPU box; default 128256

1. The tail of the static row split: stats + training forward + finalize at 30, 31 and 32 rows per program and at
   4096 rows (31.03 per program on 132 SMs: 4 programs take a 32nd row while the others are done), without and with
   TAIL (the left-over rows split over the programs).
2. The four kernels of fwd+bwd (grad_output 1 for the loss, none for z_loss), as the launchers issue them, with and
   without programmatic dependent launch (PDL: each kernel may start before the one before it has finished and
   waits for it with griddepcontrol.wait where it first needs its results), with and without TAIL, and with the
   zero fill that stood for the missing z_loss gradient before has_grad_z. Outputs are compared bit for bit between
   the variants without TAIL; with TAIL the split rows' lse (summed in another order) to rounding.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
import triton_src.cross_entropy as ce  # noqa: E402

SMS = torch.cuda.get_device_properties(0).multi_processor_count
BLOCK, WARPS = 16384, 32  # the build's FAST training forward above 65536 classes
BWD_BLOCK, BWD_WARPS = 8192, 16  # the build's backward (row_block) above 4096 classes


def buffers(rows, V):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, V, device="cuda", dtype=torch.bfloat16, generator=g) * 3
    t = torch.randint(0, V, (rows,), device="cuda", generator=g)
    t[::8] = -100
    f32 = dict(device="cuda", dtype=torch.float32)
    return dict(x=x, t=t, w=torch.ones(1, **f32), stats=torch.empty(3, **f32), ce_row=torch.empty(rows, **f32),
                z_row=torch.empty(rows, **f32), lse=torch.empty(rows, **f32), dx=torch.empty_like(x),
                loss=torch.empty((), device="cuda", dtype=x.dtype), z=torch.empty((), device="cuda", dtype=x.dtype),
                gl=torch.ones((), device="cuda", dtype=x.dtype),
                sync=torch.full((SMS + 1,), 7, device="cuda", dtype=torch.int32), slots=torch.empty(SMS, **f32))


def launch_forward(b, pdl, tail=False):
    rows, V = b["x"].shape
    align = 8 if V % 8 == 0 else 1
    programs = min(rows, SMS)
    ce.cross_entropy_stats_kernel[(1,)](b["t"], b["w"], b["stats"], b["sync"], rows, V, -100, False, programs + 1,
                                        BLOCK=4096, PDL=pdl, num_warps=8)
    ce.cross_entropy_fwd_grad_kernel[(programs,)](
        b["x"], b["t"], b["w"], b["stats"], b["ce_row"], b["z_row"], b["lse"], b["dx"], b["sync"], b["slots"], rows,
        V // align, V // align, V // align, -100, 0.0, 0.0, 1.0, False, False, True, BLOCK_N=BLOCK, ALIGN=align,
        ACCURATE=False, FAST=True, PDL=pdl, TAIL=tail, num_warps=WARPS, launch_pdl=pdl)
    ce.cross_entropy_finalize_kernel[(1,)](b["ce_row"], b["z_row"], b["stats"], b["loss"], b["z"], rows, 1,
                                           BLOCK=4096, PDL=pdl, num_warps=8, launch_pdl=pdl)


def launch_backward(b, pdl, fill):
    rows, V = b["x"].shape
    align = 8 if V % 8 == 0 else 1
    gz = torch.zeros_like(b["gl"]) if fill else b["gl"]
    ce.cross_entropy_bwd_kernel[(min(rows, 2 * SMS),)](
        b["x"], b["t"], b["w"], b["stats"], b["lse"], b["gl"], gz, b["dx"], rows, V // align, V // align,
        V // align, 0, -100, 0.0, 0.0, 1.0, False, False, True, True, fill, BLOCK_N=BWD_BLOCK, ALIGN=align,
        ACCURATE=False, PDL=pdl, num_warps=BWD_WARPS, launch_pdl=pdl)


def main():
    vocabs = [int(v) for v in sys.argv[1:]] or [128256]
    for V in vocabs:
        print(f"== {V} classes, bf16")
        for per in (30, 31, 32):
            b = buffers(per * SMS, V)
            ms = harness.time_ms(lambda: launch_forward(b, True))
            print(f"  stats+forward+finalize, {per * SMS} rows ({per} per program): {ms * 1e3:.1f} us")
            del b
        b = buffers(4096, V)
        for tail in (False, True):
            ms = harness.time_ms(lambda: launch_forward(b, True, tail))
            print(f"  stats+forward+finalize, 4096 rows, TAIL={tail}: {ms * 1e3:.1f} us")
        ref = None
        for pdl, fill, tail in ((False, True, False), (False, False, False), (True, True, False),
                                (True, False, False), (True, False, True)):
            def run():
                launch_forward(b, pdl, tail)
                launch_backward(b, pdl, fill)
            b["dx"].fill_(float("nan"))
            b["lse"].fill_(float("nan"))
            run()
            torch.cuda.synchronize()
            tickets = b["sync"][0].item()
            outs = [b[k].clone() for k in ("dx", "lse", "loss", "z", "stats")]
            if ref is None:
                ref = outs
            same = all(torch.equal(a, r) for a, r in zip(outs, ref))
            close = all(torch.allclose(a.float(), r.float(), rtol=1e-5, atol=1e-9) for a, r in zip(outs, ref))
            ms = harness.time_ms(run)
            print(f"  fwd+bwd kernels, pdl={pdl} zero fill={fill} TAIL={tail}: {ms * 1e3:.1f} us, outputs identical:"
                  f" {same}, close: {close}" + (f", tickets drawn {tickets}" if tail else ""))
        # the unit gradient's fwd+bwd against torch, as a check that the sequence computes the right thing
        x64 = b["x"].double().requires_grad_()
        loss = torch.nn.functional.cross_entropy(x64, b["t"], ignore_index=-100)
        loss.backward()
        print(f"  loss {b['loss'].item():.6f} vs float64 {loss.item():.6f}; dx max abs err "
              f"{(b['dx'].double() - x64.grad).abs().max().item():.3e} (grad max {x64.grad.abs().max().item():.3e})")
        del b, x64


if __name__ == "__main__":
    main()
