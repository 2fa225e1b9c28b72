"""End-to-end training step: a Llama-3-style 1.5 B model, unpatched Hugging Face vs Liger-Kernel vs liger_aot.

    python benchmarks/bench_e2e.py              # 4x4096, 8x4096, 2x16384 and the longest sequence at batch 1
    python benchmarks/bench_e2e.py --quick      # 4x4096 only (~2 min)
    python benchmarks/bench_e2e.py --results    # also append to benchmarks/results/<gpu>.md
    python benchmarks/bench_e2e.py --no-search  # the three shapes only (~3 min); --shapes "" for the search only

The model of issue 7: hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 KV heads, vocabulary 128256, untied
head, SDPA attention, bf16 weights, random init; AdamW (fused), labels = inputs. Each provider runs in its own
process (the patches are process-wide, and peak memory must not inherit another provider's cache), built from the
same seed: tokens/s over the timed steps (wall clock, synchronized) and the peak of torch.cuda.max_memory_allocated
during them (weights, gradients, AdamW state and activations). A configuration that runs out of memory is reported
as OOM. The longest sequence at batch 1 is found by doubling from 4096 and bisecting to a multiple of 2048.
"""
import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROVIDERS = ("huggingface", "liger_kernel", "liger_aot")
LABEL = {"huggingface": "HF (unpatched)", "liger_kernel": "Liger-Kernel", "liger_aot": "liger_aot"}
SHAPES = ((4, 4096), (8, 4096), (2, 16384))
MODEL = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, max_position_embeddings=262144,
             rope_theta=500000.0, rms_norm_eps=1e-5, hidden_act="silu")
# Issue 7's figures for the reference points (tokens/s, peak GB), measured on the H200 with transformers 5.17.
ISSUE = {(4, 4096): {"huggingface": (46.6e3, 62.6), "liger_kernel": (59.1e3, 27.8)},
         (8, 4096): {"huggingface": (48.4e3, 116.8), "liger_kernel": (62.7e3, 46.7)},
         (2, 16384): {"huggingface": (36.9e3, 116.8), "liger_kernel": (44.9e3, 46.7)}}
RESULT = "RESULT "
DEVICE = "cuda"


# ---- worker: one provider, in its own process -------------------------------------------------------------------

ATTENTION = ("sdpa", "sdpa-cudnn", "liger_flash")
_FORWARD_CONTEXT = contextlib.nullcontext  # what every forward runs under (--attention sdpa-cudnn: a backend order)


def _patch(provider: str, attention: str) -> str:
    """Applies the provider's patch; returns the attn_implementation to build the model with."""
    global _FORWARD_CONTEXT
    if provider == "liger_kernel":
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama()
    elif provider == "liger_aot":
        harness.import_liger_aot()
        from liger_aot.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama()
        if attention == "liger_flash":
            import liger_aot.attention  # noqa: F401,F811  (registers "liger_flash")
            return "liger_flash"
        if attention == "sdpa-cudnn":
            # SDPA tries FlashAttention first; this puts cuDNN's kernels first (shapes it cannot serve fall back).
            from torch.nn.attention import SDPBackend, sdpa_kernel
            order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                     SDPBackend.MATH]
            _FORWARD_CONTEXT = lambda: sdpa_kernel(order, set_priority=True)  # noqa: E731
    return "sdpa"


def _build(attn_implementation: str = "sdpa"):
    import transformers
    config = transformers.LlamaConfig(**MODEL)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation,
                                                              dtype=torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    _steps(model, opt, 1, 256, 1)  # allocates the AdamW state before anything is measured
    return model, opt


def _steps(model, opt, batch: int, seq: int, n: int) -> float:
    g = torch.Generator(device=DEVICE).manual_seed(batch * 100003 + seq)
    ids = torch.randint(0, MODEL["vocab_size"], (batch, seq), device=DEVICE, generator=g)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        with _FORWARD_CONTEXT():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def _measure(model, opt, batch: int, seq: int, warmup: int, steps: int) -> dict:
    """tokens/s and peak GB of ``steps`` training steps after ``warmup``, or {"oom": ...}."""
    oom = None
    try:
        _steps(model, opt, batch, seq, warmup)
        torch.cuda.reset_peak_memory_stats()
        elapsed = _steps(model, opt, batch, seq, steps)
        result = {"tokens_per_s": batch * seq * steps / elapsed, "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
                  "step_s": elapsed / steps}
    except torch.OutOfMemoryError as e:
        oom = str(e).splitlines()[0]
    if oom is not None:  # outside the except block: the traceback's frames (and their tensors) are gone
        opt.zero_grad(set_to_none=True)
        result = {"oom": oom, "peak_gb": torch.cuda.max_memory_allocated() / 1e9}
    gc.collect()
    torch.cuda.empty_cache()
    return result


def _fits(model, opt, seq: int) -> bool:
    # One step: the AdamW state exists from the first step of the process (_build runs one), so one step reaches
    # the peak; at 128 k tokens a step costs tens of seconds of attention.
    return "oom" not in _measure(model, opt, 1, seq, warmup=0, steps=1)


def _max_seq(model, opt, start: int = 4096, granule: int = 2048, limit: int = 262144) -> dict:
    ok, bad = 0, None
    seq = start
    while seq <= limit:
        if not _fits(model, opt, seq):
            bad = seq
            break
        ok, seq = seq, seq * 2
    if bad is None:
        return {"max_seq": ok, "capped": True}
    while bad - ok > granule:
        mid = (ok + bad) // 2 // granule * granule
        if mid <= ok:
            break
        if _fits(model, opt, mid):
            ok = mid
        else:
            bad = mid
    return {"max_seq": ok, "first_oom": bad}


def _profile(model, opt, batch: int, seq: int) -> None:
    """One training step under torch.profiler: GPU time by kernel family (to stderr-free stdout, for the log)."""
    from torch.profiler import ProfilerActivity, profile
    _steps(model, opt, batch, seq, 1)  # the step before the profiled one, so that the profiler starts warm
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        wall = _steps(model, opt, batch, seq, 1)
    # first match wins: attention kernels (PyTorch flash, cuDNN, liger_flash), cuBLAS/CUTLASS, the fused AdamW,
    # other ATen kernels, then Triton kernels (ours or Liger-Kernel's: names end in _kernel), then the rest
    families = {"attention": ("flash", "fmha", "attn", "sdpa", "cudnn"),
                "gemm": ("gemm", "sm90_xmma", "cutlass", "nvjet", "cublas"), "adamw": ("adam", "multi_tensor"),
                "aten": ("at::native", "void at::", "at_cuda"), "triton": ("_kernel",), "other": ("",)}
    total, by = 0.0, {k: 0.0 for k in families}
    kernels = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0)
        if t <= 0 or e.key.startswith("cuda") or "Memcpy" in e.key or "Memset" in e.key:
            continue
        total += t
        kernels[e.key] = kernels.get(e.key, 0.0) + t
        name = e.key.lower()
        by[next(k for k, subs in families.items() if any(x in name for x in subs))] += t
    print(f"  profile {batch}x{seq}: GPU {total / 1e3:.1f} ms/step: "
          + ", ".join(f"{k} {v / 1e3:.1f}" for k, v in by.items()), flush=True)
    for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {v / 1e3:8.2f} ms  {k[:110]}", flush=True)
    _gaps(prof, wall)


def _gaps(prof, wall: float) -> None:
    """Where the GPU waits: the step's wall time against its kernels' span and busy time, and the longest idle
    stretches between consecutive kernels (the kernels on either side name the host work in between)."""
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                      and e.time_range.end > e.time_range.start), key=lambda e: e.time_range.start)
    if not kernels:
        return
    busy, idle, end = 0.0, [], kernels[0].time_range.start
    prev = None
    for e in kernels:
        start, stop = e.time_range.start, e.time_range.end
        if start > end and prev is not None:
            idle.append((start - end, prev.name, e.name))
        busy += max(0.0, stop - max(start, end))
        end, prev = max(end, stop), e
    span = end - kernels[0].time_range.start
    print(f"  timeline: wall {wall * 1e3:.1f} ms, kernels span {span / 1e3:.1f} ms, busy {busy / 1e3:.1f} ms, "
          f"idle {sum(i[0] for i in idle) / 1e3:.1f} ms in {len(idle)} gaps "
          f"({sum(i[0] for i in idle if i[0] > 50) / 1e3:.1f} ms in gaps over 50 us)", flush=True)
    for gap, before, after in sorted(idle, reverse=True)[:10]:
        print(f"    gap {gap / 1e3:7.3f} ms  after {before[:60]}  before {after[:60]}", flush=True)


def worker(args) -> None:
    try:
        attn = _patch(args.worker, args.attention)
    except Exception as e:  # noqa: BLE001  (an optional provider may fail to import for any reason)
        print(RESULT + json.dumps({"skipped": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}),
              flush=True)
        return
    model, opt = _build(attn)
    for batch, seq in (tuple(map(int, s.split("x"))) for s in args.shapes.split(",") if s):
        r = _measure(model, opt, batch, seq, args.warmup, args.steps)
        print(RESULT + json.dumps({"shape": [batch, seq], **r}), flush=True)
        if args.profile:
            _profile(model, opt, batch, seq)
    if args.search:
        print(RESULT + json.dumps({"search": _max_seq(model, opt)}), flush=True)


# ---- driver -----------------------------------------------------------------------------------------------------

def run_provider(provider: str, args, notes) -> dict:
    env = dict(os.environ)
    path = harness.liger_aot_path() or os.path.join(harness.REPO, "python")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", provider, "--shapes", args.shapes,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--attention", args.attention] \
        + ([] if args.search else ["--no-search"]) + (["--profile"] if args.profile else [])
    print(f"== {LABEL[provider]}", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = {"shapes": {}}
    for line in proc.stdout.splitlines():
        if not line.startswith(RESULT):
            if line.startswith(("  profile", "  timeline")) or line.startswith("    "):
                print(line, flush=True)  # --profile's lines
            continue
        r = json.loads(line[len(RESULT):])
        if "skipped" in r:
            notes.append(f"{LABEL[provider]} skipped: {r['skipped']}")
            out["skipped"] = True
        elif "shape" in r:
            shape = tuple(r.pop("shape"))
            out["shapes"][shape] = r
            if "oom" in r:
                print(f"  {shape[0]}x{shape[1]}: OUT OF MEMORY ({r['oom']})", flush=True)
            else:
                print(f"  {shape[0]}x{shape[1]}: {r['tokens_per_s'] / 1e3:.1f} k tokens/s, peak {r['peak_gb']:.1f} GB",
                      flush=True)
        elif "search" in r:
            out["search"] = r["search"]
            print(f"  longest sequence at batch 1: {r['search']['max_seq']}", flush=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        notes.append(f"{LABEL[provider]}: worker exited with status {proc.returncode}: {tail[0]}")
        print(proc.stderr[-4000:], file=sys.stderr)
    return out


def tables(results: dict, shapes, search: bool) -> str:
    rows = ["| batch x seq | provider | k tokens/s | peak GB | vs HF tokens/s | vs HF memory | issue's figure |",
            "|---|---|--:|--:|--:|--:|---|"]
    for shape in shapes:
        hf = results.get("huggingface", {}).get("shapes", {}).get(shape, {})
        for p in PROVIDERS:
            r = results.get(p, {}).get("shapes", {}).get(shape)
            if r is None:
                continue
            ref = ISSUE.get(shape, {}).get(p)
            ref_s = f"{ref[0] / 1e3:.1f} k / {ref[1]:.1f} GB" if ref else ""
            if "oom" in r:
                rows.append(f"| {shape[0]}x{shape[1]} | {LABEL[p]} | OOM | > {r['peak_gb']:.1f} | | | {ref_s} |")
                continue
            vs = (f"{r['tokens_per_s'] / hf['tokens_per_s']:.2f}x | {r['peak_gb'] / hf['peak_gb']:.2f}x"
                  if "tokens_per_s" in hf else " | ")
            rows.append(f"| {shape[0]}x{shape[1]} | {LABEL[p]} | {r['tokens_per_s'] / 1e3:.1f} | {r['peak_gb']:.1f} "
                        f"| {vs} | {ref_s} |")
    out = ["\n".join(rows)]
    lines = []
    for shape in shapes:  # the issue's targets: >= 1.15x Liger-Kernel's tokens/s at <= its peak memory
        a = results.get("liger_aot", {}).get("shapes", {}).get(shape, {})
        k = results.get("liger_kernel", {}).get("shapes", {}).get(shape, {})
        if "tokens_per_s" in a and "tokens_per_s" in k:
            speed, mem = a["tokens_per_s"] / k["tokens_per_s"], a["peak_gb"] / k["peak_gb"]
            ok = speed >= 1.15 and mem <= 1.0
            lines.append(f"- {shape[0]}x{shape[1]}: liger_aot / Liger-Kernel = {speed:.2f}x tokens/s at {mem:.2f}x "
                         f"peak memory (target >= 1.15x at <= 1.00x): {'met' if ok else 'NOT met'}")
    if search:
        s = {p: results.get(p, {}).get("search") for p in PROVIDERS}
        cells = [f"{LABEL[p]} {v['max_seq']}" + (" (cap)" if v.get("capped") else "") for p, v in s.items() if v]
        if cells:
            out.append("Longest sequence at batch 1 (multiple of 2048, one training step): " + ", ".join(cells) + ".")
        if s["liger_aot"] and s["huggingface"]:
            r = s["liger_aot"]["max_seq"] / s["huggingface"]["max_seq"]
            lines.append(f"- longest sequence, liger_aot / HF = {r:.2f}x (target >= 2x): "
                         f"{'met' if r >= 2 else 'NOT met'}")
    if lines:
        out.append("Targets of issue 7:\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4x4096 only, no sequence-length search")
    parser.add_argument("--no-search", dest="search", action="store_false", help="skip the sequence-length search")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated subset of " +
                        ", ".join(PROVIDERS))
    parser.add_argument("--shapes", default=",".join(f"{b}x{s}" for b, s in SHAPES),
                        help="BxS,... (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    parser.add_argument("--attention", choices=ATTENTION, default="sdpa",
                        help="liger_aot's attention: HF's SDPA as is (default), SDPA with cuDNN first, or liger_flash")
    parser.add_argument("--profile", action="store_true", help="after each shape, one profiled step per provider: "
                        "GPU time by kernel family, the top kernels and the step's "
                        "timeline (wall, busy, the longest gaps between kernels)")
    parser.add_argument("--worker", choices=PROVIDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_e2e: needs a CUDA GPU")
    if args.worker:
        return worker(args)
    if args.quick:
        args.shapes, args.search = "4x4096", False
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",") if s]
    notes = []
    results = {p: run_provider(p, args, notes) for p in args.providers.split(",")}
    harness.import_liger_aot()  # for the header's version line (this process touches the GPU only from here on)
    import transformers
    header = harness.environment_header("end-to-end training step, Llama-3-style 1.5 B, bf16, AdamW"
                                        + (" (--quick)" if args.quick else ""))
    alloc = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    header += (f"\n- transformers {transformers.__version__}; {args.warmup} warm-up + {args.steps} timed steps per "
               f"shape; workers run with PYTORCH_CUDA_ALLOC_CONF={alloc}"
               + (f"; liger_aot's attention: {args.attention}" if args.attention != "sdpa" else ""))
    print("\n" + header)
    harness.report(header, ["Tokens/s over the timed steps (forward, backward, AdamW step; wall clock, synchronized), "
                            "peak torch.cuda.max_memory_allocated during them.\n\n" + tables(results, shapes, args.search)],
                   notes, args.results)


if __name__ == "__main__":
    main()
