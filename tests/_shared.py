"""Helpers shared by the test files."""
import pytest
import torch


class MaxError:
    """Running maxima of |op - float64| and |eager - float64| for one output, and of the magnitude the floor scales
    with. check() asserts FlashAttention's rule: the op's error <= 2 x eager's error at the same precision + floor_ulps
    ulps (of dtype) of that magnitude + slack (what a different summation order may round differently by).

    floor_ulps: an int, or a dict by dtype (2 for the dtypes it does not name). finite_eager: where the baseline is
    not finite (fp16 autograd overflowing at tiny |x|) it sets no bound; False takes its error as it is. add's scale
    is the magnitude (default: ref's).
    """

    def __init__(self, name, dtype, floor_ulps, finite_eager=True):
        self.name, self.dtype, self.finite_eager = name, dtype, finite_eager
        self.floor_ulps = floor_ulps.get(dtype, 2) if isinstance(floor_ulps, dict) else floor_ulps
        self.op = self.eager = self.scale = self.slack = 0.0

    @torch.no_grad()
    def add(self, op, eager_value, ref, scale=None):
        if ref.numel() == 0:
            return
        self.op = max(self.op, (op.double() - ref).abs().max().item())
        eager_error = (eager_value.double() - ref).abs()
        if self.finite_eager:
            eager_error = torch.where(eager_error.isfinite(), eager_error, 0)
        self.eager = max(self.eager, eager_error.max().item())
        self.scale = max(self.scale, (ref if scale is None else scale).abs().max().item())

    def check(self, what=""):
        bound = 2 * self.eager + self.floor_ulps * torch.finfo(self.dtype).eps * self.scale + self.slack
        assert self.op <= bound, (f"{what}{self.name}: max |op - float64| = {self.op:.3g} exceeds {bound:.3g} "
                                  f"(eager {dtype_id(self.dtype)} error {self.eager:.3g}, "
                                  f"magnitude {self.scale:.3g})")


def dtype_id(dtype):
    """A dtype as a test id: "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def opcheck_params(samples):
    """pytest params (device, index) for each of samples(device)'s cases: on CPU, and on CUDA marked `gpu`.

    samples(device) returns (op name, args, needs grad) tuples; the ids name the op and whether it differentiates.
    """
    params = []
    for device, marks in (("cpu", []), ("cuda", [pytest.mark.gpu])):
        for i, (name, _, grad) in enumerate(samples("cpu")):
            params.append(pytest.param(device, i, marks=marks, id=f"{device}-{i}-{name}" + ("-grad" if grad else "")))
    return params


def compile_params(cpu_inductor=False):
    """(device, backend, dynamic) for the torch.compile tests: aot_eager on CPU (static and dynamic shapes),
    inductor on CUDA (marked `gpu`); cpu_inductor adds inductor on CPU, marked `slow` (its C++ compiles take tens
    of seconds)."""
    params = [pytest.param("cpu", "aot_eager", False), pytest.param("cpu", "aot_eager", True)]
    if cpu_inductor:
        params.append(pytest.param("cpu", "inductor", None, marks=pytest.mark.slow))
    return params + [pytest.param("cuda", "inductor", None, marks=pytest.mark.gpu)]


def check_compile_fullgraph(f, cases, backend, dynamic, compare=None):
    """f against torch.compile(f, fullgraph=True, backend=backend, dynamic=dynamic): on every case their outputs and
    the gradients of the differentiated inputs must agree (bitwise, or as compare(a, b) asserts), and dynamo must
    break no graph.

    cases: (args, grad_of, dys) triples. f is called on args, with the args at the indices in grad_of cloned and
    requiring grad; it returns a tensor or a tuple of tensors, backpropagated with dys (a tensor or a tuple; None
    for a scalar loss). The test's f scales by powers of 2 where it must stay exact.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(f, fullgraph=True, backend=backend, dynamic=dynamic)
    for args, grad_of, dys in cases:
        results = []
        for fn in (f, compiled):
            inputs = [a.clone().requires_grad_() if i in grad_of else a for i, a in enumerate(args)]
            out = fn(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            torch.autograd.backward(outs, dys if dys is None or isinstance(dys, tuple) else (dys,))
            results.append([o.detach() for o in outs] + [inputs[i].grad for i in grad_of])
        for a, b in zip(*results):
            if compare is None:
                assert torch.equal(a, b)
            else:
                compare(a, b)
    assert not counters["graph_break"], dict(counters["graph_break"])


def check_cuda_graph(step, inputs, expected, fresh=None, check=None, replays=3, compare=None):
    """step() (the op's forward and backward on `inputs`) captured in a CUDA graph, after three warm-up calls on a
    side stream (the first call loads the modules, which capture must not), then replayed `replays` times: each
    time `inputs` are filled in place with new values (fresh(), one per input; default: randn_like of each), and
    the replay's outputs must equal expected(*new), the eager op on the same values, bitwise (or as
    compare(got, want) asserts: cuBLAS may pick other kernels under capture). check(outputs, *new) may test them
    further (e.g. against the float64 reference)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()
    for _ in range(replays):
        new = fresh() if fresh is not None else [torch.randn_like(t) for t in inputs]
        with torch.no_grad():
            for t, n in zip(inputs, new):
                t.copy_(n)
        graph.replay()
        torch.cuda.synchronize()
        want = expected(*new)
        assert len(static_out) == len(want)
        for i, (got, w) in enumerate(zip(static_out, want)):
            if compare is None:
                assert torch.equal(got, w), f"output {i} of the graph's replay differs from the eager op"
            else:
                compare(got, w)
        if check is not None:
            check(static_out, *new)


def poison_freed_blocks(*specs, copies=4):
    """Fills free blocks of the CUDA caching allocator with NaN: for each (size, dtype) in specs (size: a number of
    elements or a shape), `copies` NaN tensors are made and freed. The allocator serves a request from the smallest
    free block that fits, on the same stream, so the op's next outputs take those very blocks and start as NaN
    wherever a kernel fails to write them."""
    blocks = [torch.full((size,) if isinstance(size, int) else size, float("nan"), dtype=dt, device="cuda")
              for size, dt in specs for _ in range(copies)]
    del blocks


def run_memcheck(script_text, tmp_path, timeout=600):
    """Runs ``script_text`` (a Python program that prints "sanitizer script ok" at its end) under
    compute-sanitizer memcheck and asserts that it reports no error; skips where compute-sanitizer is missing."""
    import os
    import shutil
    import subprocess
    import sys

    sanitizer = shutil.which("compute-sanitizer")
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        candidate = os.path.join(root, "bin", "compute-sanitizer") if root else None
        if not sanitizer and candidate and os.path.exists(candidate):
            sanitizer = candidate
    if sanitizer is None:
        pytest.skip("compute-sanitizer not found on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin")
    script = tmp_path / "sanitize.py"
    script.write_text(script_text)
    # Without the caching allocator every tensor is its own allocation, so an out-of-bounds access is caught
    # instead of landing in a neighbouring block of the same pool.
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    # --report-api-errors no: benign failed CUDA API probes inside torch are not memory errors; the op's own
    # API failures raise (check_cu) and fail the script.
    command = [sanitizer, "--tool", "memcheck", "--error-exitcode", "1", "--report-api-errors", "no",
               sys.executable, str(script)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "ERROR SUMMARY: 0 errors" in out and "sanitizer script ok" in out, out[-5000:]


def run_checked(cmd, timeout, **kwargs):
    """Runs ``cmd`` (items converted with str), stdout and stderr together; fails the test with the output's tail
    when it exits non-zero, else returns the output."""
    import subprocess

    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc.stdout
