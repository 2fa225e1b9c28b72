"""The libtorch (C++) build: CMakeLists.txt builds libliger_aot and examples/cpp/liger_rms_norm_demo, which
runs a TorchScript module calling torch.ops.liger.rms_norm, forward and backward; its output must equal
what Python computes with the same module on the same input.

Runs on the CPU (the CPU kernels are registered by the same library). Builds for one arch only (9.0) and
reuses the cubin cache of the wheel build (<repo>/build/cubin_cache, or $LIGER_CUBIN_CACHE), so the build
is mostly the C++ compile: about a minute on two cores.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import liger_aot
from _shared import run_checked  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cpp"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CMake build targets Linux (GNU ld flags)"),
]


def _load_make_model():
    spec = importlib.util.spec_from_file_location("liger_example_make_model", EXAMPLE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Configures and builds the CMake project with the example; returns the demo binary's path."""
    cmake = shutil.which("cmake")
    ninja = shutil.which("ninja")
    if cmake is None:
        pytest.skip("cmake is not on PATH (needed to build the C++ example)")
    if ninja is None:
        pytest.skip("ninja is not on PATH (needed to build the C++ example)")
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not importable: the CMake build compiles the kernels with it")
    build = tmp_path_factory.mktemp("cmake_build")
    env = dict(os.environ)
    env.setdefault("LIGER_CUBIN_CACHE", str(ROOT / "build" / "cubin_cache"))
    run_checked([cmake, "-S", ROOT, "-B", build, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
          f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DPython3_EXECUTABLE={sys.executable}",
          "-DLIGER_BUILD_EXAMPLES=ON", "-DLIGER_CUDA_ARCHS=9.0"], timeout=600, env=env)
    jobs = max(1, min(os.cpu_count() or 1, 8))
    run_checked([cmake, "--build", build, "-j", str(jobs)], timeout=3600, env=env)
    binary = build / "examples" / "cpp" / "liger_rms_norm_demo"
    assert binary.is_file(), f"{binary} was not built"
    return binary


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Runs make_model.py, as a user would, with the liger_aot this test imported."""
    out = tmp_path_factory.mktemp("cpp_model")
    env = dict(os.environ)
    package_parent = str(Path(liger_aot.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_parent, env.get("PYTHONPATH", "")] if p)
    run_checked([sys.executable, EXAMPLE / "make_model.py", "--model", out / "model.pt", "--input", out / "input.pt"],
         timeout=300, env=env)
    return out / "model.pt", out / "input.pt"


def parse_demo_output(text):
    ys, stats = {}, {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "y":
            ys[int(parts[1])] = float(parts[2])
        elif len(parts) == 2 and parts[0] != "y.numel":
            stats[parts[0]] = float(parts[1]) if parts[1] != "undefined" else None
        elif len(parts) == 2:
            stats["y.numel"] = int(parts[1])
    assert ys and sorted(ys) == list(range(len(ys))), f"no or partial 'y <i> <value>' lines in:\n{text}"
    assert stats.get("y.numel") == len(ys)
    y = torch.tensor([ys[i] for i in range(len(ys))], dtype=torch.float32)  # %.9g reads back exactly
    return y, stats


def python_reference(model_path, x):
    """What the C++ program computes, in Python, with the same saved module."""
    model = torch.jit.load(str(model_path))
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    loss = (y.float() * y.float()).sum()
    loss.backward()
    stats = {"loss": loss.item()}
    for name, g in (("x.grad", x.grad), ("weight.grad", model.weight.grad)):
        d = g.detach().double()
        stats[f"{name}.sum"] = d.sum().item()
        stats[f"{name}.abs_sum"] = d.abs().sum().item()
        stats[f"{name}.max_abs"] = d.abs().max().item()
    return y.detach().reshape(-1), stats


def check_same(cpp_text, model_path, x):
    y_cpp, stats_cpp = parse_demo_output(cpp_text)
    y_py, stats_py = python_reference(model_path, x)
    assert y_cpp.numel() == y_py.numel() == x.numel()
    torch.testing.assert_close(y_cpp, y_py, rtol=0, atol=1e-6)
    for name, value in stats_py.items():
        assert stats_cpp.get(name) is not None, f"{name} missing from the C++ output:\n{cpp_text}"
        assert stats_cpp[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name


def test_cpp_demo_matches_python_on_saved_input(demo, model_files):
    model_path, input_path = model_files
    out = run_checked([demo, model_path, input_path], timeout=120)
    assert "device cpu" in out.splitlines()[0]
    check_same(out, model_path, torch.load(str(input_path)))


def test_cpp_demo_matches_python_on_builtin_input(demo, model_files):
    model_path, _ = model_files
    out = run_checked([demo, model_path], timeout=120)
    check_same(out, model_path, _load_make_model().demo_input())


def test_cpp_demo_reports_bad_model_path(demo, tmp_path):
    proc = subprocess.run([str(demo), str(tmp_path / "missing.pt")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1
    assert "liger_rms_norm_demo:" in proc.stderr
