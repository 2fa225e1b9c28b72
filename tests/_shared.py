"""Helpers shared by the test files."""
import pytest


def opcheck_params(samples):
    """pytest params (device, index) for each of samples(device)'s cases: on CPU, and on CUDA marked `gpu`.

    samples(device) returns (op name, args, needs grad) tuples; the ids name the op and whether it differentiates.
    """
    params = []
    for device, marks in (("cpu", []), ("cuda", [pytest.mark.gpu])):
        for i, (name, _, grad) in enumerate(samples("cpu")):
            params.append(pytest.param(device, i, marks=marks, id=f"{device}-{i}-{name}" + ("-grad" if grad else "")))
    return params


def compile_params():
    """(device, backend, dynamic) for the torch.compile tests: aot_eager on CPU (static and dynamic shapes),
    inductor on CUDA (marked `gpu`)."""
    return [pytest.param("cpu", "aot_eager", False), pytest.param("cpu", "aot_eager", True),
            pytest.param("cuda", "inductor", None, marks=pytest.mark.gpu)]


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
