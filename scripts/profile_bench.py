"""Per-kernel device time of one benchmark case, every provider side by side (torch.profiler, CUDA activity).

    python scripts/profile_bench.py <op> <case> [mode ...]     # on the GPU box; e.g. fused_add_rms_norm 8192x16384 bwd

Builds the case and the providers exactly as benchmarks/bench_<op>.py does (its make_case and providers; the case
is named as the bench names it, ROWSxHIDDEN: make_case(hidden, dtype) or make_case(rows, hidden, dtype)),
runs each provider's timed callable (harness.timed_callable: fwd, bwd or full) a few times under the profiler, and
prints each kernel's mean time per call. What the benchmark's one figure hides: which kernels a provider launches,
and where an autograd copy or a cast goes in between. A kernel launched as a programmatic dependent (PDL: the
cross-entropy chain, softmax's and ReLU²'s backward) starts while the kernel before it runs and waits for it: its
time here includes that wait.
"""
import importlib
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402

CALLS = 5


def kernels(fn, grads):
    for _ in range(3):
        fn()
        for t in grads or ():
            t.grad = None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            fn()
            for t in grads or ():
                t.grad = None
        torch.cuda.synchronize()
    rows = [(e.device_time_total / CALLS, e.count // CALLS, e.key) for e in prof.key_averages()
            if e.device_time_total > 0]
    return sorted(rows, reverse=True)


def main():
    op, case_name, *modes = sys.argv[1:]
    bench = importlib.import_module(f"bench_{op}")
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    load_lk = getattr(bench, "_load_liger_kernel", None)
    liger_kernel = harness.optional(load_lk, "Liger-Kernel", notes) if load_lk else None
    print(*notes, sep="\n")
    sizes = [int(v) for v in case_name.split("x")]
    dt = harness.DTYPES["bf16"]
    # make_case(rows, hidden, dtype), make_case(shape, dtype) (group_norm) or make_case(hidden, dtype) (the bench
    # fixes the rows): the first form that builds the case named on the command line (a make_case(hidden, dtype)
    # also accepts a shape tuple as its hidden size, and names the case after it)
    for args in ((*sizes, dt), (tuple(sizes), dt), (sizes[-1], dt)):
        try:
            case = bench.make_case(*args)
        except TypeError:
            continue
        if case.name == case_name:
            break
    else:
        sys.exit(f"bench_{op}.make_case builds no case named {case_name} from (rows, hidden, dtype), (shape, dtype) "
                 "or (hidden, dtype)")
    inputs = case.make()
    for mode in modes or ["fwd", "bwd"]:
        for p in bench.providers(liger_aot, liger_kernel):
            if p.modes is not None and mode not in p.modes:  # e.g. a no-grad forward: "fwd" only, as the bench
                continue
            grads = list(inputs.leaves) if mode != "fwd" else None
            fn = harness.timed_callable(lambda fn=p.fn: fn(*inputs.args), mode, inputs.grad_out.clone())
            rows = kernels(fn, grads)
            total = sum(r[0] for r in rows)
            print(f"\n{case_name} {mode} {p.name}: {total:.1f} us of kernels per call")
            for us, n, name in rows:
                print(f"  {us:9.1f} us  x{n}  {name[:110]}")
            fn = None
            for t in inputs.leaves:
                t.grad = None


if __name__ == "__main__":
    main()
