"""liger_aot demo: train a small Llama-style model with and without liger_aot, side by side.

    make demo                       # or: python examples/demo.py [--steps 40] [--png demo_loss.png]

Both runs start from the same weights and see the same batches; the patched one calls
``liger_aot.transformers.apply_liger_kernel_to_llama()`` first (RMSNorm, SwiGLU, RoPE and the fused linear
cross-entropy, which never builds the logits). Printed: the loss at every few steps, tokens/s and peak memory of
each run; written: a PNG of the two loss curves. On a GPU the kernels run (bf16); without one the operators' CPU
reference path runs (fp32, a smaller model), which shows the patched model trains the same but says nothing
about speed.
"""
import argparse
import math
import os
import struct
import sys
import time
import zlib

import torch

import liger_aot


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--png", default="demo_loss.png", help="where to write the loss curves (default: %(default)s)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is present")
    return p.parse_args()


def setup(device):
    """(model config, batch, sequence length, dtype) sized for the device."""
    import transformers

    if device == "cuda":
        cfg = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=16,
                   num_key_value_heads=4, vocab_size=32000)
        return transformers.LlamaConfig(**cfg, tie_word_embeddings=False), 8, 2048, torch.bfloat16
    cfg = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=512)
    return transformers.LlamaConfig(**cfg, tie_word_embeddings=False), 4, 128, torch.float32


def batches(n, batch, seq, vocab, device):
    """Learnable synthetic text: each row counts up from a random start by a random stride (mod a small range),
    so the next token follows from the previous two."""
    g = torch.Generator().manual_seed(1234)
    span = min(vocab, 500)
    out = []
    for _ in range(n):
        start = torch.randint(0, span, (batch, 1), generator=g)
        stride = torch.randint(1, 8, (batch, 1), generator=g)
        ids = (start + stride * torch.arange(seq)) % span
        out.append(ids.to(device))
    return out


def train(model, data, device):
    """Loss per step, tokens/s (after three warm-up steps) and peak memory of AdamW training on ``data``."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3 if device == "cpu" else 1e-3)
    model.train()
    losses = []
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, skip = None, min(3, len(data) - 1)
    for i, ids in enumerate(data):
        if i == skip:  # the first steps allocate the optimizer state and warm up kernels and caches: not timed
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    tokens = sum(ids.numel() for ids in data[skip:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return losses, tokens / elapsed, peak


# ---- the loss-curve PNG: matplotlib when installed, else a small writer of our own --------------------------------

def plot(path, curves, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_png(path, curves)
        return "matplotlib is not installed: drawn by the demo's own PNG writer"
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, ys, color in curves:
        ax.plot(range(1, len(ys) + 1), ys, label=label, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return "matplotlib"


# 5x7 glyphs (one 5-bit row per entry, top first) for the few labels the fallback writer draws.
_FONT = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12), ".": (0, 0, 0, 0, 0, 12, 12), " ": (0,) * 7, "_": (0, 0, 0, 0, 0, 0, 31),
    "A": (14, 17, 17, 31, 17, 17, 17), "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17), "I": (14, 4, 4, 4, 4, 4, 14),
    "L": (16, 16, 16, 16, 16, 16, 31), "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "R": (30, 17, 17, 30, 20, 18, 17), "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
}


def write_png(path, curves, w=800, h=500, margin=60):
    """An RGB PNG of the curves on axes, with the loss range, step count and a legend (zlib and the PNG chunk
    format; no dependency)."""
    px = bytearray(b"\xff" * (w * h * 3))

    def put(x, y, rgb):
        if 0 <= x < w and 0 <= y < h:
            i = (y * w + x) * 3
            px[i:i + 3] = bytes(rgb)

    def line(x0, y0, x1, y1, rgb, thick=1):
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for k in range(n + 1):
            x, y = round(x0 + (x1 - x0) * k / n), round(y0 + (y1 - y0) * k / n)
            for dx in range(-thick + 1, thick):
                for dy in range(-thick + 1, thick):
                    put(x + dx, y + dy, rgb)

    def text(x, y, s, rgb=(0, 0, 0), scale=2):
        for c in s.upper():
            for r, bits in enumerate(_FONT.get(c, _FONT[" "])):
                for col in range(5):
                    if bits >> (4 - col) & 1:
                        for dx in range(scale):
                            for dy in range(scale):
                                put(x + col * scale + dx, y + r * scale + dy, rgb)
            x += 6 * scale

    ys_all = [y for _, ys, _ in curves for y in ys]
    lo, hi = min(ys_all), max(ys_all)
    hi = hi if hi > lo else lo + 1
    n = max(len(ys) for _, ys, _ in curves)
    grey = (200, 200, 200)
    for k in range(5):  # horizontal grid lines at 0, 25, 50, 75, 100 % of the loss range
        y = h - margin - round((h - 2 * margin) * k / 4)
        line(margin, y, w - margin, y, grey)
        text(4, y - 7, f"{lo + (hi - lo) * k / 4:.2f}", scale=1)
    line(margin, h - margin, w - margin, h - margin, (0, 0, 0))
    line(margin, margin, margin, h - margin, (0, 0, 0))
    text(margin, h - margin + 8, "1", scale=2)
    text(w - margin - 24, h - margin + 8, str(n), scale=2)
    text(w // 2 - 24, h - margin + 24, "STEP", scale=2)
    colors = {"tab:blue": (31, 119, 180), "tab:orange": (255, 127, 14)}
    for j, (label, ys, color) in enumerate(curves):
        rgb = colors.get(color, (0, 0, 0))
        pts = [(margin + round((w - 2 * margin) * i / max(n - 1, 1)),
                h - margin - round((h - 2 * margin) * (y - lo) / (hi - lo))) for i, y in enumerate(ys)]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            line(x0, y0, x1, y1, rgb, thick=3 - j)  # the second curve thinner, so both show where they coincide
        line(w - 260, 20 + 20 * j + 7, w - 230, 20 + 20 * j + 7, rgb, thick=2)
        text(w - 220, 20 + 20 * j, label.replace("Hugging Face", "HF"), rgb)
    raw = b"".join(b"\x00" + bytes(px[r * w * 3:(r + 1) * w * 3]) for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    args = parse_args()
    info = liger_aot.build_info()
    print(f"liger_aot {info['version']}: cubins for {', '.join(info['archs'])} from triton {info['triton_version']}, "
          f"{sum(info['kernels'].values())} kernel variants; built against torch {info['torch_version']}")
    try:
        import transformers
    except ImportError:
        sys.exit("the demo trains a Hugging Face model: pip install 'transformers==5.17.0' (make deps installs it)")
    from liger_aot.transformers import apply_liger_kernel_to_llama

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    config, batch, seq, dtype = setup(device)
    if device == "cpu":
        print("No GPU here: both runs use the CPU, where liger_aot's operators run their reference "
              "implementation (ATen ops). This shows that the patched model trains like the unpatched one; "
              "tokens/s on the CPU say nothing about the GPU kernels.")
    data = batches(args.steps, batch, seq, config.vocab_size, device)
    print(f"[{device}] Llama-style model: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
          f"vocabulary {config.vocab_size}, {str(dtype).replace('torch.', '')}; batch {batch} x {seq} tokens, "
          f"{args.steps} AdamW steps; transformers {transformers.__version__}")

    def build():
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device, dtype)

    model = build()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # Whichever run comes first in a process pays for thread pools, allocator growth and library start-up (8x
    # slower tokens/s on the CPU over its first dozen steps, measured): a throwaway run goes first.
    train(build(), data[:6], device)
    hf = train(model, data, device)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    apply_liger_kernel_to_llama()  # patches the classes: the next model is built with liger_aot's modules
    model = build()
    model.load_state_dict(state)  # same parameter names: the state dict loads unchanged
    ours = train(model, data, device)

    print(f"\n{'step':>5} {'HF loss':>10} {'liger_aot':>10}")
    for i in sorted({*range(0, args.steps, max(1, args.steps // 10)), args.steps - 1}):
        print(f"{i + 1:>5} {hf[0][i]:>10.4f} {ours[0][i]:>10.4f}")
    diff = max(abs(a - b) for a, b in zip(hf[0], ours[0]))
    print(f"\n{'':>14} {'tokens/s':>10} {'peak memory':>12} {'final loss':>11}")
    for name, (losses, tps, peak) in (("Hugging Face", hf), ("liger_aot", ours)):
        print(f"{name:>14} {tps:>10,.0f} {f'{peak:.2f} GiB' if peak is not None else 'n/a (CPU)':>12} "
              f"{losses[-1]:>11.4f}")
    if device == "cuda":
        print(f"liger_aot: {ours[1] / hf[1]:.2f}x the tokens/s at {ours[2] / hf[2]:.2f}x the peak memory")
    rounding = "bf16 rounding" if dtype == torch.bfloat16 else "fp32 rounding"
    print(f"largest loss difference over the {args.steps} steps: {diff:.2e} ({rounding}; "
          f"loss {hf[0][0]:.2f} -> {hf[0][-1]:.2f})")
    if not all(map(math.isfinite, ours[0])):
        sys.exit("the patched run produced a non-finite loss")

    how = plot(args.png, [("Hugging Face", hf[0], "tab:blue"), ("liger_aot", ours[0], "tab:orange")],
               f"{config.num_hidden_layers}-layer Llama-style model on {device}")
    print(f"loss curves written to {os.path.abspath(args.png)} ({how})")


if __name__ == "__main__":
    main()
