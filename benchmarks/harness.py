"""Shared benchmark harness: every ``bench_<op>.py`` times its providers through these functions.

Device time comes from CUDA events, as ``triton.testing.do_bench`` takes it (median, L2 flushed before
each call), with the stream held by a spin kernel before each call so that the host's launch latency
(large for autograd's backward) is not counted as device time. Throughput is reported against the device-to-device copy
bandwidth measured in the same run, peak memory over one call minus what was allocated before it.
Importing this module touches no GPU.
"""
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("fwd", "bwd", "full")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---- availability

def import_liger_aot():
    """``liger_aot`` as installed, else from this checkout's ``python/`` (an in-place build)."""
    if importlib.util.find_spec("liger_aot") is None:
        sys.path.insert(0, os.path.join(REPO, "python"))
    return importlib.import_module("liger_aot")


def liger_aot_path() -> Optional[str]:
    """The directory to put on PYTHONPATH so a fresh interpreter imports the same ``liger_aot``."""
    spec = importlib.util.find_spec("liger_aot")
    return os.path.dirname(os.path.dirname(spec.origin)) if spec is not None and spec.origin else None


def optional(load: Callable[[], object], what: str, notes: List[str]):
    """``load()``, or None with a note when it fails: a missing provider is skipped, never fatal."""
    try:
        return load()
    except Exception as e:  # an optional provider may fail to import for any reason (version skew, no Triton)
        notes.append(f"{what} skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ---- device timing

# GPU cycles the stream spins (torch.cuda._sleep) before each timed call: ~1 ms at H200 clocks, longer
# than the host needs to enqueue any provider's forward+backward, so the events time the kernels back to
# back and not the host's launch latency (autograd hands the backward to its device thread: tens of µs,
# and 0.2 ms was too short on a slow host: "bwd" alone then measured 4x its share of "fwd+bwd").
HOLD_CYCLES = 2_000_000


def _event_median_ms(fn, warmup: int, rep: int, grad_to_none=None) -> float:
    """``do_bench``'s method (estimate, warm up for ``warmup`` ms, time ``rep`` ms of calls, each after an L2
    flush, median of CUDA events) plus a hold kernel before each call so that only device time is timed."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(1, int(warmup / estimate))):
        fn()
    n = min(max(10, int(rep / estimate)), 1000)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        for t in grad_to_none or ():
            t.grad = None
        flush.zero_()
        torch.cuda._sleep(HOLD_CYCLES)
        starts[i].record()
        fn()
        ends[i].record()
        if i % 50 == 49:  # keep the host within a few calls of the device: the hold must cover each one
            ends[i].synchronize()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def time_ms(fn, warmup: int = 25, rep: int = 100, grad_to_none=None) -> float:
    """Median device time of ``fn()`` in ms (``warmup`` and ``rep`` in ms, as in ``do_bench``): L2 flushed
    and the stream held before each call, so launch latency on the host is not counted."""
    return _event_median_ms(fn, warmup, rep, grad_to_none)


def peak_mb(fn, grad_to_none=None) -> float:
    """Peak memory of one ``fn()`` call above what was allocated before it (inputs, retained graph), MiB."""
    for t in grad_to_none or ():
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_ceiling_gbps(nbytes: int = 2 << 30, warmup: int = 25, rep: int = 100) -> float:
    """Device-to-device copy of ``nbytes``: (bytes read + written) / median time, in GB/s (1e9)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=warmup, rep=rep)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / ms / 1e6


# ---- host timing

def host_us_per_call(fn, n: int = 2000, warmup: int = 200, rounds: int = 5) -> float:
    """Wall-clock µs per call of ``n`` back-to-back ``fn()`` under ``no_grad``, median over ``rounds``.

    Meant for tiny shapes, where each kernel takes less GPU time than its launch takes host time: the
    GPU never falls behind, so the loop measures the host side (dispatch, checks, launch).
    """
    per_call = []
    gc_was_enabled = gc.isenabled()
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        gc.collect()
        gc.disable()
        try:
            for _ in range(rounds):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                torch.cuda.synchronize()
                per_call.append((time.perf_counter() - t0) / n * 1e6)
        finally:
            if gc_was_enabled:
                gc.enable()
    return statistics.median(per_call)


# ---- cases, providers, the run loop

@dataclasses.dataclass
class Inputs:
    """One case's tensors: ``args`` go to every provider; ``leaves`` get gradients; ``grad_out`` is dy; ``ref``:
    whatever a bench's check needs computed before any provider runs (a provider may overwrite its inputs)."""
    args: tuple
    leaves: Sequence[torch.Tensor]
    grad_out: torch.Tensor
    ref: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Case:
    name: str
    make: Callable[[], Inputs]
    nbytes: Dict[str, int]  # mode -> bytes a memory-bound kernel must move


@dataclasses.dataclass
class Provider:
    name: str
    fn: Callable  # fn(*inputs.args) -> output
    compiled: bool = False  # a torch.compile'd fn: compiled during warm-up, outside every timed region
    modes: Optional[Sequence[str]] = None  # the modes it is timed in (None: all); e.g. a no-grad forward: ("fwd",)


def timed_callable(fwd: Callable[[], torch.Tensor], mode: str, grad_out: torch.Tensor) -> Callable[[], object]:
    """What ``mode`` times: the forward; the backward alone (forward run once here, graph retained); both."""
    if mode == "fwd":
        return fwd
    if mode == "bwd":
        y = fwd()
        return lambda: y.backward(grad_out, retain_graph=True)
    if mode == "full":
        return lambda: fwd().backward(grad_out)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


@dataclasses.dataclass
class Row:
    case: str
    mode: str
    provider: str
    ms: Optional[float]
    gbps: Optional[float]
    pct: Optional[float]
    peak_mb: Optional[float]


class Table:
    def __init__(self):
        self.rows: List[Row] = []

    def markdown(self) -> str:
        def f(v, spec):
            return "—" if v is None else format(v, spec)
        lines = ["| case | mode | provider | ms | GB/s | % of copy | peak MB |", "|---|---|---|--:|--:|--:|--:|"]
        for r in self.rows:
            lines.append(f"| {r.case} | {r.mode} | {r.provider} | {f(r.ms, '.4g')} | {f(r.gbps, '.0f')} | "
                         f"{f(r.pct, '.0f')} | {f(r.peak_mb, '.1f')} |")
        return "\n".join(lines)

    def pivot(self, mode: str) -> str:
        """ms of one mode, cases down, providers across: the view the design's anchor table uses."""
        providers = list(dict.fromkeys(r.provider for r in self.rows if r.mode == mode))
        cases = list(dict.fromkeys(r.case for r in self.rows if r.mode == mode))
        ms = {(r.case, r.provider): r.ms for r in self.rows if r.mode == mode}
        lines = [f"| {mode} ms | " + " | ".join(providers) + " |", "|---|" + "--:|" * len(providers)]
        for c in cases:
            cells = ["—" if ms.get((c, p)) is None else f"{ms[(c, p)]:.4g}" for p in providers]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


    def verdicts(self, copy_target: float = 85.0, ours: str = "liger_aot",
                 modes: Sequence[str] = ("fwd", "full"), fwd_ours: Optional[str] = None) -> str:
        """The issues' per-op checks, one line each: ``ours``' forward at the case that moves the most bytes against
        ``copy_target`` % of the copy bandwidth, then :meth:`fastest` for each of ``modes``. ``fwd_ours`` names
        the row that stands for our forward where ``ours``' forward does more than the others' (a training forward
        that also writes the gradient: then ``fwd_ours`` is the same op without gradients)."""
        lines = []
        fwd_name = fwd_ours or ours
        fwd = [r for r in self.rows if r.provider == fwd_name and r.mode == "fwd" and r.ms is not None and r.gbps
               and r.pct is not None]
        if fwd:
            large = max(fwd, key=lambda r: r.gbps * r.ms)  # bytes moved
            ok = large.pct >= copy_target
            lines.append(f"{fwd_name} fwd at the largest case {large.case}: {large.pct:.0f} % of copy "
                         f"(target >= {copy_target:.0f} %: {'met' if ok else 'MISSED'})")
        lines += [self.fastest(m, fwd_name if m == "fwd" else ours) for m in modes]
        return "Targets:\n\n" + "\n".join(f"- {line}" for line in lines)

    def fastest(self, mode: str, ours: str = "liger_aot") -> str:
        """One line: at how many cases ``ours`` beats the best other provider in ``mode``, and where it does not
        (our other variants, named "<ours's library>, ...", are not others)."""
        ms = {}
        for r in self.rows:
            if r.mode == mode and r.ms is not None:
                ms.setdefault(r.case, {})[r.provider] = r.ms
        lib = ours.split(",")[0]
        won, lost = 0, []
        for case, by in ms.items():
            others = {p: v for p, v in by.items() if p != ours and p != lib and not p.startswith(lib + ",")}
            if ours not in by or not others:
                continue
            best = min(others, key=others.get)
            if by[ours] < others[best]:
                won += 1
            else:
                lost.append(f"{case} ({by[ours]:.4g} ms vs {best} {others[best]:.4g})")
        verdict = "met" if won and not lost else "MISSED"
        return (f"{ours} faster than the best other provider ({mode}) at {won}/{won + len(lost)} cases ({verdict})"
                + (": slower at " + ", ".join(lost) if lost else ""))


def run(cases: Sequence[Case], providers: Sequence[Provider], modes: Sequence[str], ceiling_gbps: float,
        notes: List[str], check: Optional[Callable[[Inputs, torch.Tensor], Optional[str]]] = None,
        warmup: int = 25, rep: int = 100) -> Table:
    """Times every provider on every case in every mode. ``check(inputs, y)`` sees each provider's forward
    output once per case and returns a note when it is wrong (a sanity check; tests/ test numerics)."""
    table = Table()
    for case in cases:
        inputs = case.make()
        for mode in modes:
            for p in providers:
                if p.modes is not None and mode not in p.modes:
                    continue
                fwd = (lambda fn=p.fn: fn(*inputs.args))
                # a fresh dy per measurement: Liger-Kernel (in_place=True) overwrites dy with dx
                grad_out = inputs.grad_out.clone()
                grads = list(inputs.leaves) if mode != "fwd" else None
                fn = None
                try:
                    if mode == modes[0] and check is not None:
                        if (msg := check(inputs, fwd().detach())) is not None:
                            notes.append(f"{case.name} {p.name}: {msg}")
                    # warm-up outside the timed region: loads modules, JIT-compiles, torch.compile traces fwd+bwd
                    for _ in range(2 if p.compiled else 1):
                        y = fwd()
                        if y.requires_grad:
                            y.backward(grad_out.clone())
                        y = None
                    for t in inputs.leaves:
                        t.grad = None
                    fn = timed_callable(fwd, mode, grad_out)
                    mem = peak_mb(fn, grads)
                    ms = time_ms(fn, warmup=warmup, rep=rep, grad_to_none=grads)
                except Exception as e:  # one failing provider must not lose the rest of the run
                    notes.append(f"{case.name} {mode} {p.name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
                    table.rows.append(Row(case.name, mode, p.name, None, None, None, None))
                    print(f"  {case.name:>12} {mode:>4} {p.name:<22} failed: {type(e).__name__}", flush=True)
                    continue
                finally:
                    fn = fwd = grad_out = None  # drops a retained graph before the next measurement
                    for t in inputs.leaves:
                        t.grad = None
                gbps = case.nbytes[mode] / ms / 1e6
                table.rows.append(Row(case.name, mode, p.name, ms, gbps, 100 * gbps / ceiling_gbps, mem))
                print(f"  {case.name:>12} {mode:>4} {p.name:<22} {ms:8.4f} ms {gbps:6.0f} GB/s {mem:8.1f} MB",
                      flush=True)
        inputs = None
        torch.cuda.empty_cache()
    return table


# ---- reporting

def gpu_slug(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"h200"``: the results file name."""
    name = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I).lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def default_results_path() -> str:
    return os.path.join(REPO, "benchmarks", "results", gpu_slug(torch.cuda.get_device_name()) + ".md")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout.strip()


def git_commit() -> str:
    # The GPU box receives the tree without .git: the caller passes the commit in LIGER_BENCH_COMMIT.
    if os.environ.get("LIGER_BENCH_COMMIT"):
        return os.environ["LIGER_BENCH_COMMIT"]
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_header(title: str) -> str:
    """Markdown header of one recorded run: what ran, on what, with which versions, when."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    if "liger_aot" in sys.modules:
        la = sys.modules["liger_aot"]
        info = la.build_info()
        liger_aot = (f"{la.__version__} (archs {', '.join(info['archs'])}, cubins from triton {info['triton_version']}; "
                     f"{os.path.dirname(la.__file__)})")
    else:
        liger_aot = "not loaded"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"## {title} — {props.name} — {now}",
        "",
        f"- commit `{git_commit()}`; command `{' '.join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv)}`",
        f"- GPU {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
        f"{props.total_memory / 2**30:.0f} GiB; torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"triton {triton_version}",
        f"- liger_aot {liger_aot}; liger-kernel {package_version('liger-kernel')}",
    ])


def report(header: str, sections: List[str], notes: List[str], results: Optional[str]) -> None:
    """Prints the sections (and the notes) and, when ``results`` is not None, appends header + body to that
    markdown file ("": benchmarks/results/<gpu>.md): the common ending of every benchmark."""
    if notes:
        sections = list(sections) + ["Notes:\n\n" + "\n".join(f"- {n}" for n in notes)]
    body = "\n\n".join(sections)
    print("\n" + body)
    if results is not None:
        path = results or default_results_path()
        append_results(path, header + "\n\n" + body)
        print(f"\nappended to {path}")


def append_results(path: str, markdown: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(markdown.rstrip() + "\n\n")
