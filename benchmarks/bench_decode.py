"""Decode latency: batch 1, one new token per step with a static KV cache, Llama-3.2-1B shapes, random weights, bf16.

    python benchmarks/bench_decode.py                     # ~2 min on an H200
    python benchmarks/bench_decode.py --results           # also append to benchmarks/results/<gpu>.md
    python benchmarks/bench_decode.py --config tiny --context 32 --steps 50    # a quick smoke run
    python benchmarks/bench_decode.py --compile           # adds torch.compile(mode="reduce-overhead") rows

The model is examples/deploy/tiny_llama.py's TinyLlama on three backends with the same weights: "unpatched" (Hugging
Face Llama's formulas in PyTorch, SDPA attention), "liger_aot" (liger::fused_add_rms_norm, rope, swiglu and, with the
default --attention liger_flash, liger::flash_attn_varlen over the cache) and "Liger-Kernel" (its RMSNorm, RoPE and
SwiGLU Functions, what its Llama patch runs, SDPA attention; skipped when liger_kernel is not installed). Each runs
eagerly and replayed from one CUDA graph capture of the decode step (torch.cuda.graph).

Per step, at position --context of the cache:
- host µs: wall time of the step's Python call, the device idle before it (synchronized before each step, not after:
  the launches never wait for the GPU), median over --steps steps, the providers taking turns 10 steps at a time
  (the host's speed drifts during a run). What the issue's host figures compare.
- GPU µs: device time of the step, its launches queued behind a spin kernel so that the host's launch latency is
  not counted (CUDA events, median).
- step µs: one token's latency in a loop of --steps back-to-back steps (CUDA events around the loop / steps): the
  larger of the two above, plus whatever does not overlap.

Figures to reach (issue 8): liger_aot's host time <= 0.5x unpatched eager's and <= 0.3x Liger-Kernel's; with CUDA
graphs, liger_aot's step no slower than unpatched's.
"""
import argparse
import gc
import os
import statistics
import sys
import time

import torch

import harness

sys.path.insert(0, os.path.join(harness.REPO, "examples", "deploy"))


def host_us(steps: dict, n: int, chunk: int = 10) -> dict:
    """Median wall µs of one step() call with the device idle before it, for each {label: step}.

    The providers take turns, `chunk` steps each, until each has run n: this box's host speed drifts by tens of
    per cent over a run, and measured one after the other the providers' figures would carry that drift."""
    times = {label: [] for label in steps}
    gc.collect()
    gc.disable()
    try:
        while any(len(t) < n for t in times.values()):
            for label, step in steps.items():
                for _ in range(min(chunk, n - len(times[label]))):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    step()
                    times[label].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    torch.cuda.synchronize()
    return {label: statistics.median(t) * 1e6 for label, t in times.items()}


def spin_cycles_per_us() -> float:
    """GPU clock cycles that torch.cuda._sleep spins per µs (calibrated with events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    torch.cuda.synchronize()
    return 10_000_000 / (start.elapsed_time(end) * 1e3)


def gpu_us(step, n: int, hold_us: float, cycles_per_us: float) -> float:
    """Median device µs of one step, its launches queued behind a spin of hold_us (longer than the host needs)."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        torch.cuda._sleep(int(hold_us * cycles_per_us))
        starts[i].record()
        step()
        ends[i].record()
        ends[i].synchronize()  # the next hold must start on an idle stream
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def loop_us(step, n: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / n


def make_steps(model, mode: str, context: int):
    """(step(), logits of one step): the decode of one token at position `context`, eager or replayed from a graph."""
    import cuda_graph_decode

    cache = model.new_cache(1)
    g = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, model.config.vocab_size, (1, context), device="cuda", generator=g)
    token = torch.randint(0, model.config.vocab_size, (1, 1), device="cuda", generator=g)
    position = torch.full((1,), context, dtype=torch.long, device="cuda")
    with torch.no_grad():
        model.prefill(prompt, cache)
        if mode == "eager":
            def step():
                return model.decode(token, position, cache)
        elif mode == "CUDA graph":
            replay = cuda_graph_decode.graphed_decode(model, cache)

            def step():
                return replay(token, position)
        elif mode == "torch.compile":
            compiled = torch.compile(model.decode, mode="reduce-overhead", fullgraph=True)

            def step():
                return compiled(token, position, cache)
        else:
            raise ValueError(mode)
        for _ in range(3):  # warm-up: loads kernels, JIT-compiles Triton (Liger-Kernel), records graphs
            logits = step().clone()
    torch.cuda.synchronize()
    return step, logits


def host_profile(model, context: int, steps: int = 20, top: int = 18) -> str:
    """The ops of one eager decode step by host (CPU) time, self and total, per step: what to cut to reach the
    issue's host figures."""
    from torch.profiler import ProfilerActivity, profile

    step, _ = make_steps(model, "eager", context)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
            torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    lines = [f"    {'op':<44} {'calls/step':>10} {'self µs/step':>13} {'total µs/step':>14}"]
    for e in rows:
        lines.append(f"    {e.key[:44]:<44} {e.count / steps:10.1f} {e.self_cpu_time_total / steps:13.1f} "
                     f"{e.cpu_time_total / steps:14.1f}")
    return "\n".join(lines)


def _load_liger_kernel():
    # what tiny_llama's "liger_kernel" backend imports
    from liger_kernel.ops import rms_norm, rope, swiglu
    return rms_norm, rope, swiglu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("llama3-1b", "tiny"), default="llama3-1b")
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--context", type=int, default=512, help="tokens already in the cache")
    parser.add_argument("--steps", type=int, default=200, help="steps per measurement")
    parser.add_argument("--attention", choices=("liger_flash", "sdpa"), default="liger_flash",
                        help="liger_aot's decode attention (the others use SDPA)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile(mode='reduce-overhead') rows")
    parser.add_argument("--profile", action="store_true",
                        help="also list where each provider's eager step spends host time (torch.profiler, CPU side)")
    parser.add_argument("--results", nargs="?", const=True, default=None,
                        help="append the table to benchmarks/results/<gpu>.md (or to the path given)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_decode: needs a CUDA device")

    notes = []
    harness.import_liger_aot()
    import tiny_llama as tl

    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    dtype = harness.DTYPES[args.dtype]
    config = tl.LlamaConfig.llama3_1b(max_seq_len=args.context + 64) if args.config == "llama3-1b" else \
        tl.LlamaConfig(max_seq_len=args.context + 64)
    torch.manual_seed(0)
    with torch.device("cuda"):
        unpatched = tl.TinyLlama(config, "torch", "sdpa").to(dtype).eval()
    models = {"unpatched": unpatched, "liger_aot": tl.same_weights(unpatched, "liger_aot", args.attention)}
    if liger_kernel is not None:
        models["Liger-Kernel"] = tl.same_weights(unpatched, "liger_kernel", "sdpa")
    modes = ["eager", "CUDA graph"] + (["torch.compile"] if args.compile else [])
    params = sum(p.numel() for p in unpatched.parameters())
    print(f"decode: {args.config} ({params / 1e9:.2f} B parameters, {config.num_layers} layers), {args.dtype}, batch 1, "
          f"context {args.context}, liger_aot attention {args.attention}", flush=True)

    cycles = spin_cycles_per_us()
    rows, reference = [], None
    for mode in modes:
        steps = {}

        def label_of(name):
            return f"{name} {mode}" if mode != "torch.compile" else f"{name} torch.compile(reduce-overhead)"

        for name, model in models.items():
            label = label_of(name)
            try:
                step, logits = make_steps(model, mode, args.context)
            except Exception as e:  # one failing provider must not lose the rest of the run
                notes.append(f"{label} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                print(f"  {label:<44} failed: {type(e).__name__}: {e}", flush=True)
                continue
            if reference is None:
                reference = logits.float()
            else:
                diff = (logits.float() - reference).abs().max().item()
                if diff > 0.05 * reference.abs().max().item():
                    notes.append(f"{label}: logits differ from unpatched eager by up to {diff:.3g}")
            steps[name] = step
        with torch.no_grad():
            hosts = host_us(steps, args.steps)
            for name, step in steps.items():
                label = label_of(name)
                host = hosts[name]
                device = gpu_us(step, min(args.steps, 100), hold_us=2 * host + 200, cycles_per_us=cycles)
                wall = loop_us(step, args.steps)
                rows.append((name, mode, host, device, wall))
                print(f"  {label:<44} host {host:8.1f} µs   GPU {device:8.1f} µs   step {wall:8.1f} µs", flush=True)
        steps = step = None
        torch.cuda.empty_cache()
        if args.profile and mode == "eager":
            for name, model in models.items():
                print(f"{name}:\n{host_profile(model, args.context)}", flush=True)

    by = {(n, m): (h, g, w) for n, m, h, g, w in rows}
    lines = ["| provider | mode | host µs/step | GPU µs/step | step µs (loop) | host vs unpatched eager |",
             "|---|---|--:|--:|--:|--:|"]
    base_host = by.get(("unpatched", "eager"), (None,))[0]
    for n, m, h, g, w in rows:
        ratio = f"{h / base_host:.2f}x" if base_host else "—"
        lines.append(f"| {n} | {m} | {h:.1f} | {g:.1f} | {w:.1f} | {ratio} |")
    figures = []

    def figure(text, ok):
        figures.append(f"- {text}: {'met' if ok else 'MISSED'}")

    ours = by.get(("liger_aot", "eager"))
    if ours and base_host:
        figure(f"liger_aot host {ours[0]:.1f} µs <= 0.5x unpatched eager {base_host:.1f} µs "
               f"({ours[0] / base_host:.2f}x)", ours[0] <= 0.5 * base_host)
    if ours and ("Liger-Kernel", "eager") in by:
        lk = by[("Liger-Kernel", "eager")][0]
        figure(f"liger_aot host {ours[0]:.1f} µs <= 0.3x Liger-Kernel {lk:.1f} µs ({ours[0] / lk:.2f}x)",
               ours[0] <= 0.3 * lk)
    graphs = by.get(("liger_aot", "CUDA graph")), by.get(("unpatched", "CUDA graph"))
    if all(graphs):
        figure(f"CUDA graph step: liger_aot {graphs[0][2]:.1f} µs <= unpatched {graphs[1][2]:.1f} µs "
               f"({graphs[0][2] / graphs[1][2]:.2f}x)", graphs[0][2] <= graphs[1][2])
    table = "\n".join(lines)
    print("\n" + table + "\n\n" + "\n".join(figures))
    for note in notes:
        print("note:", note)
    if args.results:
        path = harness.default_results_path() if args.results is True else args.results
        body = [harness.environment_header("Decode step (bench_decode.py)"), "",
                f"{args.config}, {args.dtype}, batch 1, context {args.context}, liger_aot attention {args.attention}; "
                f"host: median wall µs of one step's call (device idle before it); GPU: device µs of one step "
                f"(launches held behind a spin); step: µs per token in a loop of {args.steps} steps.", "", table, "",
                *figures]
        if notes:
            body += ["", *[f"- note: {n}" for n in notes]]
        harness.append_results(path, "\n".join(body))
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
