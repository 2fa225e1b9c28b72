"""A target for Nsight Compute: GroupNorm's register kernel (the build's, JIT) at bf16 [32, 512, 64, 64], a few
launches, and (with "ring") scripts/gn_ring_probe.py's Gluon kernel.

    ncu --clock-control none --set full -k regex:group_norm_fwd_regs -c 1 -s 2 python3 scripts/gn_ncu_target.py
"""
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import triton_src.group_norm as gn  # noqa: E402


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n, c, hw, g = 32, 512, 4096, 32
    x = torch.randn(n, c, hw, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    for _ in range(4):
        gn.group_norm_fwd_regs_kernel[(n * g,)](x, w, b, y, mean, rstd, n, c, 16, g, 1e-5, True, True, True, sms // 2,
                                                BLOCK_C=16, BLOCK_HW=hw, num_warps=32)
    if "ring" in sys.argv:
        import gn_ring_probe as rp
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
        for _ in range(4):
            rp.gn_ring2_kernel[(sms,)](x, w, b, y, mean, rstd, n * g, x.numel() // 256, g, 16, 1e-5, SLOTS=13,
                                       NCH=8, RPC=16, SMEM5=True, num_warps=16)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
