"""Builds liger_aot: AOT-compiles the Triton kernels to cubins (build_tools/generate.py), then the C++
library that registers them as torch.ops.liger.* (one cp39-abi3 wheel per torch minor version)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = Path(__file__).resolve().parent
GEN = Path(os.environ.get("LIGER_BUILD_DIR", ROOT / "build")).resolve() / "gen"
VERSION = "0.1.0"
TORCH_MINOR = ".".join(torch.__version__.split("+")[0].split(".")[:2])


def triton_include() -> str:
    import triton  # build-time only: the cubins and cuda.h come from the pinned Triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "include")


def sources() -> list:
    ops = sorted(p.stem for p in (ROOT / "triton_src").glob("*.py") if not p.stem.startswith("_"))
    # csrc/python holds the Python-only bindings of liger_aot._fast (not part of the operator library)
    own = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp") if "python" not in p.parts)
    return own + [str(GEN / "archs.cpp")] + [str(GEN / f"{op}_kernels.cpp") for op in ops]


class GenerateThenBuild(BuildExtension):
    def run(self):
        subprocess.check_call([sys.executable, "-m", "build_tools.generate", "--out", str(GEN)], cwd=ROOT)
        info = json.loads((GEN / "build_info.json").read_text())
        info.update({"version": VERSION, "torch_version": torch.__version__, "torch_minor": TORCH_MINOR})
        text = json.dumps(info, indent=2, sort_keys=True) + "\n"
        for pkg_dir in {ROOT / "python" / "liger_aot", Path(self.build_lib) / "liger_aot"}:
            pkg_dir.mkdir(parents=True, exist_ok=True)
            (pkg_dir / "_build_info.json").write_text(text)
        super().run()


# libstdc++ is linked as the shared library torch itself uses. A toolchain that links it statically by
# default (the H200 box's /opt/gcc wrapper does) gives the extension a second copy of the iostream and locale
# machinery: formatting an error message (c10::str of a number) then crashes on facets registered by the
# other copy, so every bad-input error became a segfault on that box.
SHARED_LIBSTDCXX = ["-Wl,--push-state,--no-as-needed,-l:libstdc++.so.6,--pop-state"]

setup(
    name="liger-aot",
    version=VERSION,
    description="Fused LLM training and inference kernels, Triton compiled ahead of time, as torch.ops.liger.*",
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"liger_aot": ["_build_info.json"]},
    ext_modules=[
        CppExtension(
            "liger_aot._C",
            sources(),
            include_dirs=[str(ROOT / "csrc"), str(GEN), triton_include()],
            extra_compile_args={"cxx": ["-O2", "-fvisibility=hidden", "-Wno-unused-function"]},
            extra_link_args=SHARED_LIBSTDCXX,
            py_limited_api=True,
        ),
        # Direct Python bindings of the hottest ops (host time); links libtorch_python for the Tensor
        # wrapper but uses only the limited Python API itself.
        CppExtension(
            "liger_aot._fast",
            ["csrc/python/fast.cpp"],
            libraries=["torch_python"],
            extra_compile_args={"cxx": ["-O2", "-fvisibility=hidden"]},
            extra_link_args=SHARED_LIBSTDCXX,
            py_limited_api=True,
        ),
    ],
    cmdclass={"build_ext": GenerateThenBuild},
    install_requires=[f"torch=={TORCH_MINOR}.*"],
    python_requires=">=3.9",
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
