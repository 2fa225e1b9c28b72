"""What the built package holds: build info, cubin tables (every arch, every key), import without Triton,
and a clear error when the installed torch is not the one the library was built against."""
import collections
import subprocess
import sys
import textwrap

import pytest
import torch

import liger_aot

liger = torch.ops.liger


def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_build_info():
    info = liger_aot.build_info()
    for key in ("archs", "kernels", "triton_version", "torch_version", "ptxas_version", "version"):
        assert key in info, key
    assert info["archs"] and all(a.startswith("sm_") for a in info["archs"])
    assert info["kernels"] and all(count > 0 for count in info["kernels"].values()), info["kernels"]
    assert info["triton_version"] and info["ptxas_version"]
    assert info["version"] == liger_aot.__version__
    # The library refuses to load under another torch minor (see below), so this one must match.
    assert torch.__version__.split("+")[0].split(".")[:2] == info["torch_version"].split("+")[0].split(".")[:2]


def test_no_variant_the_launchers_request_is_missing():
    assert liger._missing_variants() == []


def test_every_build_info_arch_is_built():
    built = set(liger._built_archs())
    assert set(liger_aot.build_info()["archs"]) <= built


def parsed_variants():
    """_kernel_variants() as (kernel, key, arch) triples; entries read 'op kernel[key] arch'."""
    out = []
    for entry in liger._kernel_variants():
        op, variant, arch = entry.split(" ")
        kernel, key = variant.split("[", 1)
        out.append((kernel, key, arch))
    return out


def test_cubin_tables_cover_every_arch_with_every_key():
    info = liger_aot.build_info()
    variants = parsed_variants()
    assert len(set(variants)) == len(variants), "duplicate variants"
    keys = collections.defaultdict(set)
    for kernel, key, arch in variants:
        keys[kernel, arch].add(key)
    specific = info.get("arch_specific", {})
    for kernel, count in info["kernels"].items():
        only = specific.get(kernel, {})  # key label -> the archs it was built for (tuned for one arch)
        per_arch = [keys[kernel, arch] for arch in info["archs"]]
        assert sum(len(k) for k in per_arch) == count, f"{kernel}: build_info says {count} variants"
        every_key_arch_specific = bool(only) and all(
            k.rstrip("]") in only for held in per_arch for k in held)
        for arch, held in zip(info["archs"], per_arch):
            # a kernel built for some archs only (the Hopper Gluon forward) has no variant elsewhere
            assert held or (every_key_arch_specific and not any(arch in b for b in only.values())), \
                f"{kernel}: {arch} has no variant"
            assert ({k.rstrip("]") for k in held if k.rstrip("]") in only}
                    == {label for label, built in only.items() if arch in built}), f"{kernel}: {arch}"
        common = [{k for k in held if k.rstrip("]") not in only} for held in per_arch]
        assert all(k == common[0] for k in common), f"{kernel}: archs hold different common variants"
    assert {kernel for kernel, _, _ in variants} == set(info["kernels"])


def test_import_without_triton():
    done = run_python("""
        import sys
        sys.modules["triton"] = None  # any `import triton` now raises ImportError
        import torch
        import liger_aot
        x, w = torch.randn(3, 16), torch.randn(16)
        y = liger_aot.ops.rms_norm(x, w)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert sys.modules["triton"] is None
        print("ok")
    """)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


def test_import_under_another_torch_names_the_needed_version():
    needed = liger_aot.build_info()["torch_minor"]
    done = run_python("""
        import torch
        torch.__version__ = "9.9.0"
        try:
            import liger_aot
        except ImportError as e:
            print("ImportError:", e)
        else:
            print("imported")
    """)
    assert done.returncode == 0, done.stderr
    assert "ImportError:" in done.stdout, done.stdout
    assert f"needs torch {needed}" in done.stdout and "9.9.0" in done.stdout, done.stdout


@pytest.mark.gpu
def test_current_gpu_arch_is_built():
    major, minor = torch.cuda.get_device_capability()
    built = liger._built_archs()
    assert any(a.rstrip("a") == f"sm_{major}{minor}" for a in built) or (major == 8 and "sm_80" in built), built


@pytest.mark.skipif(sys.platform != "linux", reason="ELF dynamic section")
def test_libstdcxx_is_the_shared_one():
    # A toolchain that links libstdc++ statically (the H200 box's) gave the extension its own iostreams: every
    # error message with a number in it then crashed the process. setup.py links the shared library.
    import shutil

    from liger_aot._library import library_path
    if shutil.which("readelf") is None:
        pytest.skip("readelf not installed")
    dynamic = subprocess.run(["readelf", "-d", library_path()], capture_output=True, text=True, check=True).stdout
    assert "libstdc++.so" in dynamic
    with pytest.raises(RuntimeError, match=r"q_order must be empty or a permutation of the 4 dims"):
        g = torch.randn(2, 4, 5, 16)
        torch.ops.liger.rope_bwd(g, torch.randn(2, 2, 5, 16), torch.randn(1, 5, 16), torch.randn(1, 5, 16), 1,
                                 [0, 1, 1, 3], [])
