"""Throwaway: the fused cross-entropy forward (loss + gradient for grad_output 1) and the skip_unit backward,
run by Triton's CPU interpreter against a float64 formula of the gradient. No GPU needed.

    TRITON_INTERPRET=1 python3 scripts/ce_fused_interp.py
"""
import inspect
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import triton.runtime.interpreter as interp  # noqa: E402

# Triton 3.6's interpreter reads a 1-element array with int(); patch it as the brief says.
_src = inspect.getsource(interp).replace("int(self.handle.data)", "int(self.handle.data.reshape(-1)[0])")
exec(compile(_src, interp.__file__, "exec"), interp.__dict__)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton.language as tl  # noqa: E402
import triton_src.cross_entropy as ce  # noqa: E402
import triton_src.softmax as sm  # noqa: E402


class _Libdevice:
    """The interpreter does not run libdevice calls (they return None): float32 numpy stand-ins."""

    @staticmethod
    def exp(x):
        return tl.exp(x)

    @staticmethod
    def tanh(x):
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


ce.libdevice = sm.libdevice = _Libdevice


@ce.triton.jit
def _fast_exp_interp(x, shift, ACCURATE: tl.constexpr):
    # the interpreter runs no inline PTX: ex2.approx.ftz's formula in numpy
    return tl.exp2((x - shift) * 1.4426950408889634)


ce._fast_exp = _fast_exp_interp

torch.manual_seed(0)


def ref(x, t, w, ii, ls, zs, cap, reduction, gl, gz):
    """float64 (loss, z, grad) from the definitions, autograd for the gradient."""
    V = x.shape[-1]
    x64 = x.double().requires_grad_()
    xc = cap * torch.tanh(x64 / cap) if cap else x64
    w64 = torch.ones(V, dtype=torch.float64) if w is None else w.double()
    valid = t != ii
    ts = torch.where(valid, t, 0)
    logp = xc - torch.logsumexp(xc, -1, keepdim=True)
    ce_ = torch.where(valid, (1 - ls) * -w64[ts] * logp.gather(1, ts[:, None])[:, 0] - ls / V * (logp * w64).sum(-1), 0.0)
    lse = torch.logsumexp(xc, -1)
    z = torch.where(valid, zs * lse * lse, 0.0)
    ce_, z = ce_.sum(), z.sum()
    if reduction == "mean":
        ce_ = ce_ / torch.where(valid, w64[ts], 0.0).sum()
        z = z / valid.sum()
    g, = torch.autograd.grad((ce_ + z, z), (x64,), (torch.tensor(gl, dtype=torch.float64),
                                                      torch.tensor(gz, dtype=torch.float64)))
    return (ce_ + z).item(), z.item(), g


def run(R, V, dtype, opts, reduction, programs, block_n, aligned, grads, fast):
    has_w, ls, zs, cap, ii = opts
    x = (torch.randn(R, V) * 3).to(dtype)
    if V > 10:  # a logit far above the target's: the re-sum path (row 1, and the last row: a tail row with TAIL)
        x[1, 5] = x[R - 1, 5] = 120.0 if dtype != torch.float16 else 60000.0
    t = torch.randint(0, V, (R,))
    t[::3] = ii
    w = torch.rand(V) + 0.5 if has_w else None
    w32 = w if has_w else torch.ones(1)
    x_orig = x.clone()
    valid = t != ii
    ts = torch.where(valid, t, 0)
    stats = torch.zeros(3)
    sync = torch.full((programs + 1,), 7, dtype=torch.int32)  # the stats kernel zeroes it
    slots = torch.full((programs,), float("nan"))
    ce.cross_entropy_stats_kernel[(1,)](t, w32, stats, sync, R, V, ii, int(has_w), programs + 1, BLOCK=1024)
    assert not sync.any(), "stats kernel left the tail counters"
    tail = fast and aligned  # the build's TAIL variants (16384 x 32 warps, aligned): here at the small blocks
    align = 16 // x.element_size() if aligned else 1
    ce_row, z_row, lse = torch.empty(R), torch.empty(R), torch.empty(R)
    dx = torch.full_like(x, float("nan"))
    ce.cross_entropy_fwd_grad_kernel[(programs,)](
        x, t, w32, stats, ce_row, z_row, lse, dx, sync, slots, R, V // align, V // align, V // align, ii, ls, zs,
        cap or 1.0, int(has_w), int(cap is not None), int(reduction == "mean"), BLOCK_N=block_n, ALIGN=align,
        ACCURATE=dtype == torch.float32, FAST=fast, TAIL=tail)
    assert torch.equal(x, x_orig), "logits modified"
    # the inference / fused_linear_cross_entropy kernel with store_grad: the same loss terms, and the same
    # gradient written over its logits
    x_in = x.clone()
    ce_in, z_in, lse_in = torch.empty(R), torch.empty(R), torch.empty(R)
    ce.cross_entropy_fwd_kernel[(R,)](
        x_in, t, w32, stats, ce_in, z_in, lse_in, V // align, V // align, ii, ls, zs, cap or 1.0, int(has_w),
        int(cap is not None), 1, int(reduction == "mean"), BLOCK_N=block_n, ALIGN=align,
        ACCURATE=dtype == torch.float32, FAST=fast)
    gscale = dx.double().abs().max().item() or 1.0
    in_place_err = max((ce_in.double() - ce_row.double()).abs().max().item() / max(1.0, ce_row.abs().max().item()),
                       (x_in.double() - dx.double()).abs().max().item() / gscale)
    assert in_place_err <= 4 * TOL[dtype], f"store_grad kernel differs from the training forward: {in_place_err}"
    loss_sum, z_sum = ce_row.double().sum().item(), z_row.double().sum().item()
    if reduction == "mean":
        loss_sum, z_sum = loss_sum / stats[0].item(), z_sum / stats[1].item()
    loss = loss_sum + z_sum
    errs = {}
    for gl, gz in grads:
        rl, rz, g64 = ref(x, t, w, ii, ls, zs, cap, reduction, gl, gz)
        out = dx.clone()
        gld, gzd = torch.tensor(gl, dtype=dtype), torch.tensor(gz, dtype=dtype)
        ce.cross_entropy_bwd_kernel[(programs,)](
            x, t, w32, stats, lse, gld, gzd, out, R, V // align, V // align, V // align, 0, ii, ls, zs, cap or 1.0,
            int(has_w), int(cap is not None), int(reduction == "mean"), 1, 1, BLOCK_N=block_n, ALIGN=align,
            ACCURATE=dtype == torch.float32)
        if gz == 0.0:  # no z_loss gradient (has_grad_z 0, the pointer not read) is a zero one
            out0 = dx.clone()
            ce.cross_entropy_bwd_kernel[(programs,)](
                x, t, w32, stats, lse, gld, gld, out0, R, V // align, V // align, V // align, 0, ii, ls, zs,
                cap or 1.0, int(has_w), int(cap is not None), int(reduction == "mean"), 1, 0, BLOCK_N=block_n,
                ALIGN=align, ACCURATE=dtype == torch.float32)
            assert torch.equal(out0, out), "has_grad_z 0 differs from a zero z_loss gradient"
        unit = gl == 1.0 and gz == 0.0
        if unit:
            assert torch.equal(out, dx), "skip_unit rewrote the buffer"
        # relative to the gradient or, where its terms cancel (one class: exactly 0), to the size of those terms
        d = stats[0].item() if reduction == "mean" else 1.0
        terms = (abs(gl) * (w.max().item() if has_w else 1.0) * (1 + ls)
                 + abs(gz) * 2 * zs * lse.abs().max().item()) / max(d, 1e-30)
        errs[(gl, gz)] = (out.double() - g64).abs().max().item() / max(g64.abs().max().item(), terms, 1e-30)
    # rows where the re-sum path ran: row 1 when not ignored
    return abs(loss - rl) / max(1.0, abs(rl)), errs


OPTS = {
    "plain": (False, 0.0, 0.0, None, -100),
    "weight_smooth": (True, 0.2, 0.0, None, 3),
    "zloss": (False, 0.0, 1e-2, None, -100),
    "softcap": (False, 0.0, 0.0, 4.0, -1),
    "all": (True, 0.15, 1e-3, 10.0, 0),
}
GRADS = ((1.0, 0.0), (0.375, 0.0), (2.0, 0.0), (1.0, 0.5), (0.375, -1.25))
TOL = {torch.float32: 1e-5, torch.bfloat16: 2**-7, torch.float16: 2**-10}

worst = 0.0
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for V, block_n, aligned in ((1000, 1024, True), (4099, 1024, False), (4096, 4096, True), (1, 1024, False),
                                (37, 1024, False)):
        for name, opts in OPTS.items():
            for reduction in ("mean", "sum"):
                if V == 1 and opts[4] == 0:
                    continue
                # FAST (the launcher's choice without weight, soft-cap or smoothing) and the general loops
                # (7, 3): the tail row (6) is ignored; (11, 5): split over 5 parts
                for fast, (R, programs) in [
                        (f, g) for f in ((False, True) if not opts[0] and opts[1] == 0 and opts[3] is None else (False,))
                        for g in ((7, 3), (11, 5))]:
                    lerr, gerrs = run(R, V, dtype, opts, reduction, programs, block_n, aligned, GRADS, fast)
                    gerr = max(gerrs.values())
                    bad = lerr > TOL[dtype] * 2 or gerr > TOL[dtype] * 2
                    worst = max(worst, gerr / TOL[dtype])
                    print(f"{str(dtype)[6:]:8} V={V:5} B={block_n:5} al={int(aligned)} {name:13} {reduction:4} "
                          f"fast={int(fast)} R={R:2}/{programs} loss rel {lerr:.2e} grad rel(max over grads) {gerr:.2e}"
                          + ("  <-- BAD" if bad else ""), flush=True)
print("worst grad error / dtype tolerance:", worst)
